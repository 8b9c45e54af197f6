//! Changes since a cursor, through CRM search on `lastmodifieddate`, paged by object id: keyset
//! paging, so the 10,000-result cap of search never applies and a month-end import with one
//! shared timestamp neither loops nor drops.

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{HubSpotClient, Lane, SEARCH_PAGE, error_for, mapping};
use crate::domain::CustomField;
use crate::error::CrmError;
use crate::ports::{ChangedRecord, ChangedRecords, CrmContext};

/// Our cursor over `lastmodifieddate`, paged by object id so the 10,000-result cap of search
/// never applies (keyset paging instead of `after` offsets).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct SearchCursor {
    /// Inclusive lower bound on `lastmodifieddate` (epoch ms) of the current pass.
    since: i64,
    /// Highest object id already returned in the current pass.
    after_id: u64,
    /// Highest `lastmodifieddate` seen in the current pass: the next pass starts there.
    max_seen: i64,
}

fn parse_time_ms(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    s.parse::<i64>().ok().or_else(|| {
        s.parse::<DateTime<Utc>>()
            .ok()
            .map(|t| t.timestamp_millis())
    })
}

impl HubSpotClient {
    /// One page of records changed since the cursor, with their values (so a poll can skip
    /// the ones it already agrees with, without reading them again).
    pub(super) async fn search_changed(
        &self,
        ctx: &CrmContext,
        cursor: Option<&str>,
    ) -> Result<ChangedRecords, CrmError> {
        let key = ctx.field(CustomField::Pronouns);
        let mut properties = mapping::read_properties(key);
        properties.push("hs_object_id".into());
        let mut c: SearchCursor = cursor
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        let body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE", "value": c.since.to_string()},
                {"propertyName": "hs_object_id", "operator": "GT", "value": c.after_id.to_string()},
            ]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": properties,
            "limit": SEARCH_PAGE,
        });
        let (status, body) = self
            .call(
                Lane::Search,
                Method::POST,
                "/crm/v3/objects/contacts/search",
                &[],
                Some(&body),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(error_for(status, &body));
        }
        let results = body["results"].as_array().cloned().unwrap_or_default();
        let mut records = Vec::with_capacity(results.len());
        for r in &results {
            let Some(id) = r["id"].as_str() else { continue };
            if let Ok(n) = id.parse::<u64>() {
                c.after_id = c.after_id.max(n);
            }
            let modified = parse_time_ms(&r["properties"]["lastmodifieddate"]);
            if let Some(t) = modified {
                c.max_seen = c.max_seen.max(t);
            }
            let fields = r["properties"]
                .as_object()
                .map(|props| mapping::from_properties(props, key));
            records.push(ChangedRecord {
                id: id.to_string(),
                updated_at: modified.and_then(DateTime::from_timestamp_millis),
                fields,
            });
        }
        let has_more = results.len() >= SEARCH_PAGE;
        if !has_more {
            // Pass complete: the next one starts at the newest change seen (inclusive).
            c = SearchCursor {
                since: c.max_seen.max(c.since),
                after_id: 0,
                max_seen: c.max_seen.max(c.since),
            };
        }
        Ok(ChangedRecords {
            records,
            next_cursor: Some(serde_json::to_string(&c).expect("cursor serialises")),
            has_more,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_times_parse_from_ms_or_iso() {
        assert_eq!(
            parse_time_ms(&json!("1767225600000")),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            parse_time_ms(&json!("2026-01-01T00:00:00Z")),
            Some(1_767_225_600_000)
        );
        assert_eq!(parse_time_ms(&json!(null)), None);
    }
}
