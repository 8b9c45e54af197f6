//! Pipedrive client: the [`CrmClient`] port over Pipedrive's v2 persons and person-fields APIs
//! (plus the v1 endpoints without a v2 twin: `/users/me`, `/webhooks`), with burst pacing,
//! token-cost accounting against the daily budget, 429 handling and OAuth refresh.
//!
//! Paths are built on the company domain root (`https://acme.pipedrive.com`, or the OAuth
//! token's `api_domain`): `/api/v2/...` and `/api/v1/...`.

pub mod mapping;
pub mod settings;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Mutex as AsyncMutex, OnceCell};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::mapping::{Person, STANDARD_JOB_TITLE, Slots};
use super::pacer::{QuotaLatch, RollingWindow, next_midnight_utc};
use crate::domain::{ContactFields, CrmRecord, CustomField, FieldPatch, Provider, TenantId};
use crate::error::CrmError;
use crate::ports::{ChangedRecord, ChangedRecords, CrmClient, CrmContext};

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
const RECENT_TTL: Duration = Duration::from_secs(10);
const RECENT_CAP: usize = 2048;
const P: Provider = Provider::Pipedrive;

/// Token cost (`x-token-cost` in the official specs) of every operation the client uses.
pub const TOKEN_COSTS: &[(&str, u64)] = &[
    ("getPersons", 10),
    ("getPerson", 1),
    ("addPerson", 5),
    ("updatePerson", 5),
    ("deletePerson", 3),
    ("searchPersons", 20),
    ("getPersonFields", 10),
    ("addPersonField", 5),
    ("getCurrentUser", 2),
    ("getWebhooks", 10),
    ("addWebhook", 10),
    ("deleteWebhook", 6),
];

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

/// The API user the client acts as (`GET /v1/users/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnUser {
    pub id: u64,
    pub company_id: u64,
    pub company_domain: Option<String>,
}

/// Outcome of [`PipedriveClient::ensure_webhook`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRegistration {
    pub webhook_id: u64,
    /// False when a matching webhook existed already.
    pub created: bool,
    /// Outdated webhooks to our URL (other credentials or version) that were removed.
    pub removed: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ListPersons,
    GetPerson,
    AddPerson,
    UpdatePerson,
    DeletePerson,
    SearchPersons,
    ListFields,
    AddField,
    CurrentUser,
    ListWebhooks,
    AddWebhook,
    DeleteWebhook,
}

impl Op {
    fn operation_id(self) -> &'static str {
        match self {
            Op::ListPersons => "getPersons",
            Op::GetPerson => "getPerson",
            Op::AddPerson => "addPerson",
            Op::UpdatePerson => "updatePerson",
            Op::DeletePerson => "deletePerson",
            Op::SearchPersons => "searchPersons",
            Op::ListFields => "getPersonFields",
            Op::AddField => "addPersonField",
            Op::CurrentUser => "getCurrentUser",
            Op::ListWebhooks => "getWebhooks",
            Op::AddWebhook => "addWebhook",
            Op::DeleteWebhook => "deleteWebhook",
        }
    }

    fn cost(self) -> u64 {
        let id = self.operation_id();
        TOKEN_COSTS
            .iter()
            .find(|(op, _)| *op == id)
            .map_or(20, |(_, c)| *c)
    }

    fn method(self) -> Method {
        match self {
            Op::AddPerson | Op::AddField | Op::AddWebhook => Method::POST,
            Op::UpdatePerson => Method::PATCH,
            Op::DeletePerson | Op::DeleteWebhook => Method::DELETE,
            _ => Method::GET,
        }
    }
}

struct CachedToken {
    access_token: String,
    expires_at: DateTime<Utc>,
    api_domain: Option<String>,
}

#[derive(Default)]
struct Ledger {
    day: Option<NaiveDate>,
    /// Tokens spent today as far as we know (our own costs, or the server's count when its
    /// headers say more).
    spent: u64,
    /// The server's `x-daily-ratelimit-token-remaining` from the last answer.
    server_remaining: Option<u64>,
}

