//! HubSpot webhook request signatures as the simulator produces them (HubSpot's
//! "Validating requests from HubSpot" guide).
//!
//! - v1: lowercase hex `sha256(client_secret + body)`.
//! - v3: base64 `HMAC-SHA256(client_secret, method + uri + body + timestamp)`, where `uri` is the
//!   absolute target URL with the twelve escapes of HubSpot's table decoded (the receiver decodes
//!   them before hashing, so the sender must sign the decoded form).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The escapes HubSpot's v3 instructions decode in the request URI; no others.
const V3_DECODES: [(&str, char); 12] = [
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

/// `X-HubSpot-Signature` for `X-HubSpot-Signature-Version: v1`.
pub fn v1_signature(client_secret: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(client_secret.as_bytes());
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// Decodes the v3 table's escapes (either hex case) and leaves every other byte alone.
pub fn v3_canonical_uri(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let decoded = tail.get(..3).and_then(|esc| {
            V3_DECODES
                .iter()
                .find(|(code, _)| code.eq_ignore_ascii_case(esc))
                .map(|(_, c)| *c)
        });
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[3..];
            }
            None => {
                out.push('%');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `X-HubSpot-Signature-v3`.
pub fn v3_signature(
    client_secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: &str,
) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(client_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(method.as_bytes());
    mac.update(v3_canonical_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URL: &str = "https://www.example.com/webhook_uri";
    const VECTOR_1_BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    const SINGLE_QUOTED: &str = "{'example_field':'example_value'}";

    #[test]
    fn vector_1_v1() {
        assert_eq!(
            v1_signature(SECRET, VECTOR_1_BODY.as_bytes()),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
    }

    #[test]
    fn vector_4_v1() {
        assert_eq!(
            v1_signature(SECRET, SINGLE_QUOTED.as_bytes()),
            "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
        );
    }

    #[test]
    fn vectors_6_and_7_v3() {
        assert_eq!(
            v3_signature(
                SECRET,
                "POST",
                URL,
                SINGLE_QUOTED.as_bytes(),
                "1693657560000"
            ),
            "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
        );
        assert_eq!(
            v3_signature(
                SECRET,
                "POST",
                URL,
                SINGLE_QUOTED.as_bytes(),
                "1700000300000"
            ),
            "RnbPH7+UMKVkbV32P8bz450N4M56aPmcru1+D3kSDtw="
        );
    }

    #[test]
    fn vector_8_v3() {
        assert_eq!(
            v3_signature(
                SECRET,
                "POST",
                URL,
                VECTOR_1_BODY.as_bytes(),
                "1564113600000"
            ),
            "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw="
        );
    }

    #[test]
    fn vector_9_v3_decodes_the_table_only() {
        let raw = "https://example.com/hubspot/webhook?src=a%3Ab&x=%28y%29";
        assert_eq!(
            v3_canonical_uri(raw),
            "https://example.com/hubspot/webhook?src=a:b&x=(y)"
        );
        let sig = v3_signature(
            SECRET,
            "POST",
            raw,
            VECTOR_1_BODY.as_bytes(),
            "1564113600000",
        );
        assert_eq!(sig, "GTQmMj/WRgIa7g1JkzZWWgHVQCTMSoJzboK03dCD1xM=");
        assert_ne!(sig, "cvYvDlrf7eiOnRW7CGLQK2r708iu5i6TKDe8nodaB4M=");
        assert_eq!(v3_canonical_uri("a%20b%2fc%"), "a%20b/c%");
    }
}
