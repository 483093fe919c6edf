//! The stack model: VPC, AZs, subnets and service placement as plain values,
//! parsed and validated from a stack file. **No I/O here**: callers hand in the
//! file's text, so every rule is testable as data.

pub mod cidr;
pub mod edge;
pub mod footprint;
pub mod kubernetes;
pub mod model;
pub mod nlb;
pub mod parse;

pub use cidr::{Cidr, CidrError};
pub use edge::{Alb, HealthCheck, RateLimit, Route53};
pub use kubernetes::{Kubernetes, NodeGroup, Taint, TaintEffect};
pub use model::{Az, Instance, Rds, Service, ServiceKind, Stack, Tier};
pub use nlb::Nlb;
pub use parse::{parse_stack, Problem, StackError};
