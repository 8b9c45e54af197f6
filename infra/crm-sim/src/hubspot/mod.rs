//! Stateful simulator of HubSpot's CRM v3 contacts, properties and OAuth APIs, with webhook
//! delivery, following HubSpot's public developer documentation (CRM v3 contacts, properties,
//! search, webhooks, OAuth, API usage guidelines).
//!
//! # HubSpot paths
//!
//! Every `/crm/...` call needs `Authorization: Bearer <token>` (a static private-app token from
//! [`HubSpotConfig::access_tokens`] or an OAuth access token from the token endpoint), is counted
//! against the 10-second burst window and the daily counter, and answers with the
//! `X-HubSpot-RateLimit-*` headers. Search has its own per-second limit and no headers.
//!
//! | method and path | |
//! | --- | --- |
//! | `POST /oauth/v1/token`, `POST /oauth/v3/token` | `refresh_token` and `authorization_code` grants |
//! | `GET`/`POST /crm/v3/objects/contacts` | list (`limit` ≤ 100, `after`, `properties`, `archived`) / create (201, 409 on a taken email) |
//! | `GET`/`PATCH`/`DELETE /crm/v3/objects/contacts/{id}` | `idProperty=email` supported; DELETE archives (204) |
//! | `POST /crm/v3/objects/contacts/batch/{read,create,update,upsert,archive}` | ≤ 100 inputs; 207 with `numErrors`/`errors[]` on partial failure |
//! | `POST /crm/v3/objects/contacts/search` | ≤ 5 groups, ≤ 6 filters/group, ≤ 18 filters, `limit` ≤ 200, no paging past 10,000 |
//! | `POST /crm/v3/objects/contacts/merge` | mints a new id, retires both originals |
//! | `GET`/`POST /crm/v3/properties/contacts`, `GET /crm/v3/properties/contacts/{name}` | property definitions |
//!
//! # Control endpoints (not HubSpot; no auth, no rate limit, work during an outage)
//!
//! | method and path | |
//! | --- | --- |
//! | `GET /_sim/hubspot/contacts` | every contact, archived and merged-away ones included |
//! | `POST /_sim/hubspot/contacts` `{"properties":{..}}` | a user creates a contact in the UI (`CRM_UI` webhooks) |
//! | `GET`/`PATCH`/`DELETE /_sim/hubspot/contacts/{id}` | read / a UI edit / a UI delete |
//! | `POST /_sim/hubspot/contacts/{id}/restore` | a UI restore from the recycle bin (`contact.restore`) |
//! | `POST /_sim/hubspot/contacts/merge` `{"primaryObjectId","objectIdToMerge"}` | a UI merge |
//! | `GET /_sim/hubspot/stats`, `DELETE /_sim/hubspot/stats` | counters / zero them |
//! | `POST /_sim/hubspot/outage` `{"down":bool}` | every HubSpot path answers 503 while down |
//! | `GET`/`POST /_sim/hubspot/webhooks` `{"enabled":bool,"url"?:string\|null}` | pause delivery (events are dropped, like missed webhooks) or change the target |
//! | `PUT /_sim/hubspot/config/rate-limit` `{"burst_limit":n\|null,"daily_limit":n\|null,"search_per_second"?:n}` | change limits (`null` = unlimited) |
//! | `POST /_sim/hubspot/oauth/expire` | expire every issued OAuth access token now |
//! | `POST /_sim/hubspot/reset` | drop all contacts, custom properties, counters |

mod account;
mod api;
mod control;
mod error;
mod gate;
mod properties;
mod query;
mod search;
pub mod signing;
mod store;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, atomic::AtomicU64, atomic::Ordering};
use std::time::Duration;

