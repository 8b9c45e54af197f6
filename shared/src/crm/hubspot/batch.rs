//! HubSpot's batch calls: read by record id or by a unique property, and upsert by email;
//! and the listing of every contact, where it is cheaper than reading by email.

use std::collections::{HashMap, HashSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::errors::error_message;
use super::{BATCH_LIMIT, HubSpotClient, Lane, P, error_for, mapping};
use crate::domain::{ContactFields, CrmRecord, CustomField};
use crate::error::CrmError;
use crate::ports::{CrmContext, RecordListing};

impl HubSpotClient {
    /// The contacts whose primary email is one of `emails` (as a batch read by email finds
    /// them), from `GET /crm/v3/objects/contacts`, 100 a page, or `None` when listing every
    /// contact would take more calls than batch reads of the emails not found yet.
    pub(super) async fn contacts_index(
        &self,
        ctx: &CrmContext,
        emails: &[String],
    ) -> Result<Option<HashMap<String, CrmRecord>>, CrmError> {
        let wanted: HashSet<String> = emails
            .iter()
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        let mut found = HashMap::new();
        let mut after: Option<String> = None;
        let mut pages = 0usize;
        loop {
            let unresolved = wanted.len() - found.len();
            if unresolved == 0 {
                return Ok(Some(found));
            }
            if pages + 1 > unresolved.div_ceil(BATCH_LIMIT) {
                return Ok(None);
            }
            let (records, next) = self.contacts_page(ctx, after.as_deref()).await?;
            pages += 1;
            for record in records {
                if let Some(email) = record.fields.email.as_deref() {
                    let email = email.trim().to_lowercase();
                    if wanted.contains(&email) {
                        found.insert(email, record);
                    }
                }
            }
            match next {
                Some(a) => after = Some(a),
                None => return Ok(Some(found)),
            }
        }
    }

    /// Every live contact, 100 a page, until the end or once `max` are in.
    pub(super) async fn list_contacts(
        &self,
        ctx: &CrmContext,
        max: usize,
    ) -> Result<RecordListing, CrmError> {
        let mut listing = RecordListing::default();
        let mut after: Option<String> = None;
        loop {
            let (records, next) = self.contacts_page(ctx, after.as_deref()).await?;
            listing.requests += 1;
            for record in records {
                let emails = record
                    .fields
                    .email
                    .iter()
                    .map(|e| e.trim().to_lowercase())
                    .collect();
                listing.records.push((record, emails));
            }
            match next {
                Some(a) if listing.records.len() < max => after = Some(a),
                Some(_) => return Ok(listing),
                None => {
                    listing.complete = true;
                    return Ok(listing);
                }
            }
        }
    }

    /// One page of `GET /crm/v3/objects/contacts` (live contacts, 100 a page), and the
    /// cursor of the next.
    async fn contacts_page(
        &self,
        ctx: &CrmContext,
        after: Option<&str>,
    ) -> Result<(Vec<CrmRecord>, Option<String>), CrmError> {
        let key = ctx.field(CustomField::Pronouns);
        let mut query = vec![
            ("limit", BATCH_LIMIT.to_string()),
            ("properties", mapping::read_properties(key).join(",")),
            ("archived", "false".to_string()),
        ];
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        let (status, body) = self
            .call(
                Lane::Standard,
                Method::GET,
                "/crm/v3/objects/contacts",
                &query,
                None,
            )
            .await?;
        if status != StatusCode::OK {
            return Err(error_for(status, &body));
        }
        let records = body["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| Self::parse_object(item.clone(), key))
            .collect::<Result<Vec<_>, _>>()?;
        let next = body["paging"]["next"]["after"]
            .as_str()
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        Ok((records, next))
    }

    /// `POST /crm/v3/objects/contacts/batch/read`, 100 inputs per call, by record id or by a
    /// unique property (`id_property`). Inputs that match nothing are absent (HubSpot's 207).
    pub(super) async fn batch_read(
        &self,
        ctx: &CrmContext,
        inputs: &[String],
        id_property: Option<&str>,
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let key = ctx.field(CustomField::Pronouns);
        let mut out = Vec::new();
        for chunk in inputs.chunks(BATCH_LIMIT) {
            let mut body = json!({
                "properties": mapping::read_properties(key),
                "propertiesWithHistory": [],
                "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            });
            if let Some(property) = id_property {
                body["idProperty"] = json!(property);
            }
            let (status, body) = self
                .call(
                    Lane::Standard,
                    Method::POST,
                    "/crm/v3/objects/contacts/batch/read",
                    &[],
                    Some(&body),
                )
                .await?;
            if !(status == StatusCode::OK || status == StatusCode::MULTI_STATUS) {
                return Err(error_for(status, &body));
            }
            for item in body["results"].as_array().into_iter().flatten() {
                out.push(Self::parse_object(item.clone(), key)?);
            }
        }
        Ok(out)
    }

    /// One batch upsert; a batch HubSpot rejects as a whole (400: one input's value is invalid,
    /// e.g. an email it does not accept) is split in halves and sent again, so the other inputs
    /// go through and the bad one gets HubSpot's message as its own result.
    pub(super) async fn upsert_chunk(
        &self,
        ctx: &CrmContext,
        chunk: &[ContactFields],
    ) -> Result<Vec<Result<CrmRecord, CrmError>>, CrmError> {
        match self.upsert_once(ctx, chunk).await {
            Err(e @ CrmError::Rejected { status: 400, .. }) if chunk.len() == 1 => Ok(vec![Err(e)]),
            Err(CrmError::Rejected { status: 400, .. }) if !chunk.is_empty() => {
                let (left, right) = chunk.split_at(chunk.len() / 2);
                let mut out = Box::pin(self.upsert_chunk(ctx, left)).await?;
                out.extend(Box::pin(self.upsert_chunk(ctx, right)).await?);
                Ok(out)
            }
            other => other,
        }
    }

    async fn upsert_once(
        &self,
        ctx: &CrmContext,
        chunk: &[ContactFields],
    ) -> Result<Vec<Result<CrmRecord, CrmError>>, CrmError> {
        let key = ctx.field(CustomField::Pronouns);
        let inputs: Vec<Value> = chunk
            .iter()
            .map(|f| {
                json!({
                    "id": f.email.clone().unwrap_or_default(),
                    "idProperty": "email",
                    "properties": mapping::to_properties(f, key),
                })
            })
            .collect();
        let (status, body) = self
            .call(
                Lane::Standard,
                Method::POST,
                "/crm/v3/objects/contacts/batch/upsert",
                &[],
                Some(&json!({ "inputs": inputs })),
            )
            .await?;
        if !(status == StatusCode::OK
            || status == StatusCode::MULTI_STATUS
            || status == StatusCode::CREATED)
        {
            return Err(error_for(status, &body));
        }
        let mut by_email: HashMap<String, CrmRecord> = HashMap::new();
        for item in body["results"].as_array().into_iter().flatten() {
            let record = Self::parse_object(item.clone(), key)?;
            if let Some(email) = record.fields.email.clone() {
                by_email.insert(email, record);
            }
        }
        let mut failed: HashMap<String, String> = HashMap::new();
        for err in body["errors"].as_array().into_iter().flatten() {
            let message = error_message(err);
            for id in err["context"]["ids"].as_array().into_iter().flatten() {
                if let Some(id) = id.as_str() {
                    failed.insert(id.to_lowercase(), message.clone());
                }
            }
        }
        Ok(chunk
            .iter()
            .map(|f| {
                let email = f.email.clone().unwrap_or_default();
                by_email.remove(&email).ok_or_else(|| CrmError::Rejected {
                    provider: P,
                    status: 207,
                    message: failed
                        .get(&email)
                        .cloned()
                        .unwrap_or_else(|| format!("batch upsert returned no result for {email}")),
                })
            })
            .collect())
    }
}
