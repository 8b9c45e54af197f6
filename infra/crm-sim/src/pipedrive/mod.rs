//! Stateful simulator of the Pipedrive API parts that contact sync uses.
//!
//! API routes (all behind token auth, burst/daily limits and spec token costs):
//!
//! | Route | operationId | tokens |
//! |---|---|---|
//! | `GET /api/v2/persons` | getPersons | 10 |
//! | `POST /api/v2/persons` | addPerson | 5 |
//! | `GET /api/v2/persons/search` | searchPersons | 20 |
//! | `GET /api/v2/persons/{id}` | getPerson | 1 |
//! | `PATCH /api/v2/persons/{id}` | updatePerson | 5 |
//! | `DELETE /api/v2/persons/{id}` | deletePerson | 3 |
//! | `GET /api/v2/personFields` | getPersonFields | 10 |
//! | `POST /api/v2/personFields` | addPersonField | 5 |
//! | `GET /api/v2/personFields/{field_code}` | getPersonField | 1 |
//! | `DELETE /api/v2/personFields/{field_code}` | deletePersonField | 3 |
//! | `PUT /api/v1/persons/{id}/merge` | mergePersons | 40 |
//! | `GET /api/v1/persons/{id}/changelog` | getPersonChangelog | 20 |
//! | `GET /api/v1/users/me` | getCurrentUser | 2 |
//! | `GET /api/v1/webhooks` | getWebhooks | 10 |
//! | `POST /api/v1/webhooks` | addWebhook | 10 |
//! | `DELETE /api/v1/webhooks/{id}` | deleteWebhook | 6 |
//!
//! Control routes (no auth, no cost, not logged) live under `/_sim/pipedrive/`:
//!
//! | Route | Effect |
//! |---|---|
//! | `GET /_sim/pipedrive/persons` | every stored person, deleted ones included (v2 shape) |
//! | `POST /_sim/pipedrive/persons` | create as a web-app user (v2 body); webhooks with `change_source: app` |
//! | `GET /_sim/pipedrive/persons/{id}` | one stored person (deleted included) |
//! | `PATCH /_sim/pipedrive/persons/{id}` | edit as a web-app user (v2 body) |
//! | `DELETE /_sim/pipedrive/persons/{id}` | delete as a web-app user |
//! | `POST /_sim/pipedrive/persons/{id}/merge` | `{"merge_with_id": N}`: merge `id` into `N` as a web-app user |
//! | `GET /_sim/pipedrive/stats` | [`PipedriveStats`] |
//! | `POST /_sim/pipedrive/stats/reset` | zero the counters |
//! | `POST /_sim/pipedrive/outage` | `{"down": bool}`: every API path answers 503 while down |
//! | `POST /_sim/pipedrive/webhooks` | `{"enabled": bool}`: while disabled, events are dropped (missed webhooks) |
//! | `POST /_sim/pipedrive/reset-day` | simulated midnight: daily token budget starts again |
//! | `PUT /_sim/pipedrive/config/rate-limit` | `{"burst_limit", "oauth_burst_limit", "search_burst_limit", "daily_token_budget"}` (number, or null = unlimited; absent = unchanged) |
//! | `POST /_sim/pipedrive/clock` | `{"advance_seconds": N}`: move the simulated clock |
//! | `GET`/`DELETE /_sim/pipedrive/requests` | the API request log ([`RequestRecord`]) / clear it |
//! | `GET /_sim/pipedrive/webhook-deliveries` | every delivery attempt ([`WebhookDeliveryRecord`]) |
//! | `GET`/`POST /_sim/pipedrive/fields` | all person fields / create a custom field without cost (v2 body) |

mod api;
mod changelog;
mod control;
mod gate;
mod model;
mod store;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::middleware;
use axum::routing::{any, delete, get, put};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use store::{Actor, Limits, OpError, State, Webhook};
use webhooks::{Job, JobSender, PersonEvent, Target};

/// Error text of the `try_ui_*` methods when the person does not exist (or is deleted).
pub const NOT_FOUND_MSG: &str = "person not found";

