//! `POST /webhooks/app` after its signature: the event batch, read and validated.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shared::http::webhooks::app::parse_batch(data);
});
