//! CRM adapters of the [`CrmClient`](crate::ports::CrmClient) port.

pub mod hubspot;
pub mod memory;
pub mod pacer;
pub mod pipedrive;
