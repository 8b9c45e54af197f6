//! The signature checks on outside input: HubSpot v1/v2/v3 (headers, URL, timestamp), the
//! app's HMAC, and HTTP Basic auth (Pipedrive). The input is split at NUL bytes into the parts
//! a request carries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::signature::{
    HubSpotSignatureHeaders, basic_auth_login, verify_app_webhook, verify_basic_auth,
    verify_hubspot,
};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let mut next = || std::str::from_utf8(parts.next().unwrap_or_default()).ok();
    let (sig, version, v3, ts, uri, auth) = (next(), next(), next(), next(), next(), next());
    let body = data;
    let headers = HubSpotSignatureHeaders {
        signature: sig,
        version,
        signature_v3: v3,
        timestamp: ts,
    };
    let _ = verify_hubspot(
        "fuzz-secret",
        &headers,
        "POST",
        uri.unwrap_or("https://example.com/webhooks/hubspot"),
        body,
        1_767_600_000_000,
    );
    let _ = verify_app_webhook("fuzz-secret", sig, body);
    if let Some(a) = auth {
        let _ = basic_auth_login(a);
    }
    let _ = verify_basic_auth(auth, "user", "password");
});