/// Configuration of the Pipedrive simulator.
#[derive(Debug, Clone)]
pub struct PipedriveConfig {
    /// API tokens accepted in the `x-api-token` header (or the legacy `api_token` query
    /// parameter). All of them belong to `api_user_id`.
    pub api_tokens: Vec<String>,
    /// OAuth access tokens accepted as `Authorization: Bearer <token>` (also `api_user_id`).
    pub oauth_tokens: Vec<String>,
    /// Company (account) id; webhook `meta.company_id`, `/users/me` `company_id`.
    pub company_id: u64,
    /// Company domain, e.g. `sim-company` (webhook `meta.host` is `<domain>.pipedrive.com`).
    pub company_domain: String,
    /// Company name returned by `/api/v1/users/me`.
    pub company_name: String,
    /// The user the API/OAuth tokens belong to (`/api/v1/users/me` `id`; `meta.user_id` of
    /// webhooks caused by API writes).
    pub api_user_id: u64,
    /// Name of the API user.
    pub api_user_name: String,
    /// Email of the API user.
    pub api_user_email: String,
    /// The web-app user behind `/_sim/pipedrive/persons` edits (`change_source: app`).
    pub ui_user_id: u64,
    /// When set, a webhook for all events (version 2.0) is registered at start, as if an admin
    /// had created it in the web app. It shows up in `GET /api/v1/webhooks`.
    pub webhook_url: Option<String>,
    /// HTTP Basic auth user sent with deliveries to `webhook_url`.
    pub webhook_user: Option<String>,
    /// HTTP Basic auth password sent with deliveries to `webhook_url`.
    pub webhook_password: Option<String>,
    /// Delays before the retries of a failed delivery (real: 3 s, 30 s, 150 s).
    pub webhook_retry_delays_ms: Vec<u64>,
    /// A delivery that gets no answer within this time failed (real: 10 s).
    pub webhook_timeout_ms: u64,
    /// Requests per rolling 2-second window per API token (Essential/Lite plan: 20).
    /// `None` = unlimited.
    pub burst_limit: Option<u32>,
    /// Requests per rolling 2-second window per OAuth token (Essential/Lite plan: 80).
    pub oauth_burst_limit: Option<u32>,
    /// Search requests per rolling 2-second window (10 on every plan).
    pub search_burst_limit: Option<u32>,
    /// Tokens per simulated day for the whole company (30,000 × multiplier × seats; default
    /// one seat on the base plan). Resets at simulated UTC midnight or through `reset_day`.
    pub daily_token_budget: Option<u64>,
    /// Whether answers carry the `x-daily-ratelimit-token-*` headers. Pipedrive's docs do not
    /// list them (third parties read them, and report them missing at times): with `false` a
    /// client has only the documented burst headers to go by.
    pub daily_token_headers: bool,
    /// Whether the company has contact sync set up, which creates the `notes`, `im`,
    /// `birthday`, `job_title` and `postal_address` person fields. Off by default, as in a
    /// fresh Pipedrive account: sending those fields is then a 400.
    pub contact_sync_fields: bool,
    /// Typical lag of the search index behind a person's create or update, in ms (each write
    /// shows after 0.25 to 1.75 times this, so a person written later can be found sooner):
    /// until then search misses a new person and matches an updated one by its earlier
    /// values. 0 = at once.
    pub search_index_lag_ms: u64,
    /// Where timestamps, the search index's lag and the day come from.
    pub clock: crate::SimClock,
}

impl Default for PipedriveConfig {
    fn default() -> Self {
        Self {
            api_tokens: vec!["sim-pipedrive-token".into()],
            oauth_tokens: Vec::new(),
            company_id: 7001,
            company_domain: "sim-company".into(),
            company_name: "Simulated Company".into(),
            api_user_id: 9001,
            api_user_name: "Sync Integration".into(),
            api_user_email: "integration@sim-company.example".into(),
            ui_user_id: 9002,
            webhook_url: None,
            webhook_user: None,
            webhook_password: None,
            webhook_retry_delays_ms: vec![3_000, 30_000, 150_000],
            webhook_timeout_ms: 10_000,
            burst_limit: Some(20),
            oauth_burst_limit: Some(80),
            search_burst_limit: Some(10),
            daily_token_budget: Some(30_000),
            daily_token_headers: true,
            contact_sync_fields: false,
            search_index_lag_ms: 1_000,
            clock: crate::SimClock::default(),
        }
    }
}

