//! `/contacts`: the app's contacts with their per-contact sync status.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use utoipa::{IntoParams, ToSchema};

use super::errors::{ApiError, ErrorBody, json_body, parse_json, require_json};
use super::{AppState, Tenant};
use crate::domain::{
    ChangeEvent, ChangeKind, Contact, ContactFields, ContactLink, LinkStatus, Origin, Provider,
    TenantId,
};
use crate::ports::ContactIssue;

/// A contact's overall sync badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Badge {
    /// Not in any CRM (none configured, or not synced yet).
    LocalOnly,
    /// In some CRMs but not all yet.
    Partial,
    Synced,
    Error,
}

/// One CRM's view of a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CrmLinkView {
    /// synced / pending / error / deleted / not_linked
    #[schema(pattern = "^(synced|pending|error|deleted|not_linked)$")]
    pub status: String,
    pub external_id: Option<String>,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncView {
    pub badge: Badge,
    pub crms: BTreeMap<Provider, CrmLinkView>,
}

/// The badge and per-CRM status of a contact. Pure.
pub fn sync_view(
    providers: &[Provider],
    links: &[ContactLink],
    issues: &[ContactIssue],
) -> SyncView {
    let mut crms = BTreeMap::new();
    for &p in providers {
        let link = links
            .iter()
            .filter(|l| l.provider == p)
            .max_by_key(|l| (l.status != LinkStatus::Deleted, l.last_synced_at));
        let issue = issues.iter().find(|i| i.provider == p);
        let view = match (link, issue) {
            // A record being created shows as pending, without its placeholder id, with the
            // last failure of its create (recorded as an issue: the intent is its creator's).
            (Some(l), issue) if l.is_intent() => CrmLinkView {
                status: "pending".into(),
                external_id: None,
                last_synced_at: None,
                last_error: issue.map(|i| i.message.clone()),
                warnings: l.warnings.clone(),
            },
            (Some(l), _) => CrmLinkView {
                status: l.status.as_str().to_string(),
                external_id: Some(l.external_id.clone()),
                last_synced_at: l.last_synced_at,
                last_error: l.last_error.clone(),
                warnings: l.warnings.clone(),
            },
            (None, Some(i)) => CrmLinkView {
                status: "error".into(),
                external_id: None,
                last_synced_at: None,
                last_error: Some(i.message.clone()),
                warnings: Vec::new(),
            },
            (None, None) => CrmLinkView {
                status: "not_linked".into(),
                external_id: None,
                last_synced_at: None,
                last_error: None,
                warnings: Vec::new(),
            },
        };
        crms.insert(p, view);
    }
    let statuses: Vec<&str> = crms.values().map(|v| v.status.as_str()).collect();
    let badge = if statuses.contains(&"error") {
        Badge::Error
    } else if statuses.is_empty() || statuses.iter().all(|s| *s == "not_linked") {
        Badge::LocalOnly
    } else if statuses.iter().all(|s| *s == "synced" || *s == "deleted") {
        Badge::Synced
    } else {
        Badge::Partial
    };
    SyncView { badge, crms }
}

/// A contact as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactView {
    pub id: String,
    #[serde(flatten)]
    pub fields: ContactFields,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sync: SyncView,
}

/// Body of POST /contacts and PUT /contacts/{id}. A field left out or `null` has no value;
/// values are trimmed (an empty one is no value) and the email lower-cased.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// Required: `local@domain`, the domain of two or more labels.
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    pub email: Option<String>,
    #[schema(max_length = 255)]
    pub first_name: Option<String>,
    #[schema(max_length = 255)]
    pub last_name: Option<String>,
    #[schema(max_length = 255)]
    pub phone: Option<String>,
    #[schema(max_length = 255)]
    pub job_title: Option<String>,
    #[schema(max_length = 255)]
    pub pronouns: Option<String>,
    /// With PUT: the version the client read; a stale version gets 409. A whole number as
    /// JSON carries it (`3.0` is 3).
    #[serde(default, deserialize_with = "crate::whole::opt_natural")]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    pub version: Option<u64>,
}

