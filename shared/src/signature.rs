//! Webhook signatures: HubSpot v1/v2/v3 and our app webhook (hex HMAC-SHA256). Comparisons are
//! constant-time.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// HubSpot rejects v3 signatures older than five minutes.
pub const HUBSPOT_MAX_AGE_MS: i64 = 300_000;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature header missing")]
    Missing,
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp missing or malformed")]
    BadTimestamp,
    #[error("timestamp outside the accepted window")]
    Stale,
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// v1: lowercase hex SHA-256 of `secret + body`.
pub fn hubspot_v1(secret: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

/// v2: lowercase hex SHA-256 of `secret + method + uri + body`.
pub fn hubspot_v2(secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(method.as_bytes());
    h.update(uri.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

/// Decodes the twelve escapes HubSpot's v3 algorithm lists; every other escape stays as is.
pub fn hubspot_v3_decode_uri(uri: &str) -> String {
    const TABLE: [(&str, char); 12] = [
        ("%3A", ':'),
        ("%2F", '/'),
        ("%3F", '?'),
        ("%40", '@'),
        ("%21", '!'),
        ("%24", '$'),
        ("%27", '\''),
        ("%28", '('),
        ("%29", ')'),
        ("%2A", '*'),
        ("%2C", ','),
        ("%3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let candidate = rest.get(pos..pos + 3).unwrap_or("");
        match TABLE
            .iter()
            .find(|(enc, _)| enc.eq_ignore_ascii_case(candidate))
        {
            Some((_, c)) => {
                out.push(*c);
                rest = &rest[pos + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// v3: base64 HMAC-SHA256 (key: client secret) of `method + decoded uri + body + timestamp`.
pub fn hubspot_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(method.as_bytes());
    mac.update(hubspot_v3_decode_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The signature headers of a HubSpot webhook request.
#[derive(Debug, Clone, Default)]
pub struct HubSpotSignatureHeaders<'a> {
    pub signature: Option<&'a str>,
    pub version: Option<&'a str>,
    pub signature_v3: Option<&'a str>,
    pub timestamp: Option<&'a str>,
}

/// Verifies a HubSpot request. A valid v3 signature passes; without a v3 header, a valid v1 (or
/// v2) signature passes. `uri` is the full public URL HubSpot called.
pub fn verify_hubspot(
    secret: &str,
    headers: &HubSpotSignatureHeaders<'_>,
    method: &str,
    uri: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<(), SignatureError> {
    if let Some(v3) = headers.signature_v3 {
        let ts = headers.timestamp.ok_or(SignatureError::BadTimestamp)?;
        let ts_ms: i64 = ts
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        // Older than five minutes is rejected; allow the same skew into the future.
        if now_ms - ts_ms >= HUBSPOT_MAX_AGE_MS || ts_ms - now_ms >= HUBSPOT_MAX_AGE_MS {
            return Err(SignatureError::Stale);
        }
        let expected = hubspot_v3(secret, method, uri, body, ts.trim());
        return if constant_time_eq(expected.as_bytes(), v3.trim().as_bytes()) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        };
    }
    let sig = headers.signature.ok_or(SignatureError::Missing)?;
    let expected = match headers.version.map(str::trim) {
        None | Some("v1") => hubspot_v1(secret, body),
        Some("v2") => hubspot_v2(secret, method, uri, body),
        Some(_) => return Err(SignatureError::Mismatch),
    };
    if constant_time_eq(
        expected.as_bytes(),
        sig.trim().to_ascii_lowercase().as_bytes(),
    ) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// App webhook: lowercase hex HMAC-SHA256(secret, raw body).
pub fn app_webhook_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

pub fn verify_app_webhook(
    secret: &str,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let sig = signature.ok_or(SignatureError::Missing)?;
    let given = hex::decode(sig.trim()).map_err(|_| SignatureError::Mismatch)?;
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// HTTP Basic credentials check in constant time (Pipedrive webhooks).
/// The decoded `user:password` of an HTTP Basic `Authorization` header.
pub fn basic_auth_login(header: &str) -> Option<Vec<u8>> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
}

pub fn verify_basic_auth(
    header: Option<&str>,
    user: &str,
    password: &str,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .ok_or(SignatureError::Mismatch)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| SignatureError::Mismatch)?;
    let expected = format!("{user}:{password}");
    if constant_time_eq(&decoded, expected.as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URL: &str = "https://www.example.com/webhook_uri";
    const BODY1: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    const BODY_SQ: &str = "{'example_field':'example_value'}";

    #[test]
    fn v1_published_vectors() {
        assert_eq!(
            hubspot_v1(SECRET, BODY1.as_bytes()),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
        assert_eq!(
            hubspot_v1(SECRET, BODY_SQ.as_bytes()),
            "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
        );
    }

    #[test]
    fn v2_published_vectors() {
        assert_eq!(
            hubspot_v2(SECRET, "GET", URL, b""),
            "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
        );
        assert_eq!(
            hubspot_v2(SECRET, "POST", URL, br#"{"example_field":"example_value"}"#),
            "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900"
        );
        assert_eq!(
            hubspot_v2(SECRET, "POST", URL, BODY_SQ.as_bytes()),
            "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"
        );
    }

    #[test]
    fn v3_published_vectors() {
        assert_eq!(
            hubspot_v3(SECRET, "POST", URL, BODY_SQ.as_bytes(), "1693657560000"),
            "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
        );
        assert_eq!(
            hubspot_v3(SECRET, "POST", URL, BODY_SQ.as_bytes(), "1700000300000"),
            "RnbPH7+UMKVkbV32P8bz450N4M56aPmcru1+D3kSDtw="
        );
        assert_eq!(
            hubspot_v3(SECRET, "POST", URL, BODY1.as_bytes(), "1564113600000"),
            "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw="
        );
    }

    #[test]
    fn v3_decodes_only_the_listed_escapes() {
        let raw = "https://example.com/hubspot/webhook?src=a%3Ab&x=%28y%29";
        assert_eq!(
            hubspot_v3_decode_uri(raw),
            "https://example.com/hubspot/webhook?src=a:b&x=(y)"
        );
        assert_eq!(
            hubspot_v3(SECRET, "POST", raw, BODY1.as_bytes(), "1564113600000"),
            "GTQmMj/WRgIa7g1JkzZWWgHVQCTMSoJzboK03dCD1xM="
        );
        assert_ne!(
            hubspot_v3(SECRET, "POST", raw, BODY1.as_bytes(), "1564113600000"),
            "cvYvDlrf7eiOnRW7CGLQK2r708iu5i6TKDe8nodaB4M="
        );
        assert_eq!(hubspot_v3_decode_uri("a%20b%"), "a%20b%");
    }

    fn v3_headers<'a>(sig: &'a str, ts: &'a str) -> HubSpotSignatureHeaders<'a> {
        HubSpotSignatureHeaders {
            signature_v3: Some(sig),
            timestamp: Some(ts),
            ..Default::default()
        }
    }

    #[test]
    fn verify_v3_accepts_fresh_and_rejects_tampering_and_staleness() {
        let now = 1_564_113_600_000 + 1000;
        let sig = "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw=";
        let ts = "1564113600000";
        let ok = verify_hubspot(
            SECRET,
            &v3_headers(sig, ts),
            "POST",
            URL,
            BODY1.as_bytes(),
            now,
        );
        assert_eq!(ok, Ok(()));
        let tampered_body = BODY1.replace("123", "124");
        assert_eq!(
            verify_hubspot(
                SECRET,
                &v3_headers(sig, ts),
                "POST",
                URL,
                tampered_body.as_bytes(),
                now
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hubspot(
                SECRET,
                &v3_headers(sig, ts),
                "POST",
                "https://www.example.com/other",
                BODY1.as_bytes(),
                now
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hubspot(
                SECRET,
                &v3_headers(sig, "1564113600001"),
                "POST",
                URL,
                BODY1.as_bytes(),
                now
            ),
            Err(SignatureError::Mismatch)
        );
        let stale_now = 1_564_113_600_000 + HUBSPOT_MAX_AGE_MS;
        assert_eq!(
            verify_hubspot(
                SECRET,
                &v3_headers(sig, ts),
                "POST",
                URL,
                BODY1.as_bytes(),
                stale_now
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_hubspot(
                SECRET,
                &v3_headers(sig, "soon"),
                "POST",
                URL,
                BODY1.as_bytes(),
                now
            ),
            Err(SignatureError::BadTimestamp)
        );
        // A wrong v3 signature is not rescued by a valid v1 signature.
        let mut both = v3_headers("AAAA", ts);
        let v1 = hubspot_v1(SECRET, BODY1.as_bytes());
        both.signature = Some(&v1);
        assert_eq!(
            verify_hubspot(SECRET, &both, "POST", URL, BODY1.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn verify_v1_when_no_v3_header() {
        let sig = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
        let h = HubSpotSignatureHeaders {
            signature: Some(sig),
            version: Some("v1"),
            ..Default::default()
        };
        assert_eq!(
            verify_hubspot(SECRET, &h, "POST", URL, BODY1.as_bytes(), 0),
            Ok(())
        );
        assert_eq!(
            verify_hubspot(SECRET, &h, "POST", URL, b"[]", 0),
            Err(SignatureError::Mismatch)
        );
        let v2 = "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900";
        let h2 = HubSpotSignatureHeaders {
            signature: Some(v2),
            version: Some("v2"),
            ..Default::default()
        };
        assert_eq!(
            verify_hubspot(
                SECRET,
                &h2,
                "POST",
                URL,
                br#"{"example_field":"example_value"}"#,
                0
            ),
            Ok(())
        );
        assert_eq!(
            verify_hubspot(
                SECRET,
                &HubSpotSignatureHeaders::default(),
                "POST",
                URL,
                b"",
                0
            ),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn app_webhook_roundtrip() {
        let sig = app_webhook_signature("s3cret", b"{\"a\":1}");
        assert_eq!(
            verify_app_webhook("s3cret", Some(&sig), b"{\"a\":1}"),
            Ok(())
        );
        assert_eq!(
            verify_app_webhook("s3cret", Some(&sig), b"{\"a\":2}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_app_webhook("s3cret", Some("zz"), b"{}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_app_webhook("s3cret", None, b"{}"),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn basic_auth() {
        let ok = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:p")
        );
        assert_eq!(verify_basic_auth(Some(&ok), "u", "p"), Ok(()));
        assert_eq!(
            verify_basic_auth(Some(&ok), "u", "q"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_basic_auth(Some("Bearer x"), "u", "p"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_basic_auth(None, "u", "p"),
            Err(SignatureError::Missing)
        );
    }
}
