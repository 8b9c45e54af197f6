//! `POST /webhooks/pipedrive` after its credentials: a v2 delivery, and the trigger (or echo)
//! and dedupe key the route makes of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::TenantId;
use shared::crm::pipedrive::mapping::Slots;
use shared::crm::pipedrive::webhook::PipedriveWebhook;

fuzz_target!(|data: &[u8]| {
    let Ok(hook) = PipedriveWebhook::parse(data) else {
        return;
    };
    let _ = hook.company_id();
    let _ = hook.dedupe_key();
    let slots = Slots {
        pronouns: Some("a1b2"),
        job_title: Some("job_title"),
    };
    let tenant = TenantId::new("fuzz");
    let _ = hook.trigger(&tenant, slots, Some(7));
    let _ = hook.trigger(&tenant, slots, None);
});