impl Ledger {
    fn roll(&mut self, today: NaiveDate) {
        if self.day != Some(today) {
            *self = Ledger {
                day: Some(today),
                ..Default::default()
            };
        }
    }
}

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

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
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
    http: reqwest::Client,
    burst: RollingWindow,
    search: RollingWindow,
    quota: QuotaLatch,
    ledger: Mutex<Ledger>,
    token: AsyncMutex<Option<CachedToken>>,
    /// The current refresh token (Pipedrive may rotate it).
    refresh_token: Mutex<Option<String>>,
    own_user: OnceCell<OwnUser>,
    /// Job title field keys found or created per tenant; the lock also serialises field creation.
    fields: AsyncMutex<HashMap<TenantId, String>>,
    recent: Mutex<HashMap<(TenantId, u64), (Instant, Person)>>,
    stats: Mutex<PipedriveClientStats>,
}

impl PipedriveClient {
    pub fn new(cfg: PipedriveClientConfig, http: reqwest::Client) -> Self {
        let refresh = match &cfg.auth {
            PipedriveAuth::OAuth { refresh_token, .. } => Some(refresh_token.clone()),
            _ => None,
        };
        Self {
            burst: RollingWindow::new(cfg.burst_per_2s, Duration::from_secs(2)),
            search: RollingWindow::new(cfg.search_per_2s, Duration::from_secs(2)),
            quota: QuotaLatch::default(),
            ledger: Mutex::new(Ledger::default()),
            token: AsyncMutex::new(None),
            refresh_token: Mutex::new(refresh),
            own_user: OnceCell::new(),
            fields: AsyncMutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
            stats: Default::default(),
            cfg,
            http,
        }
    }

