//! contact-sync's library: the domain, the pure sync engine, the ports and their adapters, and
//! the HTTP routes shared by the Lambda functions and the local runner.

pub mod adapters;
pub mod crm;
pub mod deadline;
#[cfg(feature = "aws")]
pub mod deploy;
pub mod domain;
pub mod engine;
pub mod error;
pub mod http;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod logging;
pub mod metrics;
pub mod outcomes;
pub mod ports;
pub mod provision;
pub mod settings;
pub mod signature;
pub mod sync;
pub mod tenant;
pub mod timing;
pub mod whole;

pub use domain::*;
