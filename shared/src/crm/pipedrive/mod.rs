//! Pipedrive client: the [`CrmClient`] port over Pipedrive's v2 persons and person-fields APIs
//! (plus the v1 endpoints without a v2 twin: `/users/me`, `/webhooks`), on the shared
//! [`Transport`] with Pipedrive's [token budget](budget) as its rate policy, and OAuth refresh.
//!
//! Paths are built on the company domain root (`https://acme.pipedrive.com`, or the OAuth
//! token's `api_domain`): `/api/v2/...` and `/api/v1/...`. By stage: `persons.rs` (reads,
//! search, updates, backfill lookup, poll), `fields.rs` (custom fields), `account.rs`
//! (`/users/me`, webhooks), `budget.rs` (token costs and limits), `mapping.rs` (both
//! directions), `settings.rs`, `webhook.rs` (incoming payloads).

mod account;
mod budget;
mod changelog;
mod fields;
pub mod mapping;
mod ops;
mod persons;
pub mod settings;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex as AsyncMutex, OnceCell};
use tokio::time::Instant;
use tracing::debug;

pub use self::account::{OwnUser, WebhookRegistration};
use self::mapping::{Person, Slots};
use self::ops::Op;
pub use self::ops::TOKEN_COSTS;
use super::pacer::RollingWindow;
use super::transport::{AccessToken, Call, Credentials, TokenCache, Transport};
use crate::domain::{
    ContactFields, CrmRecord, CustomField, Field, FieldPatch, Provider, Reported, TenantId,
};
use crate::error::CrmError;
use crate::ports::{ChangedRecords, CrmClient, CrmContext, RecordListing};

/// Default API root (the spec servers' host); prefer the company domain.
pub const DEFAULT_API_BASE: &str = "https://api.pipedrive.com";
/// OAuth token and refresh URL.
pub const DEFAULT_OAUTH_TOKEN_URL: &str = "https://oauth.pipedrive.com/oauth/token";
/// Name of our pronouns person field.
pub const PRONOUNS_FIELD: &str = "pronouns";
/// Name of the job title custom field (accounts without the standard `job_title` field), and
/// the name under which its key is stored in the field-key map.
pub const JOB_TITLE_FIELD: &str = "job_title";
/// Name of the webhook we register.
pub const WEBHOOK_NAME: &str = "contact-sync persons";
/// Largest page the v2 list endpoints return.
pub const MAX_PAGE: u32 = 500;
/// Daily token budget of the smallest plan with one seat.
pub const DEFAULT_DAILY_TOKEN_BUDGET: u64 = 30_000;
/// How long a person read is reused to build the next PATCH (the arrays a PATCH replaces).
pub(crate) const RECENT_TTL: Duration = Duration::from_secs(10);
pub(crate) const RECENT_CAP: usize = 2048;
const P: Provider = Provider::Pipedrive;

/// How we authenticate.
#[derive(Clone)]
pub enum PipedriveAuth {
    /// A personal API token, sent as the `x-api-token` header.
    ApiToken(String),
    /// A static OAuth access token (`Authorization: Bearer`).
    Bearer(String),
    /// OAuth with refresh: access tokens are refreshed before they expire, and requests go to
    /// the token response's `api_domain`.
    OAuth {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_url: String,
    },
}

impl PipedriveAuth {
    fn is_oauth(&self) -> bool {
        !matches!(self, PipedriveAuth::ApiToken(_))
    }
}

/// Client settings (per tenant).
#[derive(Clone)]
pub struct PipedriveClientConfig {
    /// `PIPEDRIVE_API_BASE`: the company domain root, e.g. `https://acme.pipedrive.com`.
    pub api_base: String,
    pub auth: PipedriveAuth,
    /// Requests per rolling 2 s (Lite: 20 with an API token, 80 with OAuth).
    pub burst_per_2s: u32,
    /// Search requests per rolling 2 s (10 on every plan).
    pub search_per_2s: u32,
    /// Tokens we allow ourselves per UTC day (`None` = only the server's answers count).
    pub daily_token_budget: Option<u64>,
    /// Retries of a request answered 429 (burst) before giving up.
    pub max_rate_limit_retries: u32,
    /// Page size of list calls (1..=500).
    pub page_limit: u32,
}

