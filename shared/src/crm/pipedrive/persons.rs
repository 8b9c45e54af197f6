//! Persons: reads (with a short-lived copy of each person read, which the next PATCH needs: a
//! PATCH replaces whole `emails`/`phones` arrays), the exact email search, updates that send
//! only what differs, the backfill's listing-or-search lookup, and the poll's pass over
//! `update_time`.

use std::collections::{HashMap, HashSet};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use tracing::warn;

use super::mapping::{self, Person, Slots};
use super::{Op, P, PipedriveClient, RECENT_CAP, RECENT_TTL, error_for, rfc3339_secs, shape_error};
use crate::domain::{CrmRecord, FieldPatch, TenantId};
use crate::error::CrmError;
use crate::ports::{ChangedRecord, ChangedRecords, CrmContext, RecordListing};

/// Ids one listing may name (`ids` of `GET /api/v2/persons`).
const IDS_PER_LISTING: usize = 100;

/// Our `changed_since` cursor: one pass lists persons with `update_time >= since` in
/// `update_time` order, paging with Pipedrive's cursor; the next pass starts at the newest
/// `update_time` seen (inclusive, whole seconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PollCursor {
    /// Inclusive lower bound of the current pass (epoch seconds); `None` = from the start.
    #[serde(default)]
    since: Option<i64>,
    /// Pipedrive's `next_cursor` inside the current pass.
    #[serde(default)]
    page: Option<String>,
    /// Newest `update_time` seen in the current pass.
    #[serde(default)]
    max_seen: Option<i64>,
}

