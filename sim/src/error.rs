//! The crate's one error type: each layer's errors, plus the few that belong
//! to no layer. The CLI renders it in one place.

use crate::images::build::ImageError;
use crate::runtime::RuntimeError;
use crate::stack::StackError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot read stack file {file}: {source}\n  help: check the path, or leave out --stack to use the built-in production stack")]
    ReadStack { file: String, source: std::io::Error },
    #[error("{message}\n  help: {help}")]
    Usage { message: String, help: String },
    #[error("run state {path}: {source}")]
    State { path: String, source: std::io::Error },
    #[error("interrupted; everything this run started has been removed")]
    Interrupted,
}

impl Error {
    pub fn usage(message: impl Into<String>, help: impl Into<String>) -> Error {
        Error::Usage { message: message.into(), help: help.into() }
    }

    /// Bad input (exit 2) as opposed to a failure while running (exit 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::Stack(_) | Error::ReadStack { .. } | Error::Usage { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