/// Rate limits that can be changed while the simulator runs (`None` = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub burst_limit: Option<u32>,
    pub oauth_burst_limit: Option<u32>,
    pub search_burst_limit: Option<u32>,
    pub daily_token_budget: Option<u64>,
}

/// Counters since start (or the last `reset_stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipedriveStats {
    /// API requests received (any outcome, including 401/429/503).
    pub requests: u64,
    /// Admitted POST/PUT/PATCH/DELETE API requests.
    pub write_calls: u64,
    /// Tokens charged (spec `x-token-cost` of every admitted request).
    pub tokens_used: u64,
    /// Tokens charged in the current simulated day (what the daily budget is checked against).
    pub daily_tokens_used: u64,
    /// Tokens per `"METHOD /route"`, e.g. `"GET /api/v2/persons"`.
    pub tokens_by_endpoint: BTreeMap<String, u64>,
    /// Admitted calls per `"METHOD /route"`.
    pub calls_by_endpoint: BTreeMap<String, u64>,
    /// Requests answered 429 (burst or daily).
    pub rate_limited: u64,
    /// Of those, the ones refused because the daily budget was spent.
    pub daily_limited: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// Successful (2xx) webhook deliveries.
    pub webhook_deliveries: u64,
    /// Delivery attempts, retries included.
    pub webhook_attempts: u64,
    /// Failed delivery attempts (non-2xx, timeout, connection error).
    pub webhook_failures: u64,
    /// Jobs that failed on every attempt.
    pub webhook_gave_up: u64,
    /// Events dropped while webhooks were disabled (one per event and matching webhook).
    pub webhooks_dropped: u64,
    /// Deliveries (one per event and webhook) queued, being attempted or waiting for a retry:
    /// zero when every change made so far has reached its receivers or been given up.
    #[serde(default)]
    pub webhook_jobs_pending: u64,
}

/// One API request as received (the simulator's request log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    /// Path without the query string, e.g. `/api/v2/persons/5`.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// The body, when it was JSON.
    pub body: Option<Value>,
    /// The body, when it was present but not JSON.
    pub raw_body: Option<String>,
    /// The spec `operationId` (`None` for unknown paths).
    pub operation_id: Option<String>,
    /// How the request authenticated (`x-api-token`, `api_token query`, `oauth bearer`).
    pub auth: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
    /// Simulated time of receipt (RFC 3339, milliseconds).
    pub time: String,
}

/// One webhook delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDeliveryRecord {
    pub webhook_id: u64,
    pub url: String,
    /// `meta.id` of the event (same for all attempts).
    pub event_id: String,
    pub action: String,
    pub entity_id: u64,
    /// 1 = first attempt, 2.. = retries.
    pub attempt: u32,
    pub ok: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub payload: Value,
    pub time: String,
}

/// At most this many entries are kept in the request log and in the webhook log (oldest
/// dropped first), so long local runs do not grow without bound.
pub const LOG_CAPACITY: usize = 50_000;

/// Appends to a bounded log.
pub(crate) fn push_bounded<T>(log: &mut Vec<T>, item: T) {
    if log.len() >= LOG_CAPACITY {
        let excess = log.len() + 1 - LOG_CAPACITY;
        log.drain(..excess.max(LOG_CAPACITY / 10));
    }
    log.push(item);
}

pub(crate) struct Core {
    pub cfg: PipedriveConfig,
    pub state: Mutex<State>,
    pub http: reqwest::Client,
}

impl Core {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    core: Arc<Core>,
    tx: Mutex<Option<JobSender>>,
}

/// Handle to one simulated Pipedrive company. Cheap to clone.
#[derive(Clone)]
pub struct PipedriveSim {
    inner: Arc<Inner>,
}

impl Default for PipedriveSim {
    fn default() -> Self {
        Self::new(PipedriveConfig::default())
    }
}

impl std::fmt::Debug for PipedriveSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipedriveSim")
            .field("company_id", &self.core().cfg.company_id)
            .finish_non_exhaustive()
    }
}

