//! Where long steps report what they are doing. The library never prints: the
//! CLI hands in a sink that writes to the terminal, tests and library users
//! get silence unless `VOYAGER_SIM_LOG` is set.

use std::sync::Arc;

#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(&str) + Send + Sync>);

impl Progress {
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(f))
    }

    pub fn silent() -> Progress {
        Progress::new(|_| {})
    }

    /// Silent, or to stderr when `VOYAGER_SIM_LOG` is set: the default for
    /// library users, who can turn it on without code changes.
    pub fn from_env() -> Progress {
        if std::env::var_os("VOYAGER_SIM_LOG").is_some() {
            Progress::stderr()
        } else {
            Progress::silent()
        }
    }

    pub fn stderr() -> Progress {
        Progress::new(|m| eprintln!("voyager-sim: {m}"))
    }

    pub fn say(&self, msg: &str) {
        (self.0)(msg)
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}
