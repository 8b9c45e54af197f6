//! A person read with its field changelog (`GET /api/v1/persons/{id}/changelog`, v1 only, 20
//! tokens a page), to see what our writes replaced when their echo was lost.
//!
//! The changelog lists changes newest first, each `{field_key, old_value, new_value,
//! actor_user_id, time ("YYYY-MM-DD HH:MM:SS", UTC), change_source, …}`, paged by an opaque
//! `cursor` (`additional_data.next_cursor`, `null` at the end).

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;

use super::mapping::{self, Slots};
use super::{Op, PipedriveClient, error_for, person_id};
use crate::domain::{CrmRecord, Field, Reported};
use crate::error::CrmError;
use crate::ports::CrmContext;

/// Changes read per page.
const PAGE: u32 = 100;
/// Pages read at most: a window is minutes long, a busy person has a few changes in it.
const MAX_PAGES: usize = 5;

impl PipedriveClient {
    /// The person (one read) and the values `fields` were set to at or after `since` (whole
    /// seconds: a change in the second of `since` counts), oldest first.
    pub(super) async fn read_with_changelog(
        &self,
        ctx: &CrmContext,
        id: &str,
        fields: &[Field],
        since: DateTime<Utc>,
    ) -> Result<(Option<CrmRecord>, Vec<Reported>), CrmError> {
        let Some(person) = person_id(id) else {
            return Ok((None, Vec::new()));
        };
        let (pronouns, job) = self.slots(ctx).await?;
        let Some(p) = self.get_person(ctx, person).await? else {
            return Ok((None, Vec::new()));
        };
        let record = Self::record(&p, pronouns.as_deref(), &job);
        let slots = Slots {
            pronouns: pronouns.as_deref(),
            job_title: Some(&job),
        };
        let since_second = since.timestamp();
        let path = format!("/api/v1/persons/{person}/changelog");
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("limit", PAGE.to_string())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let (status, body) = self.call(Op::PersonChangelog, &path, &query, None).await?;
            if status != StatusCode::OK {
                return Err(error_for(status, &body));
            }
            let mut older = false;
            for item in body["data"].as_array().into_iter().flatten() {
                let Some(at) = mapping::parse_time(&item["time"]) else {
                    continue;
                };
                if at.timestamp() < since_second {
                    older = true;
                    continue;
                }
                let Some(field) = item["field_key"]
                    .as_str()
                    .and_then(|k| mapping::field_of_key(k, slots))
                    .filter(|f| fields.contains(f))
                else {
                    continue;
                };
                let value = match &item["new_value"] {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
                let via_api = item["change_source"].as_str() == Some("api");
                out.push(Reported::set(field, value, at).via_api(via_api));
            }
            cursor = body["additional_data"]["next_cursor"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            if older || cursor.is_none() {
                break;
            }
        }
        // Newest first as listed: taken oldest first, so that of two changes in one second the
        // later stays later.
        out.reverse();
        out.sort_by_key(|r| r.at);
        Ok((Some(record), out))
    }
}
