//! CRM adapters of the [`CrmClient`](crate::ports::CrmClient) port.

pub mod memory;