impl PipedriveSim {
    pub fn new(config: PipedriveConfig) -> Self {
        let limits = Limits {
            burst: config.burst_limit,
            oauth_burst: config.oauth_burst_limit,
            search_burst: config.search_burst_limit,
            daily_budget: config.daily_token_budget,
            token_headers: config.daily_token_headers,
        };
        let mut state = State::new(limits);
        state.clock = config.clock.clone();
        state.search_lag_ms = config.search_index_lag_ms;
        state.day = state.now().date_naive();
        if let Some(url) = &config.webhook_url {
            let id = state.next_webhook_id;
            state.next_webhook_id += 1;
            let add_time = state.now();
            state.webhooks.insert(
                id,
                Webhook {
                    id,
                    owner_id: config.ui_user_id,
                    user_id: config.ui_user_id,
                    event_action: "*".into(),
                    event_object: "*".into(),
                    subscription_url: url.clone(),
                    version: "2.0".into(),
                    add_time,
                    kind: "general",
                    http_auth_user: config.webhook_user.clone(),
                    http_auth_password: config.webhook_password.clone(),
                    name: "crm-sim config webhook".into(),
                    last_delivery_time: None,
                    last_http_status: None,
                },
            );
        }
        // Deliveries go straight to the subscription URL: no proxy, and a redirect is a failed
        // delivery (the URL "must not redirect").
        let http = reqwest::Client::builder()
            .user_agent("Pipedrive-Webhooks (crm-sim)")
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                core: Arc::new(Core {
                    cfg: config,
                    state: Mutex::new(state),
                    http,
                }),
                tx: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    /// The configuration the simulator was started with.
    pub fn config(&self) -> &PipedriveConfig {
        &self.core().cfg
    }

    pub(crate) fn api_actor(&self) -> Actor {
        Actor {
            user_id: self.core().cfg.api_user_id,
            source: "api",
        }
    }

    fn ui_actor(&self) -> Actor {
        Actor {
            user_id: self.core().cfg.ui_user_id,
            source: "app",
        }
    }

    /// Queues webhook deliveries for `events` (called with the state lock held, so events are
    /// queued in the order the changes happened).
    pub(crate) fn emit(&self, st: &mut State, events: Vec<PersonEvent>) {
        for ev in &events {
            st.reindex(ev.entity_id);
        }
        if let Some(captured) = st.captured_webhooks.as_mut() {
            let cfg = &self.core().cfg;
            for ev in events {
                let job = Job {
                    event: Arc::new(ev),
                    target: Target::captured(cfg.ui_user_id),
                };
                captured.push(webhooks::build_payload(cfg, &job, 1));
            }
            return;
        }
        for ev in events {
            let targets: Vec<Target> = st
                .webhooks
                .values()
                .filter(|w| w.matches(ev.action, "person"))
                .map(Target::from_webhook)
                .collect();
            if targets.is_empty() {
                continue;
            }
            if !st.webhooks_enabled {
                st.stats.webhooks_dropped += targets.len() as u64;
                continue;
            }
            let ev = Arc::new(ev);
            for target in targets {
                let job = Job {
                    event: ev.clone(),
                    target,
                };
                if self.send_job(job) {
                    st.stats.webhook_jobs_pending += 1;
                } else {
                    st.stats.webhooks_dropped += 1;
                }
            }
        }
    }

    /// Sends a job to the dispatcher, starting it on the current Tokio runtime if needed.
    fn send_job(&self, job: Job) -> bool {
        let mut tx = self.inner.tx.lock().unwrap_or_else(|e| e.into_inner());
        let mut job = job;
        for _ in 0..2 {
            if tx.is_none() {
                let Ok(handle) = tokio::runtime::Handle::try_current() else {
                    tracing::warn!("pipedrive sim: no Tokio runtime, webhook event dropped");
                    return false;
                };
                *tx = Some(webhooks::spawn_dispatcher(self.core().clone(), &handle));
            }
            let Some(sender) = tx.as_ref() else {
                return false;
            };
            match sender.send(job) {
                Ok(()) => return true,
                Err(e) => {
                    // The dispatcher's runtime is gone; start a new one on this runtime.
                    job = e.0;
                    *tx = None;
                }
            }
        }
        false
    }

    fn ui_result<T>(
        &self,
        r: Result<(T, Vec<PersonEvent>), OpError>,
        st: &mut State,
    ) -> Result<T, String> {
        match r {
            Ok((v, events)) => {
                self.emit(st, events);
                Ok(v)
            }
            Err(OpError::NotFound) => Err(NOT_FOUND_MSG.to_string()),
            Err(OpError::Invalid(msg)) => Err(msg),
        }
    }

    /// Creates a person as a web-app user (body in the v2 shape, validated like the API).
    /// Fires a `create` webhook with `change_source: app`. Returns the new id.
    pub fn try_ui_create(&self, body: Value) -> Result<u64, String> {
        let cfg = &self.core().cfg;
        let mut st = self.core().lock();
        let r = st.create_person(
            &body,
            self.ui_actor(),
            cfg.contact_sync_fields,
            cfg.company_id,
        );
        self.ui_result(r, &mut st).map(|p| p.id)
    }

    /// Like [`Self::try_ui_create`]; panics on an invalid body.
    pub fn ui_create(&self, body: Value) -> u64 {
        self.try_ui_create(body)
            .unwrap_or_else(|e| panic!("ui_create: {e}"))
    }

    /// Edits a person as a web-app user (PATCH semantics, v2 body). Fires a `change` webhook
    /// with `change_source: app` if anything changed.
    pub fn try_ui_update(&self, id: u64, body: Value) -> Result<(), String> {
        let cfg = &self.core().cfg;
        let mut st = self.core().lock();
        st.purge();
        let r = st.update_person(
            id,
            &body,
            self.ui_actor(),
            cfg.contact_sync_fields,
            cfg.company_id,
        );
        self.ui_result(r, &mut st).map(|_| ())
    }

    /// Like [`Self::try_ui_update`]; panics if the person is missing or the body invalid.
    pub fn ui_update(&self, id: u64, body: Value) {
        self.try_ui_update(id, body)
            .unwrap_or_else(|e| panic!("ui_update({id}): {e}"))
    }

    /// Deletes a person as a web-app user. Returns false if there was no live person `id`.
    pub fn ui_delete(&self, id: u64) -> bool {
        let company_id = self.core().cfg.company_id;
        let mut st = self.core().lock();
        st.purge();
        let r = st.delete_person(id, self.ui_actor(), company_id);
        self.ui_result(r, &mut st).is_ok()
    }

    /// Merges person `id` into `merge_with_id` (which survives) as a web-app user: webhooks
    /// `delete` for `id` (with `merged_to_id`) and `change` for the survivor (`merged_from_id`).
    pub fn try_ui_merge(&self, id: u64, merge_with_id: u64) -> Result<(), String> {
        let company_id = self.core().cfg.company_id;
        let mut st = self.core().lock();
        st.purge();
        let r = st.merge_persons(id, merge_with_id, self.ui_actor(), company_id);
        self.ui_result(r, &mut st).map(|_| ())
    }

    /// Like [`Self::try_ui_merge`]; panics on failure.
    pub fn ui_merge(&self, id: u64, merge_with_id: u64) {
        self.try_ui_merge(id, merge_with_id)
            .unwrap_or_else(|e| panic!("ui_merge({id} into {merge_with_id}): {e}"))
    }

    fn render_all_opts(&self) -> model::RenderOpts {
        model::RenderOpts {
            contact_sync: self.core().cfg.contact_sync_fields,
            ..Default::default()
        }
    }

    /// A stored person in the v2 shape, soft-deleted ones included (`is_deleted: true`).
    /// Merged-away persons also carry `"merged_into": <survivor id>`.
    pub fn person(&self, id: u64) -> Option<Value> {
        let mut st = self.core().lock();
        st.purge();
        let opts = self.render_all_opts();
        st.persons.get(&id).map(|p| {
            let mut v = model::render_v2(p, &st.customs, &opts);
            if let Some(m) = p.merged_into {
                v["merged_into"] = json!(m);
            }
            v
        })
    }

    /// Every stored person (deleted ones included) in id order, shaped like [`Self::person`].
    pub fn persons(&self) -> Vec<Value> {
        let ids: Vec<u64> = {
            let mut st = self.core().lock();
            st.purge();
            st.persons.keys().copied().collect()
        };
        ids.into_iter().filter_map(|id| self.person(id)).collect()
    }

    /// All person fields as `GET /api/v2/personFields` lists them (built-in and custom).
    pub fn fields(&self) -> Vec<Value> {
        let st = self.core().lock();
        let contact_sync = self.core().cfg.contact_sync_fields;
        model::BUILTIN_FIELDS
            .iter()
            .filter(|f| contact_sync || !f.contact_sync_only)
            .map(|f| model::render_builtin_field(f, &[]))
            .chain(
                st.customs
                    .iter()
                    .map(|f| model::render_custom_field(f, &[])),
            )
            .collect()
    }

    /// The 40-hex key of the first custom field named `name`.
    pub fn field_key(&self, name: &str) -> Option<String> {
        let st = self.core().lock();
        st.customs
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.key.clone())
    }