use axum::{
    Router, middleware,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use self::error::{ApiError, WriteError};
use self::gate::GateState;
use self::store::{Actor, Change, Record, Store};
use self::webhooks::{DeliverySettings, WebhookEvent, WebhookHub};

/// Subscription id of `contact.creation`; the other subscriptions follow.
const SUBSCRIPTION_BASE: u64 = 2_461_200;

/// Configuration of the HubSpot simulator.
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// Static private-app tokens accepted as `Authorization: Bearer`.
    pub access_tokens: Vec<String>,
    /// OAuth client id expected by the token endpoint.
    pub client_id: String,
    /// OAuth client secret; also the secret that signs webhooks (as in HubSpot).
    pub client_secret: String,
    /// Refresh tokens the token endpoint accepts (HubSpot does not rotate them).
    pub refresh_tokens: Vec<String>,
    /// One-time authorization codes the token endpoint accepts.
    pub authorization_codes: Vec<String>,
    /// Lifetime of issued OAuth access tokens (HubSpot: 30 minutes).
    pub access_token_ttl_secs: u64,
    pub app_id: u64,
    pub portal_id: u64,
    /// The user id reported as `sourceId: "userId:<n>"` for edits made through the control endpoints.
    pub ui_user_id: u64,
    /// The first contact id handed out.
    pub first_contact_id: u64,
    /// Target of webhook POSTs; `None` = no webhooks (events are dropped).
    pub webhook_url: Option<String>,
    /// How long events are collected before a batch is sent.
    pub webhook_batch_window_ms: u64,
    /// Waits before retry 1, 2, ...; the last one repeats. HubSpot spreads up to 10 retries over
    /// 24 hours; the defaults here are short so tests stay fast.
    pub webhook_retry_delays: Vec<Duration>,
    /// Delivery attempts per batch, the first one included.
    pub webhook_max_attempts: u32,
    /// A delivery not answered within this time counts as failed (HubSpot: 5 s).
    pub webhook_timeout_ms: u64,
    /// Concurrent webhook requests (HubSpot: 10).
    pub webhook_max_concurrency: usize,
    /// Requests per rolling 10 s window per app; `None` = unlimited (and no burst headers).
    pub burst_limit: Option<u32>,
    /// Requests per day for private-app tokens; `None` = unlimited (and no daily headers).
    pub daily_limit: Option<u32>,
    /// Search requests per second for the account; 0 = unlimited.
    pub search_per_second: u32,
    /// Typical lag of the search index behind writes, in ms (HubSpot's lags a few moments):
    /// each create or update shows in search after between a quarter and 1.75 times this, so
    /// a record written later can be found sooner; until then search misses a new record and
    /// shows an updated one with its earlier values. 0 = indexed at once.
    pub search_index_lag_ms: u64,
    /// Results one search can page through with `after` (HubSpot: 10,000; lower it to test
    /// paging past the cap without 10,000 records).
    pub search_max_results: usize,
    /// Properties with a `contact.propertyChange` subscription.
    pub subscribed_properties: Vec<String>,
    /// The portal's time zone setting (an IANA name, as `/account-info/v3/details` shows it):
    /// the daily limit resets at midnight there.
    pub portal_time_zone: String,
    /// Where timestamps, the search index's lag and the day come from.
    pub clock: crate::SimClock,
}

impl Default for HubSpotConfig {
    fn default() -> Self {
        Self {
            access_tokens: vec!["sim-hubspot-token".into()],
            client_id: "sim-hubspot-client-id".into(),
            client_secret: "sim-hubspot-secret".into(),
            refresh_tokens: vec!["sim-hubspot-refresh-token".into()],
            authorization_codes: vec!["sim-hubspot-auth-code".into()],
            access_token_ttl_secs: 1800,
            app_id: 1_234_567,
            portal_id: 62515,
            ui_user_id: 7_765_123,
            first_contact_id: 100_001,
            webhook_url: None,
            webhook_batch_window_ms: 100,
            webhook_retry_delays: vec![
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(5),
            ],
            webhook_max_attempts: 10,
            webhook_timeout_ms: 5_000,
            webhook_max_concurrency: 10,
            burst_limit: Some(100),
            daily_limit: Some(250_000),
            search_per_second: 5,
            search_index_lag_ms: 1_000,
            search_max_results: search::MAX_RESULTS,
            subscribed_properties: [
                "email",
                "firstname",
                "lastname",
                "phone",
                "jobtitle",
                "pronouns",
            ]
            .map(String::from)
            .to_vec(),
            portal_time_zone: "US/Eastern".into(),
            clock: crate::SimClock::default(),
        }
    }
}

