//! HubSpot CRM v3 client: the [`CrmClient`] port over HubSpot's contacts, batch, search and
//! properties APIs, with pacing, 429 handling and OAuth refresh.

mod account;
mod batch;
mod errors;
mod history;
pub mod mapping;
mod search;
pub mod settings;
pub mod webhook;

pub use errors::{error_for, parse_existing_id};
use errors::{error_message, not_a_custom_field};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::pacer::{RollingWindow, next_midnight_in};
use super::transport::{
    AccessToken, Call, Credentials, RatePolicy, Throttle, TokenCache, Transport, header_u64,
};
use crate::domain::{ContactFields, CrmRecord, CustomField, Field, FieldPatch, Provider, Reported};
use crate::error::CrmError;
use crate::ports::{ChangedRecords, CrmClient, CrmContext, RecordListing};

pub const DEFAULT_API_BASE: &str = "https://api.hubapi.com";
/// Our custom contact property.
pub const PRONOUNS_PROPERTY: &str = "pronouns";
/// HubSpot batch endpoints take at most 100 inputs.
pub const BATCH_LIMIT: usize = 100;
const SEARCH_PAGE: usize = 200;
const P: Provider = Provider::HubSpot;

/// How we authenticate.
#[derive(Clone)]
pub enum HubSpotAuth {
    /// A private-app token (static bearer).
    Token(String),
    /// OAuth: access tokens are refreshed before they expire.
    OAuth {
        client_id: String,
        client_secret: String,
        refresh_token: String,
    },
}

/// Client settings (per tenant).
#[derive(Clone)]
pub struct HubSpotClientConfig {
    /// `HUBSPOT_API_BASE`, default `https://api.hubapi.com`.
    pub api_base: String,
    pub auth: HubSpotAuth,
    /// Requests per rolling 10 s (the account's burst limit: 100, or 190 on Professional).
    pub burst_per_10s: u32,
    /// CRM search requests per second.
    pub search_per_second: u32,
    /// Retries of a request answered 429 (ten-secondly) before giving up.
    pub max_rate_limit_retries: u32,
}

impl HubSpotClientConfig {
    pub fn new(api_base: impl Into<String>, auth: HubSpotAuth) -> Self {
        Self {
            api_base: api_base.into().trim_end_matches('/').to_string(),
            auth,
            burst_per_10s: 100,
            search_per_second: 5,
            max_rate_limit_retries: 8,
        }
    }
}

/// Counters of what the client did (benchmarks and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HubSpotClientStats {
    pub requests: u64,
    pub rate_limited: u64,
    pub token_refreshes: u64,
}

pub struct HubSpotClient {
    cfg: HubSpotClientConfig,
    transport: Transport,
    /// The ten-secondly burst window, and search's own per-second window.
    burst: RollingWindow,
    search: RollingWindow,
    burst_policy: HubSpotPolicy,
    search_policy: HubSpotPolicy,
    token: TokenCache,
    refreshes: AtomicU64,
    /// The portal's time zone, read once from the account details.
    zone: PortalZone,
}

/// The portal's time zone setting, once read (HubSpot's daily limit "resets at midnight based
/// on your time zone setting").
type PortalZone = Arc<tokio::sync::OnceCell<Tz>>;

/// What HubSpot's answers say about its limits: a `DAILY` 429, or
/// `X-HubSpot-RateLimit-Daily-Remaining: 0`, spends the day (until midnight in the portal's
/// time zone); any other 429 waits for `Retry-After`, else a quarter of the window, else
/// `default_wait`.
struct HubSpotPolicy {
    default_wait: Duration,
    zone: PortalZone,
}

impl HubSpotPolicy {
    /// When the portal's day ends (UTC's midnight while its zone is not known yet).
    fn day_ends(&self) -> DateTime<Utc> {
        next_midnight_in(Utc::now(), self.zone.get().copied().unwrap_or(Tz::UTC))
    }
}

impl RatePolicy for HubSpotPolicy {
    fn on_answer(&self, headers: &HeaderMap, _cost: u64) -> Option<Throttle> {
        (header_u64(headers, "x-hubspot-ratelimit-daily-remaining") == Some(0))
            .then(|| Throttle::Daily(self.day_ends()))
    }

    fn on_429(&self, headers: &HeaderMap, body: &Value, _cost: u64) -> Throttle {
        if body["policyName"].as_str() == Some("DAILY") {
            return Throttle::Daily(self.day_ends());
        }
        Throttle::Burst(
            header_u64(headers, "retry-after")
                .map(Duration::from_secs)
                .or_else(|| {
                    header_u64(headers, "x-hubspot-ratelimit-interval-milliseconds")
                        .map(|ms| Duration::from_millis(ms / 4))
                })
                .unwrap_or(self.default_wait),
        )
    }
}