    /// Creates a custom field without going through the API (no cost). `options` are the
    /// labels of enum/set options. Returns the field key.
    pub fn create_field(
        &self,
        name: &str,
        field_type: &str,
        options: &[&str],
    ) -> Result<String, String> {
        let mut body = json!({"field_name": name, "field_type": field_type});
        if !options.is_empty() {
            body["options"] = options.iter().map(|l| json!({"label": l})).collect();
        }
        self.core().lock().create_field(&body).map(|f| f.key)
    }

    /// The option id of `label` in the enum/set field `key`.
    pub fn field_option_id(&self, key: &str, label: &str) -> Option<u64> {
        let st = self.core().lock();
        st.customs
            .iter()
            .find(|f| f.key == key)?
            .options
            .iter()
            .find(|o| o.label == label)
            .map(|o| o.id)
    }

    /// Current counters.
    pub fn stats(&self) -> PipedriveStats {
        let mut st = self.core().lock();
        st.roll_day();
        let mut s = st.stats.clone();
        s.daily_tokens_used = st.daily_tokens;
        s
    }

    /// Zeroes the counters (not the daily budget; see [`Self::reset_day`]).
    pub fn reset_stats(&self) {
        let mut st = self.core().lock();
        // Deliveries in progress stay counted: the count is a state, not a history.
        let pending = st.stats.webhook_jobs_pending;
        st.stats = PipedriveStats {
            webhook_jobs_pending: pending,
            ..PipedriveStats::default()
        };
    }

