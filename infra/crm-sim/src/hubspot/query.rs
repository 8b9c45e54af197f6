//! Query-string and form parsing that understands HubSpot's list parameters:
//! `properties=a,b` and repeated `properties=a&properties=b` alike.

use super::error::ApiError;

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=2` → `[("a","1"),("b","2")]`.
pub(crate) fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

#[derive(Debug, Default, Clone)]
pub(crate) struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    pub fn parse(raw: Option<&str>) -> Self {
        Self(raw.map(parse_pairs).unwrap_or_default())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every comma-separated value of every occurrence; `None` when the parameter is absent.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        let mut found = false;
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            if k == name {
                found = true;
                out.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
        }
        found.then_some(out)
    }

    pub fn bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ApiError::validation(format!(
                "Invalid value \"{v}\" for query parameter {name}: expected true or false"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("jane%40example.com"), "jane@example.com");
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("100%"), "100%");
        let q = QueryParams::parse(Some(
            "properties=email,firstname&properties=phone&archived=true",
        ));
        assert_eq!(
            q.list("properties").unwrap(),
            vec!["email", "firstname", "phone"]
        );
        assert!(q.bool("archived").unwrap());
        assert!(q.list("missing").is_none());
        assert!(
            QueryParams::parse(Some("archived=maybe"))
                .bool("archived")
                .is_err()
        );
    }
}