/// The longest value both CRMs store: Pipedrive's text fields take 255 characters (HubSpot's
/// single-line text properties take far more).
const MAX_FIELD_LEN: usize = 255;

impl ContactInput {
    fn into_fields(self) -> Result<(ContactFields, Option<u64>), ApiError> {
        let fields = ContactFields {
            email: self.email,
            first_name: self.first_name,
            last_name: self.last_name,
            phone: self.phone,
            job_title: self.job_title,
            pronouns: self.pronouns,
        };
        Ok((validate_fields(fields)?, self.version))
    }
}

/// Normalises and validates contact fields from outside: email required and well-formed,
/// values at most [`MAX_FIELD_LEN`] characters.
pub(crate) fn validate_fields(fields: ContactFields) -> Result<ContactFields, ApiError> {
    let fields = fields.normalized();
    let Some(email) = fields.email.as_deref() else {
        return Err(ApiError::bad_request("email is required"));
    };
    if !valid_email(email) {
        return Err(ApiError::bad_request(format!(
            "email {email:?} is not a valid address"
        )));
    }
    for f in crate::domain::Field::ALL {
        if fields
            .get(f)
            .is_some_and(|v| v.chars().count() > MAX_FIELD_LEN)
        {
            return Err(ApiError::bad_request(format!(
                "{} is longer than {MAX_FIELD_LEN} characters",
                f.as_str()
            )));
        }
    }
    Ok(fields)
}

/// An address the CRMs accept: `local@domain`, at most 254 characters. The local part: at most
/// 64 characters of letters, digits and ``!#$%&'*+/=?^_`{|}~.-``, no dot first, last or twice
/// in a row. The domain: two or more labels joined by dots, each of letters, digits and
/// hyphens (none first or last), at most 63 characters; the last label two or more letters.
/// (`a@b..com`, `a.@b.com`, `a@-b.com`, `a@b.c` are refused, as HubSpot refuses them.)
fn valid_email(email: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~.-";
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.chars().count() <= 64
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || SPECIALS.contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.chars().count() <= 63
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic));
    email.chars().count() <= 254 && local_ok && domain_ok
}

pub(crate) async fn view(
    state: &AppState,
    tenant: &TenantId,
    contact: Contact,
) -> Result<ContactView, ApiError> {
    let links = state
        .service
        .links
        .links_for_contact(tenant, &contact.id)
        .await?;
    let issues = state.service.state.issues(tenant, &contact.id).await?;
    let providers = state.service.tenants.providers(tenant);
    Ok(ContactView {
        sync: sync_view(&providers, &links, &issues),
        id: contact.id,
        fields: contact.fields,
        version: contact.version,
        created_at: contact.created_at,
        updated_at: contact.last_app_modified,
    })
}

async fn load(state: &AppState, tenant: &TenantId, id: &str) -> Result<Contact, ApiError> {
    match state.service.contacts.get(tenant, id).await? {
        Some(c) if !c.deleted => Ok(c),
        _ => Err(ApiError::not_found(format!("no contact {id}"))),
    }
}

async fn enqueue(
    state: &AppState,
    tenant: &TenantId,
    id: &str,
    kind: ChangeKind,
) -> Result<(), ApiError> {
    let event = ChangeEvent::new(tenant.clone(), Origin::App, id, kind);
    state.queue.enqueue_changes(&[event]).await?;
    Ok(())
}