impl PipedriveClient {
    pub(super) fn remember(&self, tenant: &TenantId, p: &Person) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT_CAP {
            recent.retain(|_, (at, _)| at.elapsed() < RECENT_TTL);
            if recent.len() >= RECENT_CAP {
                recent.clear();
            }
        }
        recent.insert((tenant.clone(), p.id), (Instant::now(), p.clone()));
    }

    fn recall(&self, tenant: &TenantId, id: u64) -> Option<Person> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .get(&(tenant.clone(), id))
            .filter(|(at, _)| at.elapsed() < RECENT_TTL)
            .map(|(_, p)| p.clone())
    }

    pub(super) fn person_from(body: &Value) -> Result<Person, CrmError> {
        Person::from_json(&body["data"]).ok_or_else(|| shape_error("person"))
    }

    pub(super) async fn get_person(
        &self,
        ctx: &CrmContext,
        id: u64,
    ) -> Result<Option<Person>, CrmError> {
        let (status, body) = self
            .call(Op::GetPerson, &format!("/api/v2/persons/{id}"), &[], None)
            .await?;
        match status {
            StatusCode::OK => {
                let p = Self::person_from(&body)?;
                self.remember(&ctx.tenant, &p);
                Ok(Some(p))
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(None),
            s => Err(error_for(s, &body)),
        }
    }

    /// One page of `GET /api/v2/persons`: persons and the next cursor.
    async fn list_page(
        &self,
        query: &[(&str, String)],
    ) -> Result<(StatusCode, Vec<Person>, Option<String>, Value), CrmError> {
        let (status, body) = self
            .call(Op::ListPersons, "/api/v2/persons", query, None)
            .await?;
        if status != StatusCode::OK {
            return Ok((status, Vec::new(), None, body));
        }
        let persons = body["data"]
            .as_array()
            .map(|a| a.iter().filter_map(Person::from_json).collect())
            .unwrap_or_default();
        let next = body["additional_data"]["next_cursor"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Ok((status, persons, next, Value::Null))
    }

    pub(super) fn record(p: &Person, pronouns: Option<&str>, job: &str) -> CrmRecord {
        CrmRecord {
            id: p.id.to_string(),
            fields: mapping::to_fields(
                p,
                Slots {
                    pronouns,
                    job_title: Some(job),
                },
            ),
            updated_at: p.update_time,
            archived: p.is_deleted,
        }
    }

    /// The live person whose primary email is `email`, else the oldest having it among its
    /// other emails (exact, case-insensitive search + reads).
    pub(super) async fn search_person(
        &self,
        ctx: &CrmContext,
        email: &str,
    ) -> Result<Option<Person>, CrmError> {
        let email = email.trim().to_lowercase();
        if email.is_empty() {
            return Ok(None);
        }
        let query = [
            ("term", email.clone()),
            ("fields", "email".to_string()),
            ("exact_match", "true".to_string()),
            ("limit", "100".to_string()),
        ];
        let (status, body) = self
            .call(Op::SearchPersons, "/api/v2/persons/search", &query, None)
            .await?;
        if status != StatusCode::OK {
            return Err(error_for(status, &body));
        }
        let mut ids: Vec<u64> = body["data"]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|hit| &hit["item"])
            .filter(|item| {
                item["emails"].as_array().is_some_and(|emails| {
                    emails.iter().any(|e| {
                        e.as_str()
                            .or_else(|| e["value"].as_str())
                            .is_some_and(|v| v.trim().eq_ignore_ascii_case(&email))
                    })
                })
            })
            .filter_map(|item| mapping::parse_id(&item["id"]))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // A person whose primary email it is comes first; else the oldest that has it among
        // its other emails (a merge keeps the merged person's emails on the survivor).
        let mut other = None;
        for id in ids {
            if let Some(p) = self.get_person(ctx, id).await?
                && !p.is_deleted
                && p.has_email(&email)
            {
                if p.has_primary_email(&email) {
                    return Ok(Some(p));
                }
                other.get_or_insert(p);
            }
        }
        Ok(other)
    }

    pub(super) async fn update_person(
        &self,
        ctx: &CrmContext,
        id: u64,
        patch: &FieldPatch,
        current: Option<Person>,
    ) -> Result<CrmRecord, CrmError> {
        let (pronouns, job) = self.slots(ctx).await?;
        let slots = Slots {
            pronouns: pronouns.as_deref(),
            job_title: Some(&job),
        };
        let current =
            match current {
                Some(p) => Some(p),
                None if mapping::needs_current(patch) => {
                    match self.recall(&ctx.tenant, id) {
                        Some(p) => Some(p),
                        None => Some(self.get_person(ctx, id).await?.ok_or_else(|| {
                            CrmError::Rejected {
                                provider: P,
                                status: 404,
                                message: format!("person {id} not found"),
                            }
                        })?),
                    }
                }
                None => None,
            };
        let body = mapping::patch_body(patch, current.as_ref(), slots);
        if body.as_object().is_none_or(|o| o.is_empty()) {
            let p = match current {
                Some(p) => p,
                None => self
                    .get_person(ctx, id)
                    .await?
                    .ok_or_else(|| CrmError::Rejected {
                        provider: P,
                        status: 404,
                        message: format!("person {id} not found"),
                    })?,
            };
            return Ok(Self::record(&p, slots.pronouns, &job));
        }
        let (status, resp) = self
            .call(
                Op::UpdatePerson,
                &format!("/api/v2/persons/{id}"),
                &[],
                Some(&body),
            )
            .await?;
        match status {
            StatusCode::OK => {
                let p = Self::person_from(&resp)?;
                self.remember(&ctx.tenant, &p);
                Ok(Self::record(&p, slots.pronouns, &job))
            }
            s => Err(error_for(s, &resp)),
        }
    }

    /// Live persons by id, as cheaply in tokens as it goes: up to 100 ids in one listing
    /// (`GET /api/v2/persons?ids=`, 10 tokens; persons deleted or unknown are left out) where
    /// that costs less than one read (1 token) each.
    pub(super) async fn persons_by_id(
        &self,
        ctx: &CrmContext,
        ids: &[String],
    ) -> Result<HashMap<String, CrmRecord>, CrmError> {
        let (pronouns, job) = self.slots(ctx).await?;
        let mut wanted: Vec<u64> = ids.iter().filter_map(|id| super::person_id(id)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = HashMap::new();
        for chunk in wanted.chunks(IDS_PER_LISTING) {
            let persons = if (chunk.len() as u64) * Op::GetPerson.cost() <= Op::ListPersons.cost() {
                let mut persons = Vec::new();
                for &id in chunk {
                    persons.extend(self.get_person(ctx, id).await?);
                }
                persons
            } else {
                let list = chunk
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let query = [("ids", list), ("limit", IDS_PER_LISTING.to_string())];
                let (status, persons, _, body) = self.list_page(&query).await?;
                if status != StatusCode::OK {
                    return Err(error_for(status, &body));
                }
                for p in &persons {
                    self.remember(&ctx.tenant, p);
                }
                persons
            };
            for p in persons.into_iter().filter(|p| !p.is_deleted) {
                out.insert(
                    p.id.to_string(),
                    Self::record(&p, pronouns.as_deref(), &job),
                );
            }
        }
        Ok(out)
    }

    /// The persons with these emails, keyed by the email lowercased: from the listing while
    /// listing is cheaper in tokens than one search per email left (the listing does not lag
    /// like the search), else searched.
    pub(super) async fn find_persons_by_email(
        &self,
        ctx: &CrmContext,
        emails: &[String],
    ) -> Result<HashMap<String, CrmRecord>, CrmError> {
        let (pronouns, job) = self.slots(ctx).await?;
        let wanted = distinct_emails(emails);
        let (mut index, complete) = self.list_by_email(&wanted).await?;
        let mut out = HashMap::new();
        for e in wanted {
            let person = match index.remove(&e) {
                Some(p) => Some(p),
                None if !complete => self.search_person(ctx, &e).await?,
                None => None,
            };
            if let Some(p) = person {
                // A later PATCH needs the whole person (it replaces emails and phones).
                self.remember(&ctx.tenant, &p);
                out.insert(e, Self::record(&p, pronouns.as_deref(), &job));
            }
        }
        Ok(out)
    }

    /// The persons with these emails from one whole listing, or `None` when listing every
    /// person would cost more tokens than searching these emails.
    pub(super) async fn persons_index(
        &self,
        ctx: &CrmContext,
        emails: &[String],
    ) -> Result<Option<HashMap<String, CrmRecord>>, CrmError> {
        let (pronouns, job) = self.slots(ctx).await?;
        let wanted = distinct_emails(emails);
        let (index, complete) = self.list_by_email(&wanted).await?;
        if !complete {
            return Ok(None);
        }
        Ok(Some(
            index
                .into_iter()
                .map(|(e, p)| {
                    self.remember(&ctx.tenant, &p);
                    (e, Self::record(&p, pronouns.as_deref(), &job))
                })
                .collect(),
        ))
    }

    /// Every live person, page by page, until the end or once `max` are in.
    pub(super) async fn list_persons(
        &self,
        ctx: &CrmContext,
        max: usize,
    ) -> Result<RecordListing, CrmError> {
        let (pronouns, job) = self.slots(ctx).await?;
        let mut listing = RecordListing {
            tokens: Some(0),
            ..Default::default()
        };
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", self.cfg.page_limit.to_string())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let (status, persons, next, body) = self.list_page(&query).await?;
            listing.requests += 1;
            listing.tokens = listing.tokens.map(|t| t + Op::ListPersons.cost());
            if status != StatusCode::OK {
                return Err(error_for(status, &body));
            }
            for p in persons.into_iter().filter(|p| !p.is_deleted) {
                let emails = p
                    .emails
                    .iter()
                    .map(|e| e.value.trim().to_lowercase())
                    .filter(|e| !e.is_empty())
                    .collect();
                listing
                    .records
                    .push((Self::record(&p, pronouns.as_deref(), &job), emails));
            }
            match next {
                Some(c) if listing.records.len() < max => cursor = Some(c),
                Some(_) => return Ok(listing),
                None => {
                    listing.complete = true;
                    return Ok(listing);
                }
            }
        }
    }

    /// Lists persons page by page while the listing costs fewer tokens than one search per
    /// email not found yet, keeping the persons with a wanted email (of two persons with one
    /// email the one whose primary email it is wins, then the oldest, as the search's pick).
    /// Whether the listing reached its end.
    async fn list_by_email(
        &self,
        wanted: &[String],
    ) -> Result<(HashMap<String, Person>, bool), CrmError> {
        let wanted_set: HashSet<&String> = wanted.iter().collect();
        let mut index: HashMap<String, Person> = HashMap::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0u64;
        loop {
            let unresolved = wanted.iter().filter(|e| !index.contains_key(*e)).count() as u64;
            // Every wanted email found: the rest of the listing cannot change the answer.
            if unresolved == 0 {
                return Ok((index, true));
            }
            if (pages + 1) * Op::ListPersons.cost() > unresolved * Op::SearchPersons.cost() {
                return Ok((index, false));
            }
            let mut query = vec![("limit", self.cfg.page_limit.to_string())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let (status, persons, next, body) = self.list_page(&query).await?;
            if status != StatusCode::OK {
                return Err(error_for(status, &body));
            }
            pages += 1;
            for p in persons.into_iter().filter(|p| !p.is_deleted) {
                for e in &p.emails {
                    let key = e.value.trim().to_lowercase();
                    let rank = |q: &Person| (!q.has_primary_email(&key), q.id);
                    if wanted_set.contains(&key)
                        && index.get(&key).is_none_or(|q| rank(q) > rank(&p))
                    {
                        index.insert(key, p.clone());
                    }
                }
            }
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok((index, true)),
            }
        }
    }

    /// Persons with `update_time >= since` in `update_time` order, `MAX_PAGE` per page. Within
    /// a pass the Pipedrive cursor pages (equal timestamps neither loop nor drop); the next pass
    /// starts at the newest `update_time` seen, inclusive, in whole seconds.
    pub(super) async fn persons_changed_since(
        &self,
        ctx: &CrmContext,
        cursor: Option<&str>,
    ) -> Result<ChangedRecords, CrmError> {
        let (pronouns, job) = self.slots(ctx).await?;
        let mut c: PollCursor = cursor
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        let mut restarted = false;
        let (persons, next) = loop {
            let mut query = vec![
                ("sort_by", "update_time".to_string()),
                ("sort_direction", "asc".to_string()),
                ("limit", self.cfg.page_limit.to_string()),
            ];
            if let Some(since) = c.since {
                query.push(("updated_since", rfc3339_secs(since)));
            }
            if let Some(page) = &c.page {
                query.push(("cursor", page.clone()));
            }
            let (status, persons, next, body) = self.list_page(&query).await?;
            match status {
                StatusCode::OK => break (persons, next),
                // An expired page cursor: start the pass again from its lower bound.
                StatusCode::BAD_REQUEST if c.page.is_some() && !restarted => {
                    warn!("Pipedrive rejected the page cursor; restarting the pass");
                    c.page = None;
                    restarted = true;
                }
                s => return Err(error_for(s, &body)),
            }
        };
        let mut records = Vec::with_capacity(persons.len());
        for p in &persons {
            if let Some(t) = p.update_time {
                c.max_seen = Some(c.max_seen.map_or(t.timestamp(), |m| m.max(t.timestamp())));
            }
            records.push(ChangedRecord {
                id: p.id.to_string(),
                updated_at: p.update_time,
                fields: Some(Self::record(p, pronouns.as_deref(), &job).fields),
            });
        }
        let has_more = next.is_some();
        match next {
            Some(n) => c.page = Some(n),
            None => {
                let since = match (c.since, c.max_seen) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                c = PollCursor {
                    since,
                    page: None,
                    max_seen: since,
                };
            }
        }
        Ok(ChangedRecords {
            records,
            next_cursor: Some(serde_json::to_string(&c).map_err(|_| shape_error("cursor"))?),
            has_more,
        })
    }
}

/// The emails trimmed and lowercased, each once, empty ones left out.
fn distinct_emails(emails: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    emails
        .iter()
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty() && seen.insert(e.clone()))
        .collect()
}
