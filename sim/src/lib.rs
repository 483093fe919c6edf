//! voyager-sim: a local, production-shaped simulator of the Voyager platform's
//! infrastructure.
//!
//! Layout, each layer using only those below it:
//!
//! - `harness`: the library API ([`Sim`], [`RunningStack`]) and the
//!   operations behind the CLI's `up`, `status`, `env` and `down`.
//! - `services`: one module per service: container spec, readiness probe,
//!   typed endpoint, `env` lines.
//! - `runtime`: everything that touches Docker or the host firewall; sweeping
//!   by label.
//! - `images`: the offline and upstream image sets and the offline builder.
//! - `stack`: the stack file's model, parser and validator (no I/O).
//! - `spec`, `state`, `progress`, `error`: plain data and the error type.

pub mod companion;
pub mod control;
pub mod dns;
pub mod error;
pub mod fault;
pub mod fixtures;
pub mod harness;
pub mod http;
pub mod images;
pub mod ledger;
pub mod load;
pub mod progress;
pub mod report;
pub mod runner;
pub mod runtime;
pub mod scenario;
pub mod services;
pub mod spec;
pub mod stack;
pub mod state;

pub use error::{Error, Result};
pub use harness::{RunningStack, Sim};
pub use images::{ImageSet, ImageSource};
pub use progress::Progress;
pub use services::postgres::PostgresEndpoint;
pub use stack::{ServiceKind, Stack, Tier};