impl PipedriveClientConfig {
    pub fn new(api_base: impl Into<String>, auth: PipedriveAuth) -> Self {
        let burst = if auth.is_oauth() { 80 } else { 20 };
        Self {
            api_base: api_base.into().trim_end_matches('/').to_string(),
            auth,
            burst_per_2s: burst,
            search_per_2s: 10,
            daily_token_budget: Some(DEFAULT_DAILY_TOKEN_BUDGET),
            max_rate_limit_retries: 8,
            page_limit: MAX_PAGE,
        }
    }
}

/// Counters of what the client did (tests and benchmarks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PipedriveClientStats {
    pub requests: u64,
    pub rate_limited: u64,
    /// Tokens of the requests the server admitted (spec costs).
    pub tokens_spent: u64,
    pub token_refreshes: u64,
}

fn error_message(body: &Value) -> String {
    match body {
        Value::Object(o) => {
            let main = o
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| o.get("errors").map(Value::to_string))
                .unwrap_or_else(|| body.to_string());
            match o.get("error_info").and_then(Value::as_str) {
                Some(info) if !info.is_empty() => format!("{main} ({info})"),
                _ => main,
            }
        }
        Value::String(s) => {
            let s: String = s.chars().take(200).collect();
            format!("non-JSON answer: {s}")
        }
        Value::Null => "empty answer".into(),
        other => other.to_string(),
    }
}

/// Maps an error response to a [`CrmError`].
pub fn error_for(status: StatusCode, body: &Value) -> CrmError {
    let message = error_message(body);
    match status.as_u16() {
        401 => CrmError::Auth {
            provider: P,
            message,
        },
        // Sustained traffic after 429s is blocked by Cloudflare with an HTML 403.
        403 if body.is_string() => CrmError::RateLimited {
            provider: P,
            retry_after: Duration::from_secs(60),
        },
        403 => CrmError::Auth {
            provider: P,
            message,
        },
        s if s >= 500 => CrmError::Unavailable {
            provider: P,
            message: format!("{status}: {message}"),
        },
        s => CrmError::Rejected {
            provider: P,
            status: s,
            message,
        },
    }
}

fn shape_error(what: &str) -> CrmError {
    CrmError::Rejected {
        provider: P,
        status: 200,
        message: format!("unexpected {what} shape"),
    }
}

fn person_id(id: &str) -> Option<u64> {
    id.trim().parse::<u64>().ok().filter(|n| *n > 0)
}