/// Counters of API use, for tests and demos.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HubSpotStats {
    /// Every request to a HubSpot path (including ones refused with 401, 429 or 503).
    pub requests: u64,
    /// Accepted API calls that write contacts: create, update, upsert, archive, merge, single or batch.
    pub write_calls: u64,
    /// Records created, updated, archived or merged by those calls.
    pub records_written: u64,
    /// Accepted batch calls (read included).
    pub batch_calls: u64,
    /// Search calls that passed the rate limit.
    pub search_calls: u64,
    /// Requests refused with 429.
    pub rate_limited: u64,
    /// Successful refresh-token grants.
    pub refreshes: u64,
    /// Webhook POSTs answered with 2xx.
    pub webhook_deliveries: u64,
    /// Webhook POSTs that failed (connection error, non-2xx, timeout).
    pub webhook_failures: u64,
    /// Events in delivered POSTs.
    pub webhook_events_delivered: u64,
    /// Events dropped: delivery paused, no URL, or all attempts failed.
    pub webhook_events_dropped: u64,
    /// Events queued or being retried.
    pub webhook_events_pending: u64,
    /// Requests per `"METHOD /route/{template}"`.
    pub by_endpoint: BTreeMap<String, u64>,
}

/// A contact as stored, with every property value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubSpotContact {
    pub id: String,
    pub properties: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub archived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<DateTime<Utc>>,
    /// Set on records retired by a merge: the id of the record that replaced them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
}

impl HubSpotContact {
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    fn from_record(r: &Record) -> Self {
        Self {
            id: r.id.to_string(),
            properties: r.props.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            archived: r.archived(),
            archived_at: r.archived_at,
            merged_into: r.merged_into.map(|i| i.to_string()),
        }
    }
}

/// A refused simulator operation: the HTTP status and HubSpot-style body the API would answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SimError {
    pub status: u16,
    pub body: Value,
}

impl SimError {
    pub fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HubSpot simulator error {}: {}",
            self.status,
            self.message()
        )
    }
}

impl std::error::Error for SimError {}

impl From<ApiError> for SimError {
    fn from(e: ApiError) -> Self {
        Self {
            status: e.status_u16(),
            body: e.body,
        }
    }
}

struct Inner {
    config: HubSpotConfig,
    store: Mutex<Store>,
    gate: Mutex<GateState>,
    stats: Mutex<HubSpotStats>,
    webhooks: WebhookHub,
    next_event_id: AtomicU64,
    /// Webhook events kept instead of delivered (`None`: delivered).
    captured: Mutex<Option<Vec<Value>>>,
}

/// Handle on one simulated HubSpot portal. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct HubSpotSim {
    inner: Arc<Inner>,
}

impl Default for HubSpotSim {
    fn default() -> Self {
        Self::new(HubSpotConfig::default())
    }
}

impl std::fmt::Debug for HubSpotSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSpotSim")
            .field("portal_id", &self.inner.config.portal_id)
            .field("contacts", &self.store().contacts.len())
            .finish()
    }
}

fn to_props<I, K, V>(props: I) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    props
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