#[derive(Debug, Deserialize)]
struct ObjectJson {
    id: String,
    #[serde(default)]
    properties: serde_json::Map<String, Value>,
    #[serde(default, rename = "updatedAt")]
    updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    archived: bool,
}

impl ObjectJson {
    fn into_record(self, pronouns_key: Option<&str>) -> CrmRecord {
        CrmRecord {
            fields: mapping::from_properties(&self.properties, pronouns_key),
            id: self.id,
            updated_at: self.updated_at,
            archived: self.archived,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Standard,
    Search,
}

impl HubSpotClient {
    pub fn new(cfg: HubSpotClientConfig, http: reqwest::Client) -> Self {
        let zone = PortalZone::default();
        Self {
            transport: Transport::new(P, http, cfg.max_rate_limit_retries),
            burst: RollingWindow::named("burst", cfg.burst_per_10s, Duration::from_secs(10)),
            search: RollingWindow::named("search", cfg.search_per_second, Duration::from_secs(1)),
            burst_policy: HubSpotPolicy {
                default_wait: Duration::from_secs(1),
                zone: zone.clone(),
            },
            search_policy: HubSpotPolicy {
                default_wait: Duration::from_millis(250),
                zone: zone.clone(),
            },
            token: TokenCache::default(),
            refreshes: AtomicU64::new(0),
            zone,
            cfg,
        }
    }

    /// Sends every request through `exchange` instead of the network, on `clock`'s time (the
    /// deterministic simulation: the simulator in process, on the virtual clock).
    pub fn exchange_through(
        &self,
        exchange: std::sync::Arc<dyn crate::crm::transport::Exchange>,
        clock: crate::ports::Clock,
    ) {
        self.transport.exchange_through(exchange, clock);
    }

    /// Paces this client by the limits every worker of `tenant` shares, as well as by its own.
    pub fn share_limits(
        &self,
        limits: std::sync::Arc<dyn crate::ports::SharedLimits>,
        tenant: crate::domain::TenantId,
    ) {
        self.transport.share_limits(limits, tenant);
    }

    pub fn stats(&self) -> HubSpotClientStats {
        let t = self.transport.stats();
        HubSpotClientStats {
            requests: t.requests,
            rate_limited: t.rate_limited,
            token_refreshes: self.refreshes.load(Ordering::Relaxed),
        }
    }

    /// A fresh OAuth access token from the refresh token.
    async fn refresh(
        &self,
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
    ) -> Result<AccessToken, CrmError> {
        let url = format!("{}/oauth/v3/token", self.cfg.api_base);
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("refresh_token", refresh_token),
        ];
        let resp = self
            .transport
            .http()
            .post(&url)
            .form(&form)
            .send()
            .await
            .map_err(|e| CrmError::Unavailable {
                provider: P,
                message: format!("token refresh: {}", e.without_url()),
            })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(CrmError::RateLimited {
                provider: P,
                retry_after: Duration::from_secs(1),
            });
        }
        if !status.is_success() {
            return Err(CrmError::Auth {
                provider: P,
                message: format!("token refresh failed ({status}): {}", error_message(&body)),
            });
        }
        let access_token = body["access_token"]
            .as_str()
            .ok_or_else(|| CrmError::Auth {
                provider: P,
                message: "token response without access_token".into(),
            })?
            .to_string();
        let expires_in = body["expires_in"].as_i64().unwrap_or(1800);
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        Ok(AccessToken {
            access_token,
            expires_at: Utc::now() + chrono::Duration::seconds(expires_in),
            api_domain: None,
        })
    }

    /// Sends one request through the shared transport, paced in its lane.
    async fn call(
        &self,
        lane: Lane,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), CrmError> {
        if !self.zone.initialized() {
            self.portal_time_zone().await;
        }
        let (lanes, policy) = match lane {
            Lane::Standard => ([&self.burst], &self.burst_policy),
            Lane::Search => ([&self.search], &self.search_policy),
        };
        let call = Call {
            method,
            path,
            query,
            body,
            lanes: &lanes,
            cost: 1,
        };
        self.transport.send(&call, self, policy).await
    }

    fn object_path(id: &str) -> String {
        format!(
            "/crm/v3/objects/contacts/{}",
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
        )
    }

