//! `POST /webhooks/hubspot` after its signature: the batch's portal, then its events, each as
//! the trigger, dedupe key and own-write test the route makes of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::TenantId;
use shared::crm::hubspot::webhook::HubSpotBatch;

fuzz_target!(|data: &[u8]| {
    let Some((_portal, items)) = shared::http::webhooks::hubspot::portal_of(data) else {
        return;
    };
    let Ok(HubSpotBatch(events)) = serde_json::from_value(serde_json::Value::Array(items)) else {
        return;
    };
    let tenant = TenantId::new("fuzz");
    for e in &events {
        let _ = e.to_change(&tenant);
        let _ = e.dedupe_key();
        let _ = e.is_own_write(Some(42));
    }
});