impl HubSpotSim {
    pub fn new(config: HubSpotConfig) -> Self {
        let settings = DeliverySettings {
            client_secret: config.client_secret.clone(),
            window: Duration::from_millis(config.webhook_batch_window_ms),
            retry_delays: config.webhook_retry_delays.clone(),
            max_attempts: config.webhook_max_attempts,
            timeout: Duration::from_millis(config.webhook_timeout_ms),
            max_concurrency: config.webhook_max_concurrency,
        };
        let gate = GateState::new(
            account::zone(&config.portal_time_zone),
            config.burst_limit,
            config.daily_limit,
            config.search_per_second,
            &config.refresh_tokens,
            &config.authorization_codes,
        );
        let mut store = Store::new(config.first_contact_id);
        store.index_lag_ms = config.search_index_lag_ms;
        store.set_clock(config.clock.clone());
        Self {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                gate: Mutex::new(gate),
                stats: Mutex::new(HubSpotStats::default()),
                webhooks: WebhookHub::new(config.webhook_url.clone(), settings),
                next_event_id: AtomicU64::new(1_000_001),
                captured: Mutex::new(None),
                config,
            }),
        }
    }

    pub fn config(&self) -> &HubSpotConfig {
        &self.inner.config
    }

    // ---- UI actions (changeSource CRM_UI) -------------------------------------------------

    fn ui_actor(&self) -> Actor {
        Actor::Ui {
            user_id: self.inner.config.ui_user_id,
        }
    }

    pub(crate) fn api_actor(&self) -> Actor {
        Actor::Integration {
            app_id: self.inner.config.app_id,
        }
    }

    fn sim_err(&self, e: WriteError) -> SimError {
        e.to_api(self.inner.config.portal_id).into()
    }

    fn parse_id(&self, id: &str) -> Result<u64, SimError> {
        id.trim()
            .parse()
            .map_err(|_| SimError::from(ApiError::object_not_found()))
    }

    /// A user creates a contact in the HubSpot UI. Returns the new id.
    pub fn ui_create<I, K, V>(&self, props: I) -> Result<String, SimError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let props = to_props(props);
        let actor = self.ui_actor();
        let mut changes = Vec::new();
        let id = self
            .store()
            .create(&props, &actor, &mut changes)
            .map_err(|e| self.sim_err(e))?;
        self.emit(&actor, changes);
        Ok(id.to_string())
    }

    /// A user edits a contact in the HubSpot UI (`""` clears a property).
    pub fn ui_update<I, K, V>(&self, id: &str, props: I) -> Result<(), SimError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let id = self.parse_id(id)?;
        let props = to_props(props);
        let actor = self.ui_actor();
        let mut changes = Vec::new();
        self.store()
            .update(id, &props, &actor, &mut changes)
            .map_err(|e| self.sim_err(e))?;
        self.emit(&actor, changes);
        Ok(())
    }

    /// The search index takes `by` longer than usual to show contact `id`'s latest write
    /// (HubSpot's indexing delay varies, reportedly up to 30 s): until then search shows its
    /// earlier values.
    pub fn index_late(&self, id: &str, by: Duration) -> Result<(), SimError> {
        let id = self.parse_id(id)?;
        self.store().index_late(id, by).map_err(|e| self.sim_err(e))
    }

    /// A user deletes (archives) a contact in the HubSpot UI.
    pub fn ui_delete(&self, id: &str) -> Result<(), SimError> {
        let id = self.parse_id(id)?;
        let actor = self.ui_actor();
        let mut changes = Vec::new();
        if !self.store().archive(id, &mut changes) {
            return Err(self.sim_err(WriteError::NotFound { id: id.to_string() }));
        }
        self.emit(&actor, changes);
        Ok(())
    }

    /// A user deletes a contact for good in the HubSpot UI ("permanently delete", GDPR): the
    /// `contact.privacyDeletion` webhook tells the apps to erase the person too.
    pub fn ui_gdpr_delete(&self, id: &str) -> Result<(), SimError> {
        let id = self.parse_id(id)?;
        let actor = self.ui_actor();
        let mut changes = Vec::new();
        if !self.store().erase(id, &mut changes) {
            return Err(self.sim_err(WriteError::NotFound { id: id.to_string() }));
        }
        self.emit(&actor, changes);
        Ok(())
    }

    /// A user restores an archived contact from the recycle bin.
    pub fn ui_restore(&self, id: &str) -> Result<(), SimError> {
        let id = self.parse_id(id)?;
        let actor = self.ui_actor();
        let mut changes = Vec::new();
        self.store()
            .restore(id, &mut changes)
            .map_err(|e| self.sim_err(e))?;
        self.emit(&actor, changes);
        Ok(())
    }

    /// A user merges two contacts in the UI. Returns the id of the new merged record.
    pub fn ui_merge(&self, primary: &str, other: &str) -> Result<String, SimError> {
        let (p, o) = (self.parse_id(primary)?, self.parse_id(other)?);
        let actor = self.ui_actor();
        let mut changes = Vec::new();
        let new_id = self
            .store()
            .merge(p, o, &mut changes)
            .map_err(|e| self.sim_err(e))?;
        self.emit(&actor, changes);
        Ok(new_id.to_string())
    }

    /// Inserts many contacts at once, validated like API creates, without webhooks or counters
    /// (an import). Nothing is written if any contact is invalid.
    pub fn seed_contacts<I, P, K, V>(&self, contacts: I) -> Result<Vec<String>, SimError>
    where
        I: IntoIterator<Item = P>,
        P: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let inputs: Vec<BTreeMap<String, String>> = contacts.into_iter().map(to_props).collect();
        let mut store = self.store();
        let checked = store
            .precheck_creates(&inputs)
            .map_err(|e| self.sim_err(e))?;
        let mut changes = Vec::new();
        Ok(checked
            .into_iter()
            .map(|p| {
                // Seeded records existed before: the search index already shows them.
                let id = store.insert(p, &Actor::Import, &mut changes);
                store.mark_indexed(id);
                id.to_string()
            })
            .collect())
    }

    /// Creates a custom contact property from a `PropertyCreate` body, like the API would.
    pub fn create_property(&self, definition: Value) -> Result<(), SimError> {
        api::insert_property(self, &definition)
            .map(|_| ())
            .map_err(SimError::from)
    }

    // ---- inspection ----------------------------------------------------------------------

    /// Any contact by id, archived or merged-away ones included.
    pub fn contact(&self, id: &str) -> Option<HubSpotContact> {
        let id: u64 = id.trim().parse().ok()?;
        self.store()
            .contacts
            .get(&id)
            .map(HubSpotContact::from_record)
    }

    /// Every contact, archived and merged-away ones included, by id.
    pub fn contacts(&self) -> Vec<HubSpotContact> {
        self.store()
            .contacts
            .values()
            .map(HubSpotContact::from_record)
            .collect()
    }

    /// The live (non-archived) contact with this email, compared case-insensitively.
    pub fn find_by_email(&self, email: &str) -> Option<HubSpotContact> {
        let store = self.store();
        let id = store.active_by_email(email)?;
        store.contacts.get(&id).map(HubSpotContact::from_record)
    }

    pub fn property_exists(&self, name: &str) -> bool {
        self.store().property_exists(name)
    }

    pub fn stats(&self) -> HubSpotStats {
        let mut s = self.inner.stats.lock().expect("stats lock").clone();
        let w = &self.inner.webhooks.shared;
        s.webhook_deliveries = w.deliveries.load(Ordering::SeqCst);
        s.webhook_failures = w.failures.load(Ordering::SeqCst);
        s.webhook_events_delivered = w.events_delivered.load(Ordering::SeqCst);
        s.webhook_events_dropped = w.events_dropped.load(Ordering::SeqCst);
        s.webhook_events_pending = w.in_flight.load(Ordering::SeqCst);
        s
    }

    /// Zeroes the API counters (webhook counters keep counting).
    pub fn reset_stats(&self) {
        *self.inner.stats.lock().expect("stats lock") = HubSpotStats::default();
    }

    /// Events queued or being retried.
    pub fn webhooks_pending(&self) -> u64 {
        self.inner.webhooks.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no webhook event is queued or being retried; false on timeout.
    pub async fn wait_for_webhooks(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.webhooks_pending() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    // ---- switches ------------------------------------------------------------------------

    /// Refuses writes of `email` as invalid from now on, as HubSpot refuses some well-formed
    /// addresses: a poison record.
    pub fn refuse_email(&self, email: &str) {
        self.store()
            .refused_emails
            .insert(email.trim().to_lowercase());
    }

    /// While down, every HubSpot path answers 503.
    pub fn set_outage(&self, down: bool) {
        self.gate_state().outage = down;
    }

    /// Pauses webhook delivery; events produced meanwhile are dropped (missed webhooks).
    pub fn set_webhooks_enabled(&self, enabled: bool) {
        self.inner.webhooks.set_enabled(enabled);
    }

    pub fn set_webhook_url(&self, url: Option<String>) {
        self.inner.webhooks.set_url(url);
    }

    /// `None` = unlimited. Counted requests are kept.
    pub fn set_rate_limit(&self, burst: Option<u32>, daily: Option<u32>) {
        let mut g = self.gate_state();
        g.burst_limit = burst;
        g.daily_limit = daily;
    }

    /// 0 = unlimited.
    pub fn set_search_per_second(&self, per_second: u32) {
        self.gate_state().search_per_second = per_second;
    }

    /// Makes every issued OAuth access token expired from now on.
    pub fn expire_oauth_tokens(&self) {
        self.gate_state().expire_oauth_tokens();
    }

    /// Drops all contacts and custom properties, the counted requests and the counters.
    pub fn reset(&self) {
        self.store().reset();
        self.gate_state().reset_counters();
        self.reset_stats();
    }

    // ---- internals -----------------------------------------------------------------------

    /// The portal's current time (the configured clock).
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.config.clock.now()
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().expect("store lock")
    }

    pub(crate) fn gate_state(&self) -> MutexGuard<'_, GateState> {
        self.inner.gate.lock().expect("gate lock")
    }

    fn stats_mut(&self) -> MutexGuard<'_, HubSpotStats> {
        self.inner.stats.lock().expect("stats lock")
    }

    pub(crate) fn count_request(&self, endpoint: &str) {
        let mut s = self.stats_mut();
        s.requests += 1;
        *s.by_endpoint.entry(endpoint.to_string()).or_default() += 1;
    }

    pub(crate) fn count_rate_limited(&self) {
        self.stats_mut().rate_limited += 1;
    }

    pub(crate) fn count_refresh(&self) {
        self.stats_mut().refreshes += 1;
    }

    pub(crate) fn count_search(&self) {
        self.stats_mut().search_calls += 1;
    }

    pub(crate) fn count_batch(&self) {
        self.stats_mut().batch_calls += 1;
    }

    pub(crate) fn count_write(&self, records: usize) {
        let mut s = self.stats_mut();
        s.write_calls += 1;
        s.records_written += records as u64;
    }

    pub(crate) fn webhook_hub(&self) -> &WebhookHub {
        &self.inner.webhooks
    }

    fn subscription_id(&self, kind: &str, property: Option<&str>) -> u64 {
        match kind {
            "contact.creation" => SUBSCRIPTION_BASE + 1,
            "contact.deletion" => SUBSCRIPTION_BASE + 2,
            "contact.merge" => SUBSCRIPTION_BASE + 3,
            "contact.restore" => SUBSCRIPTION_BASE + 4,
            "contact.privacyDeletion" => SUBSCRIPTION_BASE + 5,
            _ => {
                let idx = property
                    .and_then(|p| {
                        self.inner
                            .config
                            .subscribed_properties
                            .iter()
                            .position(|s| s == p)
                    })
                    .unwrap_or(0);
                SUBSCRIPTION_BASE + 10 + idx as u64
            }
        }
    }

    /// Turns store changes into webhook events for the subscriptions and queues them.
    pub(crate) fn emit(&self, actor: &Actor, changes: Vec<Change>) {
        if matches!(actor, Actor::Import) || changes.is_empty() {
            return;
        }
        let cfg = &self.inner.config;
        let mut events = Vec::new();
        for change in changes {
            let (kind, object_id, at, flag) = match &change {
                Change::Created { id, at } => ("contact.creation", *id, *at, Some("NEW")),
                Change::PropertyChanged { id, at, name, .. } => {
                    if !cfg.subscribed_properties.iter().any(|p| p == name) {
                        continue;
                    }
                    ("contact.propertyChange", *id, *at, None)
                }
                Change::Deleted { id, at } => ("contact.deletion", *id, *at, Some("DELETED")),
                Change::Restored { id, at } => ("contact.restore", *id, *at, Some("RESTORED")),
                Change::Erased { id, at } => ("contact.privacyDeletion", *id, *at, Some("DELETED")),
                Change::Merged { primary, at, .. } => ("contact.merge", *primary, *at, None),
            };
            let property = match &change {
                Change::PropertyChanged { name, value, .. } => Some((name.clone(), value.clone())),
                _ => None,
            };
            let mut event = WebhookEvent {
                event_id: self.inner.next_event_id.fetch_add(1, Ordering::SeqCst),
                subscription_id: self
                    .subscription_id(kind, property.as_ref().map(|(n, _)| n.as_str())),
                portal_id: cfg.portal_id,
                app_id: cfg.app_id,
                occurred_at: at.timestamp_millis(),
                subscription_type: kind.into(),
                attempt_number: 0,
                object_id,
                property_name: None,
                property_value: None,
                change_flag: flag.map(String::from),
                // A GDPR delete says so, whoever made it (as HubSpot's sample shows).
                change_source: Some(if matches!(change, Change::Erased { .. }) {
                    "GDPR".into()
                } else {
                    actor.change_source().into()
                }),
                source_id: actor.source_id(),
                primary_object_id: None,
                merged_object_ids: None,
                new_object_id: None,
                number_of_properties_moved: None,
            };
            if let Some((name, value)) = property {
                event.property_name = Some(name);
                event.property_value = Some(value);
            }
            if let Change::Merged {
                primary,
                merged,
                new_id,
                moved,
                ..
            } = change
            {
                event.primary_object_id = Some(primary);
                event.merged_object_ids = Some(vec![merged]);
                event.new_object_id = Some(new_id);
                event.number_of_properties_moved = Some(moved as u64);
            }
            events.push(event);
        }
        let mut captured = self.inner.captured.lock().expect("capture lock");
        if let Some(kept) = captured.as_mut() {
            kept.extend(events.iter().filter_map(|e| serde_json::to_value(e).ok()));
            return;
        }
        drop(captured);
        self.inner.webhooks.enqueue(events);
    }

    /// From now on webhook events are kept for [`HubSpotSim::take_webhooks`] instead of
    /// delivered (a simulation that delivers them itself, late, twice or never).
    pub fn capture_webhooks(&self) {
        let mut captured = self.inner.captured.lock().expect("capture lock");
        captured.get_or_insert_with(Vec::new);
    }

    /// The webhook events captured since the last call, in the order of the changes.
    pub fn take_webhooks(&self) -> Vec<Value> {
        let mut captured = self.inner.captured.lock().expect("capture lock");
        captured.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

/// The simulator's routes (HubSpot paths and `/_sim/hubspot/...`), state applied.
pub fn routes(sim: HubSpotSim) -> Router {
    let hubspot = Router::new()
        .route(
            "/crm/v3/objects/contacts",
            get(api::list_contacts).post(api::create_contact),
        )
        .route("/crm/v3/objects/contacts/search", post(api::search))
        .route("/crm/v3/objects/contacts/merge", post(api::merge))
        .route(
            "/crm/v3/objects/contacts/gdpr-delete",
            post(api::gdpr_delete),
        )
        .route("/crm/v3/objects/contacts/batch/{action}", post(api::batch))
        .route(
            "/crm/v3/objects/contacts/{id}",
            get(api::get_contact)
                .patch(api::update_contact)
                .delete(api::archive_contact),
        )
        .route(
            "/crm/v3/properties/contacts",
            get(api::list_properties).post(api::create_property),
        )
        .route("/crm/v3/properties/contacts/{name}", get(api::get_property))
        .route("/account-info/v3/details", get(account::details))
        .route("/oauth/v1/token", post(gate::oauth_token))
        .route("/oauth/v3/token", post(gate::oauth_token))
        .layer(middleware::from_fn_with_state(sim.clone(), gate::gate));
    hubspot.merge(control::routes()).with_state(sim)
}