    async fn get_by(
        &self,
        ctx: &CrmContext,
        id: &str,
        id_property: Option<&str>,
    ) -> Result<Option<CrmRecord>, CrmError> {
        let extra = id_property
            .map(|p| vec![("idProperty", p.to_string())])
            .unwrap_or_default();
        let key = ctx.field(CustomField::Pronouns);
        self.read_object(ctx, id, extra)
            .await?
            .map(|body| Self::parse_object(body, key))
            .transpose()
    }

    /// `GET /crm/v3/objects/contacts/{id}` with our properties (and `extra` query pairs): the
    /// contact as HubSpot answers it, `None` when there is none.
    pub(super) async fn read_object(
        &self,
        ctx: &CrmContext,
        id: &str,
        extra: Vec<(&'static str, String)>,
    ) -> Result<Option<Value>, CrmError> {
        let key = ctx.field(CustomField::Pronouns);
        let mut query = vec![("properties", mapping::read_properties(key).join(","))];
        query.extend(extra);
        let (status, body) = self
            .call(
                Lane::Standard,
                Method::GET,
                &Self::object_path(id),
                &query,
                None,
            )
            .await?;
        match status {
            StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(error_for(s, &body)),
        }
    }

    fn parse_object(body: Value, key: Option<&str>) -> Result<CrmRecord, CrmError> {
        serde_json::from_value::<ObjectJson>(body)
            .map(|o| o.into_record(key))
            .map_err(|e| CrmError::Rejected {
                provider: P,
                status: 200,
                message: format!("unexpected contact shape: {e}"),
            })
    }
}

/// A private-app token, or an OAuth access token refreshed before it expires.
#[async_trait]
impl Credentials for HubSpotClient {
    async fn current(&self) -> Result<(String, &'static str, String), CrmError> {
        let token = match &self.cfg.auth {
            HubSpotAuth::Token(t) => t.clone(),
            HubSpotAuth::OAuth {
                client_id,
                client_secret,
                refresh_token,
            } => {
                self.token
                    .get(|| self.refresh(client_id, client_secret, refresh_token))
                    .await?
                    .access_token
            }
        };
        Ok((
            self.cfg.api_base.clone(),
            "authorization",
            format!("Bearer {token}"),
        ))
    }

    /// A 401 on an OAuth token (revoked, or expired before the time its response gave):
    /// forget it, so the retry refreshes it.
    async fn refused(&self) -> bool {
        if matches!(self.cfg.auth, HubSpotAuth::OAuth { .. }) {
            self.token.clear().await;
            return true;
        }
        false
    }
}

#[async_trait]
impl CrmClient for HubSpotClient {
    fn provider(&self) -> Provider {
        P
    }

    async fn get(&self, ctx: &CrmContext, id: &str) -> Result<Option<CrmRecord>, CrmError> {
        self.get_by(ctx, id, None).await
    }

    async fn get_with_history(
        &self,
        ctx: &CrmContext,
        id: &str,
        fields: &[Field],
        since: DateTime<Utc>,
    ) -> Result<(Option<CrmRecord>, Vec<Reported>), CrmError> {
        self.read_with_history(ctx, id, fields, since).await
    }

    /// Reads by the unique `email` property (consistent, unlike search, which lags writes).
    async fn find_by_email(
        &self,
        ctx: &CrmContext,
        email: &str,
    ) -> Result<Option<CrmRecord>, CrmError> {
        self.get_by(ctx, email, Some("email")).await
    }

    async fn create(
        &self,
        ctx: &CrmContext,
        fields: &ContactFields,
    ) -> Result<CrmRecord, CrmError> {
        let key = ctx.field(CustomField::Pronouns);
        let body = json!({ "properties": mapping::to_properties(fields, key), "associations": [] });
        let (status, body) = self
            .call(
                Lane::Standard,
                Method::POST,
                "/crm/v3/objects/contacts",
                &[],
                Some(&body),
            )
            .await?;
        match status {
            StatusCode::CREATED | StatusCode::OK => Self::parse_object(body, key),
            s => Err(error_for(s, &body)),
        }
    }

    async fn update(
        &self,
        ctx: &CrmContext,
        id: &str,
        patch: &FieldPatch,
    ) -> Result<CrmRecord, CrmError> {
        let key = ctx.field(CustomField::Pronouns);
        let body = json!({ "properties": mapping::patch_properties(patch, key) });
        let (status, body) = self
            .call(
                Lane::Standard,
                Method::PATCH,
                &Self::object_path(id),
                &[],
                Some(&body),
            )
            .await?;
        match status {
            StatusCode::OK => Self::parse_object(body, key),
            s => Err(error_for(s, &body)),
        }
    }