    /// While `down`, every API path answers 503.
    pub fn set_outage(&self, down: bool) {
        self.core().lock().outage = down;
    }

    /// While disabled, change events are dropped instead of delivered (missed webhooks).
    pub fn set_webhooks_enabled(&self, enabled: bool) {
        self.core().lock().webhooks_enabled = enabled;
    }

    /// Sets the API-token burst limit and the daily token budget (`None` = unlimited).
    pub fn set_rate_limit(&self, burst_limit: Option<u32>, daily_token_budget: Option<u64>) {
        let mut st = self.core().lock();
        st.limits.burst = burst_limit;
        st.limits.daily_budget = daily_token_budget;
    }

    /// Current rate limits.
    pub fn rate_limits(&self) -> RateLimits {
        let l = self.core().lock().limits;
        RateLimits {
            burst_limit: l.burst,
            oauth_burst_limit: l.oauth_burst,
            search_burst_limit: l.search_burst,
            daily_token_budget: l.daily_budget,
        }
    }

    /// Replaces all rate limits.
    pub fn set_rate_limits(&self, limits: RateLimits) {
        let mut st = self.core().lock();
        st.limits = Limits {
            burst: limits.burst_limit,
            oauth_burst: limits.oauth_burst_limit,
            search_burst: limits.search_burst_limit,
            daily_budget: limits.daily_token_budget,
            token_headers: st.limits.token_headers,
        };
    }

    /// The next `n` API requests are answered 429 with no rate-limit headers at all, as an
    /// edge proxy in front of the API might: a 429 no header explains.
    pub fn throttle_bare(&self, n: u32) {
        self.core().lock().bare_429s = n;
    }

    /// From now on webhook payloads are kept for [`PipedriveSim::take_webhooks`] instead of
    /// delivered (a simulation that delivers them itself, late, twice or never).
    pub fn capture_webhooks(&self) {
        let mut st = self.core().lock();
        st.captured_webhooks.get_or_insert_with(Vec::new);
    }