/// Creates a contact; it is synced to every configured CRM.
#[utoipa::path(post, path = "/contacts", tag = "contacts", operation_id = "createContact",
    request_body(content = ContactInput, content_type = "application/json"),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created; the sync is queued", body = ContactView,
            links(
                ("readContact" = (operation_id = "readContact", parameters(("id" = "$response.body#/id")))),
                ("replaceContact" = (operation_id = "replaceContact", parameters(("id" = "$response.body#/id")))),
                ("deleteContact" = (operation_id = "deleteContact", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "Not a valid contact (email missing or malformed, a value too long, unknown field)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 409, description = "A contact with this email exists", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
        (status = 503, description = "The sync queue is unavailable (retry)", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ContactView>), ApiError> {
    let input: ContactInput = json_body(&headers, &body?)?;
    let (fields, _) = input.into_fields()?;
    let now = Utc::now();
    let contact = Contact::new(
        tenant.clone(),
        uuid::Uuid::new_v4().to_string(),
        fields,
        now,
    );
    let stored = state.service.contacts.insert(&contact).await?;
    enqueue(&state, &tenant, &stored.id, ChangeKind::Upsert).await?;
    tracing::info!(%tenant, contact_id = %stored.id, "contact created");
    Ok((
        StatusCode::CREATED,
        Json(view(&state, &tenant, stored).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Only contacts whose email or name contains this (case ignored).
    pub q: Option<String>,
}

/// Whether a contact matches a search (`needle` lowercased).
fn matches(c: &Contact, needle: &str) -> bool {
    [&c.fields.email, &c.fields.first_name, &c.fields.last_name]
        .into_iter()
        .flatten()
        .any(|v| v.to_lowercase().contains(needle))
        || [
            c.fields.first_name.as_deref(),
            c.fields.last_name.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .contains(needle)
}

/// How many contacts one searched page reads at most before it answers with what it found.
const SEARCH_SCAN: usize = 5_000;

/// One page of contacts, in id order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactPage {
    pub items: Vec<ContactView>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<String>,
}

/// Lists the tenant's contacts, each with its sync badge and per-CRM status; with `q`, those
/// whose email or name contains it (a page reads at most 5,000 contacts: `next` goes on).
#[utoipa::path(get, path = "/contacts", tag = "contacts", operation_id = "listContacts",
    params(ListQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of contacts", body = ContactPage),
        (status = 400, description = "A bad query (limit out of range, unknown form)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ContactPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let needle =
        q.q.as_deref()
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty());
    let Some(needle) = needle else {
        let page = state
            .service
            .contacts
            .list(&tenant, q.after.as_deref(), limit)
            .await?;
        let mut items = Vec::with_capacity(page.items.len());
        for c in page.items {
            items.push(view(&state, &tenant, c).await?);
        }
        return Ok(Json(ContactPage {
            items,
            next: page.next,
        }));
    };
    // A search: pages of the store, filtered, until the page is full or enough was read.
    let mut found = Vec::new();
    let mut after = q.after.clone();
    let mut scanned = 0;
    let next = loop {
        let page = state
            .service
            .contacts
            .list(&tenant, after.as_deref(), 500)
            .await?;
        let mut last = None;
        for c in page.items {
            scanned += 1;
            last = Some(c.id.clone());
            if matches(&c, &needle) {
                found.push(c);
                if found.len() == limit {
                    break;
                }
            }
        }
        if found.len() == limit {
            break last;
        }
        match page.next {
            Some(n) if scanned < SEARCH_SCAN => after = Some(n),
            Some(n) => break Some(n),
            None => break None,
        }
    };
    let mut items = Vec::with_capacity(found.len());
    for c in found {
        items.push(view(&state, &tenant, c).await?);
    }
    Ok(Json(ContactPage { items, next }))
}

/// Reads one contact.
#[utoipa::path(get, path = "/contacts/{id}", tag = "contacts", operation_id = "readContact",
    params(("id" = String, Path, description = "The contact's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The contact", body = ContactView),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 404, description = "No such contact (or it was deleted)", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
    ))]
pub async fn read(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<ContactView>, ApiError> {
    let contact = load(&state, &tenant, &id).await?;
    Ok(Json(view(&state, &tenant, contact).await?))
}

/// Replaces a contact's fields (a field left out has no value). With `version`, a stale
/// write gets 409.
#[utoipa::path(put, path = "/contacts/{id}", tag = "contacts", operation_id = "replaceContact",
    params(("id" = String, Path, description = "The contact's id")),
    request_body(content = ContactInput, content_type = "application/json"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Replaced; the sync is queued", body = ContactView),
        (status = 400, description = "Not a valid contact", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 404, description = "No such contact (or it was deleted)", body = ErrorBody),
        (status = 409, description = "A stale version, a concurrent write, or another contact has this email", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
        (status = 503, description = "The sync queue is unavailable (retry)", body = ErrorBody),
    ))]
pub async fn replace(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ContactView>, ApiError> {
    let body = body?;
    require_json(&headers, &body)?;
    let mut contact = load(&state, &tenant, &id).await?;
    let input: ContactInput = parse_json(&body)?;
    let (fields, version) = input.into_fields()?;
    if let Some(v) = version
        && v != contact.version
    {
        return Err(ApiError::conflict(format!(
            "contact {id} is at version {}, not {v}; read it again",
            contact.version
        )));
    }
    if contact.fields == fields {
        // Nothing changed, but a retry of a write whose sync job was never queued lands here:
        // queue one (the worker finds nothing to do when all is in sync).
        enqueue(&state, &tenant, &id, ChangeKind::Upsert).await?;
        return Ok(Json(view(&state, &tenant, contact).await?));
    }
    contact.fields = fields;
    contact.last_app_modified = Utc::now();
    let stored = state.service.contacts.update(&contact).await?;
    enqueue(&state, &tenant, &id, ChangeKind::Upsert).await?;
    Ok(Json(view(&state, &tenant, stored).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// `true`: erase the person everywhere (GDPR): the contact, its records in every CRM
    /// through their deletion APIs, its history and conflicts; only anonymous tombstones stay.
    pub erase: Option<bool>,
}

/// Deletes a contact (idempotent); the delete is synced to every CRM (their records archived).
/// With `erase=true` the person is erased everywhere instead (queued; done within seconds).
#[utoipa::path(delete, path = "/contacts/{id}", tag = "contacts", operation_id = "deleteContact",
    params(("id" = String, Path, description = "The contact's id"), DeleteQuery),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted; the sync is queued"),
        (status = 400, description = "A bad query (erase not true or false)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 404, description = "No such contact", body = ErrorBody),
        (status = 409, description = "A concurrent write (retry)", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
        (status = 503, description = "The sync queue is unavailable (retry)", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut contact = match state.service.contacts.get(&tenant, &id).await? {
        Some(c) => c,
        None => return Err(ApiError::not_found(format!("no contact {id}"))),
    };
    if q.erase == Some(true) {
        // Gone from the app's view at once; the erasure job does the rest.
        if !contact.deleted {
            contact.deleted = true;
            contact.last_app_modified = Utc::now();
            state.service.contacts.update(&contact).await?;
        }
        enqueue(&state, &tenant, &id, ChangeKind::Erase).await?;
        tracing::info!(%tenant, contact_id = %id, "erasure queued");
        return Ok(StatusCode::NO_CONTENT);
    }
    // Deleting is idempotent: a retry of a delete whose sync job was never queued queues it.
    if !contact.deleted {
        contact.deleted = true;
        contact.last_app_modified = Utc::now();
        state.service.contacts.update(&contact).await?;
    }
    enqueue(&state, &tenant, &id, ChangeKind::Delete).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(p: Provider, status: LinkStatus) -> ContactLink {
        ContactLink {
            tenant: TenantId::new("t"),
            contact_id: "c".into(),
            provider: p,
            external_id: "1".into(),
            last_synced_at: None,
            status,
            last_error: None,
            crm_last_modified: None,
            base: ContactFields::default(),
            base_hash: String::new(),
            warnings: vec![],
            pending: None,
            app_synced: None,
            writes: Default::default(),
            version: 1,
        }
    }

    #[test]
    fn emails_the_crms_refuse_are_refused() {
        for ok in [
            "ann@example.com",
            "ann.lee+crm@mail.example.co.uk",
            "o'brien@example.ie",
            "x_y-z@sub-domain.example.io",
            "zoë@exämple.de",
        ] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "a@b..com",
            "a@.b.com",
            "a@b.com.",
            "a.@b.com",
            ".a@b.com",
            "a..b@c.com",
            "a@-b.com",
            "a@b-.com",
            "a@b.c",
            "a@b.c0m1",
            "a@localhost",
            "a b@c.com",
            "a@b@c.com",
            "@b.com",
            "a@",
            "a(b)@c.com",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(!valid_email(&long_local));
        let at_limit = "v".repeat(255);
        let input = |first_name: String| ContactFields {
            email: Some("a@example.com".into()),
            first_name: Some(first_name),
            ..Default::default()
        };
        assert!(validate_fields(input(at_limit.clone())).is_ok());
        assert!(validate_fields(input(format!("{at_limit}v"))).is_err());
    }

    #[test]
    fn badges() {
        let both = [Provider::HubSpot, Provider::Pipedrive];
        assert_eq!(sync_view(&[], &[], &[]).badge, Badge::LocalOnly);
        assert_eq!(sync_view(&both, &[], &[]).badge, Badge::LocalOnly);
        let hs = link(Provider::HubSpot, LinkStatus::Synced);
        assert_eq!(
            sync_view(&both, std::slice::from_ref(&hs), &[]).badge,
            Badge::Partial
        );
        let pd = link(Provider::Pipedrive, LinkStatus::Synced);
        assert_eq!(
            sync_view(&both, &[hs.clone(), pd], &[]).badge,
            Badge::Synced
        );
        let pd_err = link(Provider::Pipedrive, LinkStatus::Error);
        assert_eq!(
            sync_view(&both, &[hs.clone(), pd_err], &[]).badge,
            Badge::Error
        );
        let issue = ContactIssue {
            contact_id: "c".into(),
            provider: Provider::Pipedrive,
            message: "down".into(),
            at: Utc::now(),
        };
        let v = sync_view(&both, &[hs], &[issue]);
        assert_eq!(v.badge, Badge::Error);
        assert_eq!(
            v.crms[&Provider::Pipedrive].last_error.as_deref(),
            Some("down")
        );
    }

    #[test]
    fn a_record_being_created_shows_as_pending_without_an_id() {
        let both = [Provider::HubSpot, Provider::Pipedrive];
        let hs = link(Provider::HubSpot, LinkStatus::Synced);
        let intent = ContactLink::intent(
            &TenantId::new("t"),
            "c",
            Provider::Pipedrive,
            ContactFields::default(),
            Utc::now(),
        );
        let v = sync_view(&both, &[hs.clone(), intent.clone()], &[]);
        assert_eq!(v.badge, Badge::Partial);
        let pd = &v.crms[&Provider::Pipedrive];
        assert_eq!(
            (pd.status.as_str(), pd.external_id.as_ref()),
            ("pending", None)
        );
        let issue = ContactIssue {
            contact_id: "c".into(),
            provider: Provider::Pipedrive,
            message: "no answer".into(),
            at: Utc::now(),
        };
        let v = sync_view(&both, &[hs, intent], &[issue]);
        assert_eq!(
            v.crms[&Provider::Pipedrive].last_error.as_deref(),
            Some("no answer")
        );
    }

    #[test]
    fn email_validation() {
        assert!(valid_email("a@b.io"));
        for bad in ["", "a", "a@b", "@b.io", "a@.io", "a b@c.io", "a@b@c.io"] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
