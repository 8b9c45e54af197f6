//! Changes since a cursor, through CRM search on `lastmodifieddate`, paged by object id: keyset
//! paging, so the 10,000-result cap of search never applies and a month-end import with one
//! shared timestamp neither loops nor drops.
//!
//! A pass cannot skip a change: the next pass starts a lag margin before this one began (by
//! our clock), not at the newest modification it saw. Pages go by id, so a record with a low
//! id modified while the pass reads higher ids, or a write the search index shows late, has a
//! modification time below the newest one seen; starting there would pass it by for good.
//! Records changed within the margin are returned twice, which is harmless: they are
//! triggers, and the poll skips the ones it already agrees with.

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{HubSpotClient, Lane, SEARCH_PAGE, error_for, mapping};
use crate::domain::CustomField;
use crate::error::CrmError;
use crate::ports::{ChangedRecord, ChangedRecords, CrmContext};

/// How long before a pass began the next one starts: longer than HubSpot's search index lags
/// writes (seconds; reportedly up to 30 s) plus any skew between its clock and ours.
pub(super) const LAG_MARGIN_MS: i64 = 2 * 60 * 1000;

/// Our cursor over `lastmodifieddate`, paged by object id so the 10,000-result cap of search
/// never applies (keyset paging instead of `after` offsets).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct SearchCursor {
    /// Inclusive lower bound on `lastmodifieddate` (epoch ms) of the current pass.
    since: i64,
    /// Highest object id already returned in the current pass.
    after_id: u64,
    /// When the current pass began (epoch ms, our clock); 0 before its first page.
    #[serde(default)]
    started: i64,
}

impl SearchCursor {
    /// The cursor after a page: the same pass further on, or (`done`) the next pass, which
    /// starts the lag margin before this one began and never before this one's start.
    fn advanced(self, done: bool) -> Self {
        if done {
            SearchCursor {
                since: self.since.max(self.started - LAG_MARGIN_MS),
                after_id: 0,
                started: 0,
            }
        } else {
            self
        }
    }
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
        if c.started == 0 {
            c.started = self.transport.now().timestamp_millis();
        }
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
        let c = c.advanced(!has_more);
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
    fn the_next_pass_starts_a_margin_before_this_one_began() {
        let pass = SearchCursor {
            since: 1_000,
            after_id: 42,
            started: 10_000_000,
        };
        assert_eq!(pass.clone().advanced(false), pass, "mid-pass: unchanged");
        let next = pass.advanced(true);
        assert_eq!(next.since, 10_000_000 - LAG_MARGIN_MS);
        assert_eq!((next.after_id, next.started), (0, 0));
        // Never back before the pass's own start.
        let quick = SearchCursor {
            since: 9_990_000,
            after_id: 0,
            started: 10_000_000,
        };
        assert_eq!(quick.advanced(true).since, 9_990_000);
    }

    #[test]
    fn an_older_cursor_still_reads() {
        let c: SearchCursor =
            serde_json::from_str(r#"{"since":5,"after_id":7,"max_seen":9}"#).unwrap();
        assert_eq!((c.since, c.after_id, c.started), (5, 7, 0));
    }

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
