//! Adapters of the store and queue ports.

#[cfg(feature = "aws")]
pub mod aws;
pub mod embedded;