    async fn archive(&self, _ctx: &CrmContext, id: &str) -> Result<(), CrmError> {
        let (status, body) = self
            .call(
                Lane::Standard,
                Method::DELETE,
                &Self::object_path(id),
                &[],
                None,
            )
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            s => Err(error_for(s, &body)),
        }
    }

    /// HubSpot's GDPR delete: the contact and its history, for good (not to the recycle bin).
    async fn erase(&self, _ctx: &CrmContext, id: &str) -> Result<(), CrmError> {
        let body = json!({ "objectId": id });
        let (status, body) = self
            .call(
                Lane::Standard,
                Method::POST,
                "/crm/v3/objects/contacts/gdpr-delete",
                &[],
                Some(&body),
            )
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            s => Err(error_for(s, &body)),
        }
    }

    /// Batch read by record id, 100 inputs per call.
    async fn get_many(
        &self,
        ctx: &CrmContext,
        ids: &[String],
    ) -> Result<HashMap<String, CrmRecord>, CrmError> {
        let records = self.batch_read(ctx, ids, None).await?;
        Ok(records.into_iter().map(|r| (r.id.clone(), r)).collect())
    }

    /// Batch read by email (a lookup by a unique property: no search lag), 100 per call.
    async fn find_many_by_email(
        &self,
        ctx: &CrmContext,
        emails: &[String],
    ) -> Result<HashMap<String, CrmRecord>, CrmError> {
        let records = self.batch_read(ctx, emails, Some("email")).await?;
        Ok(records
            .into_iter()
            .filter_map(|r| Some((r.fields.email.as_deref()?.trim().to_lowercase(), r)))
            .collect())
    }

    async fn email_index(
        &self,
        ctx: &CrmContext,
        emails: &[String],
    ) -> Result<Option<HashMap<String, CrmRecord>>, CrmError> {
        self.contacts_index(ctx, emails).await
    }

    async fn list_records(&self, ctx: &CrmContext, max: usize) -> Result<RecordListing, CrmError> {
        self.list_contacts(ctx, max).await
    }

    /// Batch upsert keyed by email, 100 inputs per call: a create repeated after a lost answer
    /// updates the record it made instead of making a second.
    async fn create_many(
        &self,
        ctx: &CrmContext,
        records: &[ContactFields],
    ) -> Result<Vec<Result<CrmRecord, CrmError>>, CrmError> {
        let mut out = Vec::with_capacity(records.len());
        for chunk in records.chunks(BATCH_LIMIT) {
            out.extend(self.upsert_chunk(ctx, chunk).await?);
        }
        Ok(out)
    }

    async fn changed_since(
        &self,
        ctx: &CrmContext,
        cursor: Option<&str>,
    ) -> Result<ChangedRecords, CrmError> {
        self.search_changed(ctx, cursor).await
    }

    fn reads_in_batches(&self) -> bool {
        true
    }

    fn custom_fields(&self) -> &'static [CustomField] {
        &[CustomField::Pronouns]
    }

    async fn ensure_field(&self, ctx: &CrmContext, field: CustomField) -> Result<String, CrmError> {
        let CustomField::Pronouns = field else {
            return Err(not_a_custom_field(field));
        };
        if let Some(k) = self.find_field(ctx, field).await? {
            return Ok(k);
        }
        let body = json!({
            "name": PRONOUNS_PROPERTY,
            "label": "Pronouns",
            "type": "string",
            "fieldType": "text",
            "groupName": "contactinformation",
            "description": "The contact's pronouns (kept in sync by contact-sync)",
            "formField": false,
        });
        let (status, body) = self
            .call(
                Lane::Standard,
                Method::POST,
                "/crm/v3/properties/contacts",
                &[],
                Some(&body),
            )
            .await?;
        match status {
            StatusCode::CREATED | StatusCode::OK | StatusCode::CONFLICT => {
                Ok(PRONOUNS_PROPERTY.into())
            }
            s => Err(error_for(s, &body)),
        }
    }

    async fn find_field(
        &self,
        _ctx: &CrmContext,
        field: CustomField,
    ) -> Result<Option<String>, CrmError> {
        let CustomField::Pronouns = field else {
            return Err(not_a_custom_field(field));
        };
        let (status, body) = self
            .call(
                Lane::Standard,
                Method::GET,
                &format!("/crm/v3/properties/contacts/{PRONOUNS_PROPERTY}"),
                &[],
                None,
            )
            .await?;
        match status {
            StatusCode::OK => Ok(Some(PRONOUNS_PROPERTY.into())),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(error_for(s, &body)),
        }
    }
}