fn rfc3339_secs(epoch: i64) -> String {
    DateTime::from_timestamp(epoch, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub struct PipedriveClient {
    cfg: PipedriveClientConfig,
    transport: Transport,
    burst: RollingWindow,
    search: RollingWindow,
    budget: budget::Budget,
    token: TokenCache,
    refreshes: AtomicU64,
    /// The current refresh token (Pipedrive may rotate it).
    refresh_token: Mutex<Option<String>>,
    own_user: OnceCell<OwnUser>,
    /// Job title field keys found or created per tenant; the lock also serialises field creation.
    fields: AsyncMutex<HashMap<TenantId, String>>,
    recent: Mutex<HashMap<(TenantId, u64), (Instant, Person)>>,
}

impl PipedriveClient {
    pub fn new(cfg: PipedriveClientConfig, http: reqwest::Client) -> Self {
        let refresh = match &cfg.auth {
            PipedriveAuth::OAuth { refresh_token, .. } => Some(refresh_token.clone()),
            _ => None,
        };
        Self {
            transport: Transport::new(P, http, cfg.max_rate_limit_retries),
            burst: RollingWindow::named("burst", cfg.burst_per_2s, Duration::from_secs(2)),
            search: RollingWindow::named("search", cfg.search_per_2s, Duration::from_secs(2)),
            budget: budget::Budget::new(cfg.daily_token_budget),
            token: TokenCache::default(),
            refreshes: AtomicU64::new(0),
            refresh_token: Mutex::new(refresh),
            own_user: OnceCell::new(),
            fields: AsyncMutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
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

    pub fn stats(&self) -> PipedriveClientStats {
        let t = self.transport.stats();
        PipedriveClientStats {
            requests: t.requests,
            rate_limited: t.rate_limited,
            tokens_spent: self.budget.tokens_spent(),
            token_refreshes: self.refreshes.load(Ordering::Relaxed),
        }
    }

    /// The current OAuth refresh token (persist it when Pipedrive rotated it).
    pub fn current_refresh_token(&self) -> Option<String> {
        self.refresh_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A fresh OAuth access token (and the company's `api_domain`) from the refresh token.
    async fn refresh(
        &self,
        client_id: &str,
        client_secret: &str,
        token_url: &str,
    ) -> Result<AccessToken, CrmError> {
        let refresh = self.current_refresh_token().unwrap_or_default();
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ];
        let resp = self
            .transport
            .http()
            .post(token_url)
            .basic_auth(client_id, Some(client_secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| CrmError::Unavailable {
                provider: P,
                message: format!("token refresh: {}", e.without_url()),
            })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(CrmError::Unavailable {
                provider: P,
                message: format!("token refresh answered {status}"),
            });
        }
        let access_token = body["access_token"]
            .as_str()
            .filter(|_| status.is_success())
            .ok_or_else(|| CrmError::Auth {
                provider: P,
                message: format!("token refresh failed ({status}): {}", error_message(&body)),
            })?
            .to_string();
        if let Some(r) = body["refresh_token"].as_str() {
            *self.refresh_token.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.to_string());
        }
        let api_domain = body["api_domain"]
            .as_str()
            .map(|d| d.trim_end_matches('/').to_string());
        let expires_in = body["expires_in"].as_i64().unwrap_or(3599);
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        Ok(AccessToken {
            access_token,
            expires_at: Utc::now() + chrono::Duration::seconds(expires_in),
            api_domain,
        })
    }

    /// Sends one request through the shared transport: paced (searches in their own window
    /// too), paid for from the day's token budget, burst 429s ridden out. Returns status and
    /// JSON body (`Null` when empty, a string when not JSON).
    async fn call(
        &self,
        op: Op,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), CrmError> {
        let search_lanes = [&self.search, &self.burst];
        let lanes: &[&RollingWindow] = if op == Op::SearchPersons {
            &search_lanes
        } else {
            &search_lanes[1..]
        };
        let call = Call {
            method: op.method(),
            path,
            query,
            body,
            lanes,
            cost: op.cost(),
        };
        let answer = self.transport.send(&call, self, &self.budget).await;
        if let Ok((status, _)) = &answer {
            debug!(op = op.operation_id(), %status, "Pipedrive call");
        }
        answer
    }
}

/// An API token (`x-api-token`), a static OAuth token, or OAuth with refresh (requests then go
/// to the token's `api_domain`).
#[async_trait]
impl Credentials for PipedriveClient {
    async fn current(&self) -> Result<(String, &'static str, String), CrmError> {
        match &self.cfg.auth {
            PipedriveAuth::ApiToken(t) => Ok((self.cfg.api_base.clone(), "x-api-token", t.clone())),
            PipedriveAuth::Bearer(t) => Ok((
                self.cfg.api_base.clone(),
                "authorization",
                format!("Bearer {t}"),
            )),
            PipedriveAuth::OAuth {
                client_id,
                client_secret,
                token_url,
                ..
            } => {
                let t = self
                    .token
                    .get(|| self.refresh(client_id, client_secret, token_url))
                    .await?;
                Ok((
                    t.api_domain.unwrap_or_else(|| self.cfg.api_base.clone()),
                    "authorization",
                    format!("Bearer {}", t.access_token),
                ))
            }
        }
    }

    /// An OAuth token revoked or expired early is refreshed once.
    async fn refused(&self) -> bool {
        if matches!(self.cfg.auth, PipedriveAuth::OAuth { .. }) {
            self.token.clear().await;
            return true;
        }
        false
    }
}

#[async_trait]
impl CrmClient for PipedriveClient {
    fn provider(&self) -> Provider {
        P
    }

    #[tracing::instrument(name = "pipedrive.get", skip_all, fields(tenant = %ctx.tenant))]
    async fn get(&self, ctx: &CrmContext, id: &str) -> Result<Option<CrmRecord>, CrmError> {
        let Some(id) = person_id(id) else {
            return Ok(None);
        };
        let (pronouns, job) = self.slots(ctx).await?;
        Ok(self
            .get_person(ctx, id)
            .await?
            .map(|p| Self::record(&p, pronouns.as_deref(), &job)))
    }

    #[tracing::instrument(name = "pipedrive.get_with_history", skip_all, fields(tenant = %ctx.tenant))]
    async fn get_with_history(
        &self,
        ctx: &CrmContext,
        id: &str,
        fields: &[Field],
        since: DateTime<Utc>,
    ) -> Result<(Option<CrmRecord>, Vec<Reported>), CrmError> {
        self.read_with_changelog(ctx, id, fields, since).await
    }

    /// Exact (case-insensitive) email search, then a read of the match.
    #[tracing::instrument(name = "pipedrive.find_by_email", skip_all, fields(tenant = %ctx.tenant))]
    async fn find_by_email(
        &self,
        ctx: &CrmContext,
        email: &str,
    ) -> Result<Option<CrmRecord>, CrmError> {
        let (pronouns, job) = self.slots(ctx).await?;
        Ok(self
            .search_person(ctx, email)
            .await?
            .map(|p| Self::record(&p, pronouns.as_deref(), &job)))
    }

    #[tracing::instrument(name = "pipedrive.create", skip_all, fields(tenant = %ctx.tenant))]
    async fn create(
        &self,
        ctx: &CrmContext,
        fields: &ContactFields,
    ) -> Result<CrmRecord, CrmError> {
        let (pronouns, job) = self.slots(ctx).await?;
        let slots = Slots {
            pronouns: pronouns.as_deref(),
            job_title: Some(&job),
        };
        let body = mapping::create_body(fields, slots);
        let (status, resp) = self
            .call(Op::AddPerson, "/api/v2/persons", &[], Some(&body))
            .await?;
        if !status.is_success() {
            return Err(error_for(status, &resp));
        }
        let p = Self::person_from(&resp)?;
        self.remember(&ctx.tenant, &p);
        debug!(person = p.id, "Pipedrive person created");
        Ok(Self::record(&p, slots.pronouns, &job))
    }

    #[tracing::instrument(name = "pipedrive.update", skip_all, fields(tenant = %ctx.tenant))]
    async fn update(
        &self,
        ctx: &CrmContext,
        id: &str,
        patch: &FieldPatch,
    ) -> Result<CrmRecord, CrmError> {
        let id = person_id(id).ok_or_else(|| CrmError::Rejected {
            provider: P,
            status: 400,
            message: format!("{id:?} is not a Pipedrive person id"),
        })?;
        self.update_person(ctx, id, patch, None).await
    }

    #[tracing::instrument(name = "pipedrive.archive", skip_all, fields(tenant = %ctx.tenant))]
    async fn archive(&self, ctx: &CrmContext, id: &str) -> Result<(), CrmError> {
        let Some(id) = person_id(id) else {
            return Ok(());
        };
        let (status, body) = self
            .call(
                Op::DeletePerson,
                &format!("/api/v2/persons/{id}"),
                &[],
                None,
            )
            .await?;
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ctx.tenant.clone(), id));
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(()),
            s => Err(error_for(s, &body)),
        }
    }

    #[tracing::instrument(name = "pipedrive.get_many", skip_all, fields(tenant = %ctx.tenant, n = ids.len()))]
    async fn get_many(
        &self,
        ctx: &CrmContext,
        ids: &[String],
    ) -> Result<HashMap<String, CrmRecord>, CrmError> {
        self.persons_by_id(ctx, ids).await
    }

    /// Up to 100 persons in one listing by their ids.
    fn reads_in_batches(&self) -> bool {
        true
    }

    #[tracing::instrument(name = "pipedrive.find_many_by_email", skip_all, fields(tenant = %ctx.tenant, n = emails.len()))]
    async fn find_many_by_email(
        &self,
        ctx: &CrmContext,
        emails: &[String],
    ) -> Result<HashMap<String, CrmRecord>, CrmError> {
        self.find_persons_by_email(ctx, emails).await
    }

    async fn email_index(
        &self,
        ctx: &CrmContext,
        emails: &[String],
    ) -> Result<Option<HashMap<String, CrmRecord>>, CrmError> {
        self.persons_index(ctx, emails).await
    }

    async fn list_records(&self, ctx: &CrmContext, max: usize) -> Result<RecordListing, CrmError> {
        self.list_persons(ctx, max).await
    }

    fn daily_budget(&self) -> Option<u64> {
        self.budget.daily()
    }

    fn tokens_spent(&self) -> Option<u64> {
        Some(self.budget.tokens_spent())
    }

    #[tracing::instrument(name = "pipedrive.changed_since", skip_all, fields(tenant = %ctx.tenant))]
    async fn changed_since(
        &self,
        ctx: &CrmContext,
        cursor: Option<&str>,
    ) -> Result<ChangedRecords, CrmError> {
        self.persons_changed_since(ctx, cursor).await
    }

    /// A name goes as both halves (Pipedrive needs `name` or both `first_name` and
    /// `last_name`): a write of one sends the other back as read.
    fn echo_shows_what_a_write_replaced(&self) -> bool {
        true
    }

    fn fields_written(&self, patch: &FieldPatch, current: &ContactFields) -> FieldPatch {
        let mut out = patch.clone();
        if patch.contains(Field::FirstName) || patch.contains(Field::LastName) {
            for half in [Field::FirstName, Field::LastName] {
                if !out.contains(half) {
                    out.insert(half, current.get(half).map(str::to_owned));
                }
            }
        }
        out
    }

    fn custom_fields(&self) -> &'static [CustomField] {
        &[CustomField::Pronouns, CustomField::JobTitle]
    }

    #[tracing::instrument(name = "pipedrive.ensure_field", skip_all, fields(tenant = %ctx.tenant, field = field.as_str()))]
    async fn ensure_field(&self, ctx: &CrmContext, field: CustomField) -> Result<String, CrmError> {
        self.ensure_custom_field(ctx, field).await
    }

    #[tracing::instrument(name = "pipedrive.find_field", skip_all, fields(tenant = %ctx.tenant, field = field.as_str()))]
    async fn find_field(
        &self,
        ctx: &CrmContext,
        field: CustomField,
    ) -> Result<Option<String>, CrmError> {
        self.find_custom_field(ctx, field).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;
    use serde_json::json;

    #[test]
    fn error_mapping() {
        assert!(matches!(
            error_for(
                StatusCode::UNAUTHORIZED,
                &json!({"success": false, "error": "unauthorized access", "errorCode": 401})
            ),
            CrmError::Auth { .. }
        ));
        let e = error_for(
            StatusCode::BAD_REQUEST,
            &json!({"success": false, "error": "Validation failed", "error_info": "see docs", "data": null}),
        );
        assert!(!e.is_transient());
        assert!(
            e.to_string().contains("Validation failed (see docs)"),
            "{e}"
        );
        assert!(error_for(StatusCode::SERVICE_UNAVAILABLE, &Value::Null).is_transient());
        // Cloudflare's HTML 403 after sustained 429s: back off, it is not an auth problem.
        let e = error_for(StatusCode::FORBIDDEN, &json!("<html>blocked</html>"));
        assert!(matches!(e, CrmError::RateLimited { .. }));
        let e = error_for(
            StatusCode::FORBIDDEN,
            &json!({"success": false, "error": "Couldn't add", "code": "feature_capping_deals_limit"}),
        );
        assert!(matches!(e, CrmError::Auth { .. }));
    }

    #[test]
    fn costs_come_from_the_table() {
        assert_eq!(Op::ListPersons.cost(), 10);
        assert_eq!(Op::GetPerson.cost(), 1);
        assert_eq!(Op::UpdatePerson.cost(), 5);
        assert_eq!(Op::SearchPersons.cost(), 20);
        assert_eq!(Op::CurrentUser.cost(), 2);
        assert_eq!(Op::UpdatePerson.method(), Method::PATCH);
    }

    #[test]
    fn poll_times_have_no_fractions() {
        assert_eq!(rfc3339_secs(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(person_id("42"), Some(42));
        assert_eq!(person_id("0"), None);
        assert_eq!(person_id("12/../x"), None);
    }
}