    pub fn stats(&self) -> PipedriveClientStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn bump(&self, f: impl FnOnce(&mut PipedriveClientStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The current OAuth refresh token (persist it when Pipedrive rotated it).
    pub fn current_refresh_token(&self) -> Option<String> {
        self.refresh_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Base URL and auth header for the next request; OAuth tokens are refreshed a minute
    /// before expiry, concurrent callers sharing one refresh.
    async fn credentials(&self) -> Result<(String, (&'static str, String)), CrmError> {
        let (client_id, client_secret, token_url) = match &self.cfg.auth {
            PipedriveAuth::ApiToken(t) => {
                return Ok((self.cfg.api_base.clone(), ("x-api-token", t.clone())));
            }
            PipedriveAuth::Bearer(t) => {
                return Ok((
                    self.cfg.api_base.clone(),
                    ("authorization", format!("Bearer {t}")),
                ));
            }
            PipedriveAuth::OAuth {
                client_id,
                client_secret,
                token_url,
                ..
            } => (client_id, client_secret, token_url),
        };
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && t.expires_at - chrono::Duration::seconds(60) > Utc::now()
        {
            let base = t.api_domain.clone().unwrap_or(self.cfg.api_base.clone());
            return Ok((
                base,
                ("authorization", format!("Bearer {}", t.access_token)),
            ));
        }
        let refresh = self.current_refresh_token().unwrap_or_default();
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ];
        let resp = self
            .http
            .post(token_url)
            .basic_auth(client_id, Some(client_secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| CrmError::Unavailable {
                provider: P,
                message: format!("token refresh: {e}"),
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
        let base = api_domain.clone().unwrap_or(self.cfg.api_base.clone());
        *cached = Some(CachedToken {
            access_token: access_token.clone(),
            expires_at: Utc::now() + chrono::Duration::seconds(expires_in),
            api_domain,
        });
        self.bump(|s| s.token_refreshes += 1);
        Ok((base, ("authorization", format!("Bearer {access_token}"))))
    }

    /// Refuses a call that the daily budget cannot pay for.
    fn admit(&self, op: Op) -> Result<(), CrmError> {
        if let Some(until) = self.quota.spent_until() {
            return Err(CrmError::QuotaExhausted { provider: P, until });
        }
        let now = Utc::now();
        let mut l = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        l.roll(now.date_naive());
        let over_ours = self
            .cfg
            .daily_token_budget
            .is_some_and(|b| l.spent + op.cost() > b);
        let over_server = l.server_remaining.is_some_and(|r| r < op.cost());
        if over_ours || over_server {
            let until = next_midnight_utc(now);
            self.quota.set(until);
            warn!(
                spent = l.spent,
                "Pipedrive daily token budget spent; pausing until {until}"
            );
            return Err(CrmError::QuotaExhausted { provider: P, until });
        }
        Ok(())
    }

    /// Counts an admitted request against the day and reads the budget headers.
    fn charge(&self, op: Op, headers: &HeaderMap) {
        let remaining = header_u64(headers, "x-daily-ratelimit-token-remaining");
        let limit = header_u64(headers, "x-daily-ratelimit-token-limit");
        {
            let mut l = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
            l.roll(Utc::now().date_naive());
            l.spent += op.cost();
            if let (Some(limit), Some(rem)) = (limit, remaining) {
                l.spent = l.spent.max(limit.saturating_sub(rem));
            }
            if remaining.is_some() {
                l.server_remaining = remaining;
            }
        }
        self.bump(|s| s.tokens_spent += op.cost());
        if remaining == Some(0) {
            let until = next_midnight_utc(Utc::now());
            self.quota.set(until);
            warn!("Pipedrive reports the daily token budget spent; pausing until {until}");
        }
        if header_u64(headers, "x-ratelimit-remaining") == Some(0) {
            // Someone else shares the token's window: wait for it to roll.
            let reset = header_u64(headers, "x-ratelimit-reset")
                .unwrap_or(2)
                .min(60);
            self.burst.back_off(Duration::from_secs(reset));
        }
    }

    /// Sends one request, pacing it and riding out burst 429s. Returns status and JSON body
    /// (`Null` when empty, a string when not JSON).
    async fn call(
        &self,
        op: Op,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), CrmError> {
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            self.admit(op)?;
            // Held until the answer is read: the windows count from then.
            let _search = if op == Op::SearchPersons {
                Some(self.search.acquire().await)
            } else {
                None
            };
            let _slot = self.burst.acquire().await;
            let (base, (auth_name, auth_value)) = self.credentials().await?;
            let mut req = self
                .http
                .request(op.method(), format!("{base}{path}"))
                .header(auth_name, auth_value)
                .header(reqwest::header::ACCEPT, "application/json")
                .query(query);
            if let Some(b) = body {
                req = req.json(b);
            }
            self.bump(|s| s.requests += 1);
            let resp = req.send().await.map_err(|e| CrmError::Unavailable {
                provider: P,
                message: e.without_url().to_string(),
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.map_err(|e| CrmError::Unavailable {
                provider: P,
                message: e.without_url().to_string(),
            })?;
            let json: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            debug!(op = op.operation_id(), %status, "Pipedrive call");
            if status != StatusCode::TOO_MANY_REQUESTS {
                self.charge(op, &headers);
                if status == StatusCode::UNAUTHORIZED
                    && matches!(self.cfg.auth, PipedriveAuth::OAuth { .. })
                    && !reauthenticated
                {
                    // The access token was revoked or expired early: refresh once.
                    reauthenticated = true;
                    *self.token.lock().await = None;
                    continue;
                }
                return Ok((status, json));
            }
            self.bump(|s| s.rate_limited += 1);
            let daily_left = header_u64(&headers, "x-daily-ratelimit-token-remaining");
            let says_daily = error_message(&json).to_lowercase().contains("daily");
            if says_daily || daily_left.is_some_and(|r| r < op.cost()) {
                let until = next_midnight_utc(Utc::now());
                self.quota.set(until);
                warn!(
                    op = op.operation_id(),
                    "Pipedrive daily token budget spent (429); pausing until {until}"
                );
                return Err(CrmError::QuotaExhausted { provider: P, until });
            }
            let wait = Duration::from_secs(
                header_u64(&headers, "x-ratelimit-reset")
                    .unwrap_or(2)
                    .clamp(1, 60),
            );
            attempt += 1;
            if attempt > self.cfg.max_rate_limit_retries {
                return Err(CrmError::RateLimited {
                    provider: P,
                    retry_after: wait,
                });
            }
            let jitter = Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_bytes()[0]));
            debug!(
                op = op.operation_id(),
                ?wait,
                attempt,
                "Pipedrive burst limit hit; waiting"
            );
            if op == Op::SearchPersons {
                self.search.back_off(wait + jitter);
            }
            self.burst.back_off(wait + jitter);
        }
    }

    fn remember(&self, tenant: &TenantId, p: &Person) {
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

    fn person_from(body: &Value) -> Result<Person, CrmError> {
        Person::from_json(&body["data"]).ok_or_else(|| shape_error("person"))
    }

    async fn get_person(&self, ctx: &CrmContext, id: u64) -> Result<Option<Person>, CrmError> {
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

    /// All person fields (`GET /api/v2/personFields`, every page).
    async fn list_fields(&self) -> Result<Vec<Value>, CrmError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut query = vec![("limit", MAX_PAGE.to_string())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let (status, body) = self
                .call(Op::ListFields, "/api/v2/personFields", &query, None)
                .await?;
            if status != StatusCode::OK {
                return Err(error_for(status, &body));
            }
            out.extend(body["data"].as_array().cloned().unwrap_or_default());
            match body["additional_data"]["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    fn custom_field_named<'a>(fields: &'a [Value], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .filter(|f| f["is_custom_field"].as_bool() != Some(false))
            .find(|f| {
                f["field_name"]
                    .as_str()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
            })
            .and_then(|f| f["field_code"].as_str())
    }

    fn job_title_in(fields: &[Value]) -> Option<String> {
        let standard = fields.iter().any(|f| {
            f["field_code"].as_str() == Some(STANDARD_JOB_TITLE)
                && f["is_custom_field"].as_bool() != Some(true)
        });
        if standard {
            return Some(STANDARD_JOB_TITLE.to_string());
        }
        Self::custom_field_named(fields, JOB_TITLE_FIELD).map(str::to_owned)
    }

    async fn create_field(&self, name: &str) -> Result<String, CrmError> {
        let body = json!({"field_name": name, "field_type": "varchar"});
        let (status, body) = self
            .call(Op::AddField, "/api/v2/personFields", &[], Some(&body))
            .await?;
        if !status.is_success() {
            return Err(error_for(status, &body));
        }
        body["data"]["field_code"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| shape_error("person field"))
    }

    /// Where job titles live for this tenant: the standard `job_title` field when the account
    /// has it (contact sync set up), else our `job_title` custom field, created when missing.
    /// The answer is cached per tenant; store it (field-key map) so that `CrmContext` carries
    /// it and no lookup is needed after a restart.
    async fn ensure_job_title_field(&self, ctx: &CrmContext) -> Result<String, CrmError> {
        if let Some(k) = ctx.field(CustomField::JobTitle) {
            return Ok(k.to_string());
        }
        let mut known = self.fields.lock().await;
        if let Some(k) = known.get(&ctx.tenant) {
            return Ok(k.clone());
        }
        let fields = self.list_fields().await?;
        let key = match Self::job_title_in(&fields) {
            Some(k) => k,
            None => {
                let k = self.create_field(JOB_TITLE_FIELD).await?;
                info!(tenant = %ctx.tenant, key = %k, "created the Pipedrive job_title person field");
                k
            }
        };
        known.insert(ctx.tenant.clone(), key.clone());
        Ok(key)
    }

    async fn slots(&self, ctx: &CrmContext) -> Result<(Option<String>, String), CrmError> {
        let job = self.ensure_job_title_field(ctx).await?;
        Ok((ctx.field(CustomField::Pronouns).map(str::to_owned), job))
    }

    fn record(p: &Person, pronouns: Option<&str>, job: &str) -> CrmRecord {
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

    /// The oldest live person having `email` (exact, case-insensitive search + a read).
    async fn search_person(
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
        for id in ids {
            if let Some(p) = self.get_person(ctx, id).await?
                && !p.is_deleted
                && p.has_email(&email)
            {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    async fn update_person(
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

    /// The user the credentials belong to (`GET /v1/users/me`), fetched once and cached.
    pub async fn own_user(&self) -> Result<OwnUser, CrmError> {
        self.own_user
            .get_or_try_init(|| async {
                let (status, body) = self
                    .call(Op::CurrentUser, "/api/v1/users/me", &[], None)
                    .await?;
                if status != StatusCode::OK {
                    return Err(error_for(status, &body));
                }
                let d = &body["data"];
                Ok(OwnUser {
                    id: mapping::parse_id(&d["id"]).ok_or_else(|| shape_error("user"))?,
                    company_id: mapping::parse_id(&d["company_id"])
                        .ok_or_else(|| shape_error("user"))?,
                    company_domain: d["company_domain"].as_str().map(str::to_owned),
                })
            })
            .await
            .cloned()
    }

    /// Makes sure one webhooks-v2 subscription for all person events points at
    /// `subscription_url` with these Basic auth credentials. Idempotent: lists first, keeps a
    /// matching webhook, replaces outdated ones to the same URL, creates one only when none
    /// matches.
    pub async fn ensure_webhook(
        &self,
        subscription_url: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<WebhookRegistration, CrmError> {
        let (status, body) = self
            .call(Op::ListWebhooks, "/api/v1/webhooks", &[], None)
            .await?;
        if status != StatusCode::OK {
            return Err(error_for(status, &body));
        }
        let same_url: Vec<&Value> = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["subscription_url"].as_str() == Some(subscription_url))
            .collect();
        let matches = |w: &Value| {
            let s = |k: &str| w[k].as_str();
            matches!(s("event_object"), Some("person" | "*"))
                && s("event_action") == Some("*")
                && s("version") == Some("2.0")
                && s("http_auth_user") == user
                // The password is only compared when the API shows it.
                && (w["http_auth_password"].is_null() || s("http_auth_password") == password)
                && w["is_active"].as_u64().is_none_or(|a| a != 0)
        };
        if let Some(w) = same_url.iter().find(|w| matches(w)) {
            let id = mapping::parse_id(&w["id"]).ok_or_else(|| shape_error("webhook"))?;
            return Ok(WebhookRegistration {
                webhook_id: id,
                created: false,
                removed: 0,
            });
        }
        let mut removed = 0;
        for w in same_url {
            if let Some(id) = mapping::parse_id(&w["id"]) {
                let (status, body) = self
                    .call(
                        Op::DeleteWebhook,
                        &format!("/api/v1/webhooks/{id}"),
                        &[],
                        None,
                    )
                    .await?;
                if status.is_success() || status == StatusCode::NOT_FOUND {
                    removed += 1;
                } else {
                    return Err(error_for(status, &body));
                }
            }
        }
        let mut req = json!({
            "subscription_url": subscription_url,
            "event_action": "*",
            "event_object": "person",
            "name": WEBHOOK_NAME,
            "version": "2.0",
        });
        if let Some(u) = user {
            req["http_auth_user"] = json!(u);
            req["http_auth_password"] = json!(password.unwrap_or(""));
        }
        let (status, body) = self
            .call(Op::AddWebhook, "/api/v1/webhooks", &[], Some(&req))
            .await?;
        if !status.is_success() {
            return Err(error_for(status, &body));
        }
        let id = mapping::parse_id(&body["data"]["id"]).ok_or_else(|| shape_error("webhook"))?;
        Ok(WebhookRegistration {
            webhook_id: id,
            created: true,
            removed,
        })
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

    /// Backfill: looks the emails up by listing persons (10 tokens per 500) while that is
    /// cheaper than searching each email (20 tokens), then creates what is missing and writes
    /// only the fields that differ on persons that exist (Pipedrive has no batch endpoint).
    #[tracing::instrument(name = "pipedrive.upsert_many", skip_all, fields(tenant = %ctx.tenant, n = records.len()))]
    async fn upsert_many(
        &self,
        ctx: &CrmContext,
        records: &[ContactFields],
    ) -> Result<Vec<Result<CrmRecord, CrmError>>, CrmError> {
        let (pronouns, job) = self.slots(ctx).await?;
        let slots = Slots {
            pronouns: pronouns.as_deref(),
            job_title: Some(&job),
        };
        let wanted: HashSet<String> = records
            .iter()
            .filter_map(|f| f.email.as_deref())
            .map(|e| e.trim().to_lowercase())
            .collect();
        let mut index: HashMap<String, Person> = HashMap::new();
        let mut complete = false;
        let mut cursor: Option<String> = None;
        let mut pages = 0u64;
        loop {
            let unresolved = wanted.iter().filter(|e| !index.contains_key(*e)).count() as u64;
            if unresolved == 0
                || (pages + 1) * Op::ListPersons.cost() > unresolved * Op::SearchPersons.cost()
            {
                break;
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
                    if wanted.contains(&key) && index.get(&key).is_none_or(|q| q.id > p.id) {
                        index.insert(key, p.clone());
                    }
                }
            }
            match next {
                Some(c) => cursor = Some(c),
                None => {
                    complete = true;
                    break;
                }
            }
        }
        let mut out = Vec::with_capacity(records.len());
        for fields in records {
            let email = fields.email.as_deref().map(|e| e.trim().to_lowercase());
            let existing = match &email {
                Some(e) if index.contains_key(e) => Ok(index.get(e).cloned()),
                Some(e) if !complete => self.search_person(ctx, e).await,
                _ => Ok(None),
            };
            let result = match existing {
                Err(e) => Err(e),
                Ok(Some(p)) => {
                    let current = mapping::to_fields(&p, slots);
                    let patch = mapping::diff_patch(&current, fields, slots);
                    if patch.is_empty() {
                        Ok(Self::record(&p, slots.pronouns, &job))
                    } else {
                        self.update_person(ctx, p.id, &patch, Some(p)).await
                    }
                }
                Ok(None) => self.create(ctx, fields).await,
            };
            if let (Some(e), Ok(r)) = (&email, &result)
                && let Some(id) = person_id(&r.id)
                && !index.contains_key(e)
                && let Some(p) = self.recall(&ctx.tenant, id)
            {
                index.insert(e.clone(), p);
            }
            out.push(result);
        }
        Ok(out)
    }

    /// Persons with `update_time >= since` in `update_time` order, `MAX_PAGE` per page. Within
    /// a pass the Pipedrive cursor pages (equal timestamps neither loop nor drop); the next pass
    /// starts at the newest `update_time` seen, inclusive, in whole seconds.
    #[tracing::instrument(name = "pipedrive.changed_since", skip_all, fields(tenant = %ctx.tenant))]
    async fn changed_since(
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

    fn custom_fields(&self) -> &'static [CustomField] {
        &[CustomField::Pronouns, CustomField::JobTitle]
    }

    #[tracing::instrument(name = "pipedrive.ensure_field", skip_all, fields(tenant = %ctx.tenant, field = field.as_str()))]
    async fn ensure_field(&self, ctx: &CrmContext, field: CustomField) -> Result<String, CrmError> {
        if field == CustomField::JobTitle {
            return self.ensure_job_title_field(ctx).await;
        }
        // Under the fields lock: two setups at once must not create two fields.
        let mut known = self.fields.lock().await;
        let fields = self.list_fields().await?;
        if ctx.field(CustomField::JobTitle).is_none()
            && !known.contains_key(&ctx.tenant)
            && let Some(k) = Self::job_title_in(&fields)
        {
            known.insert(ctx.tenant.clone(), k);
        }
        if let Some(k) = Self::custom_field_named(&fields, PRONOUNS_FIELD) {
            return Ok(k.to_string());
        }
        let key = self.create_field(PRONOUNS_FIELD).await?;
        info!(tenant = %ctx.tenant, key = %key, "created the Pipedrive pronouns person field");
        Ok(key)
    }

    #[tracing::instrument(name = "pipedrive.find_field", skip_all, fields(tenant = %ctx.tenant, field = field.as_str()))]
    async fn find_field(
        &self,
        ctx: &CrmContext,
        field: CustomField,
    ) -> Result<Option<String>, CrmError> {
        let fields = self.list_fields().await?;
        Ok(match field {
            CustomField::Pronouns => {
                Self::custom_field_named(&fields, PRONOUNS_FIELD).map(str::to_owned)
            }
            CustomField::JobTitle => Self::job_title_in(&fields),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn ledger_rolls_over_at_midnight() {
        let mut l = Ledger::default();
        let d1 = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        l.roll(d1);
        l.spent = 500;
        l.server_remaining = Some(3);
        l.roll(d1);
        assert_eq!(l.spent, 500);
        l.roll(d1.succ_opt().unwrap());
        assert_eq!((l.spent, l.server_remaining), (0, None));
    }
}