    /// The webhook payloads (v2) captured since the last call, in the order of the changes.
    pub fn take_webhooks(&self) -> Vec<Value> {
        let mut st = self.core().lock();
        st.captured_webhooks
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Simulated midnight: the daily token budget (and daily request counters) start again.
    pub fn reset_day(&self) {
        self.core().lock().reset_day();
    }

    /// Moves the simulated clock (timestamps, `updated_since`, 30-day purge, day rollover).
    pub fn advance_clock(&self, seconds: i64) {
        let mut st = self.core().lock();
        st.clock_offset += chrono::Duration::seconds(seconds);
    }

    /// The simulated current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.core().lock().now()
    }

    /// Every API request received so far (control routes excluded).
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.core().lock().request_log.clone()
    }

    pub fn clear_request_log(&self) {
        self.core().lock().request_log.clear();
    }

    /// Every webhook delivery attempt so far.
    pub fn webhook_log(&self) -> Vec<WebhookDeliveryRecord> {
        self.core().lock().webhook_log.clone()
    }
}

/// The simulator's routes (state applied), to be merged at the server root.
pub fn routes(sim: PipedriveSim) -> Router {
    let api = Router::new()
        .route(
            "/api/v2/persons",
            get(api::list_persons).post(api::add_person),
        )
        .route("/api/v2/persons/search", get(api::search_persons))
        .route(
            "/api/v2/persons/{id}",
            get(api::get_person)
                .patch(api::update_person)
                .delete(api::delete_person),
        )
        .route(
            "/api/v2/personFields",
            get(api::list_fields).post(api::add_field),
        )
        .route(
            "/api/v2/personFields/{field_code}",
            get(api::get_field).delete(api::delete_field),
        )
        .route("/api/v1/persons/{id}/merge", put(api::merge_persons))
        .route(
            "/api/v1/persons/{id}/changelog",
            get(changelog::get_changelog),
        )
        .route("/api/v1/users/me", get(api::users_me))
        .route(
            "/api/v1/webhooks",
            get(api::list_webhooks).post(api::add_webhook),
        )
        .route("/api/v1/webhooks/{id}", delete(api::delete_webhook))
        .route("/api/{*rest}", any(api::unknown))
        .route_layer(middleware::from_fn_with_state(sim.clone(), gate::gate));
    api.merge(control::routes()).with_state(sim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_brief() {
        let c = PipedriveConfig::default();
        assert_eq!(c.api_tokens, vec!["sim-pipedrive-token".to_string()]);
        assert_eq!(c.company_id, 7001);
        assert_eq!(c.api_user_id, 9001);
        assert_eq!(c.burst_limit, Some(20));
        assert_eq!(c.daily_token_budget, Some(30_000));
        assert_eq!(c.webhook_retry_delays_ms, vec![3_000, 30_000, 150_000]);
    }

    #[test]
    fn ui_methods_without_runtime_still_change_state() {
        let sim = PipedriveSim::new(PipedriveConfig {
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
            ..Default::default()
        });
        let id = sim.ui_create(json!({"name": "Ada Lovelace"}));
        sim.ui_update(id, json!({"emails": [{"value": "ada@example.com"}]}));
        let p = sim.person(id).unwrap();
        assert_eq!(p["emails"][0]["value"], json!("ada@example.com"));
        assert_eq!(p["owner_id"], json!(9002));
        assert!(sim.try_ui_update(999, json!({"name": "x"})).unwrap_err() == NOT_FOUND_MSG);
        assert!(sim.ui_delete(id));
        assert!(!sim.ui_delete(id));
        assert_eq!(sim.person(id).unwrap()["is_deleted"], json!(true));
        // No runtime: the three events could not be delivered.
        assert_eq!(sim.stats().webhooks_dropped, 3);
    }

    #[test]
    fn field_helpers() {
        let sim = PipedriveSim::default();
        let key = sim
            .create_field("Tier", "enum", &["Gold", "Silver"])
            .unwrap();
        assert_eq!(sim.field_key("Tier"), Some(key.clone()));
        let gold = sim.field_option_id(&key, "Gold").unwrap();
        let id = sim.ui_create(json!({"name": "A", "custom_fields": {key.clone(): gold}}));
        assert_eq!(sim.person(id).unwrap()["custom_fields"][&key], json!(gold));
        assert!(sim.fields().iter().any(|f| f["field_code"] == json!(key)));
    }
}
