//! The CRMs as the workers see them: the real HubSpot and Pipedrive clients, talking to the
//! stateful simulators in process through an [`Exchange`] that stands for the network. Every
//! request waits at a scheduler boundary and may meet the faults of a remote API: refused
//! before it has any effect (a 429 with the CRM's headers, a 503, a dropped connection), or
//! applied with its answer lost. The simulators run on the virtual clock, with their search
//! indexes lagging creates and updates; their webhooks (ours included) are captured and
//! delivered by the driver through the real payload parsers, late, out of order, twice or
//! never, the echoes of our own writes dropped as the real ingest drops them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use crm_sim::hubspot::HubSpotSim;
use crm_sim::pipedrive::PipedriveSim;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use shared::crm::hubspot::webhook::{HubSpotEvent, coalesce};
use shared::crm::hubspot::{self, mapping as hs_mapping};
use shared::crm::pipedrive::mapping::{self as pd_mapping, Person, Slots};
use shared::crm::pipedrive::webhook::PipedriveWebhook;
use shared::crm::transport::{Answer, Exchange};
use shared::domain::{
    ChangeEvent, ContactFields, CrmRecord, CustomField, Field, FieldPatch, Provider,
};
use shared::error::CrmError;
use shared::ports::{ChangedRecords, CrmClient, CrmContext};
use tower::ServiceExt;

use crate::sched::{Fault, Sched};
use crate::world::tenant;

/// The pronouns property (HubSpot) and the Pipedrive field's name.
pub const PRONOUNS: &str = "pronouns";

/// A webhook on its way: due at `due_ms`, the trigger the real parser made of it.
#[derive(Debug, Clone)]
pub struct Hook {
    pub due_ms: i64,
    pub event: ChangeEvent,
}

/// Webhooks not yet delivered.
#[derive(Default)]
pub struct Outbox(Mutex<Vec<Hook>>);

impl Outbox {
    pub fn push(&self, hook: Hook) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(hook);
    }

    /// The hooks due by `now`, in the order they fell due.
    pub fn take_due(&self, now: i64) -> Vec<Hook> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (mut due, rest): (Vec<Hook>, Vec<Hook>) = all.drain(..).partition(|h| h.due_ms <= now);
        *all = rest;
        due.sort_by_key(|h| h.due_ms);
        due
    }

    /// When the next hook falls due.
    pub fn next_due(&self) -> Option<i64> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().map(|h| h.due_ms).min()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One simulator.
#[derive(Clone)]
pub enum Backend {
    HubSpot(HubSpotSim),
    Pipedrive(PipedriveSim),
}

/// What a CRM's webhooks say, and which of its users' values nothing reported.
pub struct Feed {
    pub backend: Backend,
    sched: Sched,
    outbox: Arc<Outbox>,
    /// Users' edits whose webhook was dropped: nothing reports their values (record, field).
    pub unreported: Mutex<BTreeSet<(String, Field)>>,
    /// The tenant's pronouns and job title field keys, as the ingest reads them.
    keys: (Option<String>, Option<String>),
}

impl Feed {
    fn provider(&self) -> Provider {
        match self.backend {
            Backend::HubSpot(_) => Provider::HubSpot,
            Backend::Pipedrive(_) => Provider::Pipedrive,
        }
    }

    /// Takes the webhooks the simulator produced and puts them on their way, as the real
    /// ingest would enqueue them: our own writes' echoes dropped, one trigger per record of a
    /// HubSpot batch.
    pub fn pump(&self) {
        let t = tenant();
        let changes: Vec<(ChangeEvent, bool)> = match &self.backend {
            Backend::HubSpot(sim) => {
                let app_id = Some(sim.config().app_id);
                let events: Vec<HubSpotEvent> = sim
                    .take_webhooks()
                    .into_iter()
                    .filter_map(|v| serde_json::from_value(v).ok())
                    .collect();
                let user: BTreeSet<String> = events
                    .iter()
                    .filter(|e| !e.is_own_write(app_id))
                    .map(|e| e.object_id.as_string())
                    .collect();
                let triggers = events
                    .iter()
                    .filter(|e| !e.is_own_write(app_id))
                    .filter_map(|e| e.to_change(&t))
                    .collect();
                coalesce(triggers)
                    .into_iter()
                    .map(|c| {
                        let by_user = user.contains(&c.record_id);
                        (c, by_user)
                    })
                    .collect()
            }
            Backend::Pipedrive(sim) => {
                let own = Some(sim.config().api_user_id);
                let slots = Slots {
                    pronouns: self.keys.0.as_deref(),
                    job_title: self.keys.1.as_deref(),
                };
                sim.take_webhooks()
                    .into_iter()
                    .filter_map(|v| PipedriveWebhook::parse(v.to_string().as_bytes()).ok())
                    .filter(|h| !h.is_own_write(own))
                    .filter_map(|h| h.to_change_with(&t, slots))
                    .map(|c| (c, true))
                    .collect()
            }
        };
        let now = self.sched.now_ms();
        for (event, by_user) in changes {
            let copies = if self.sched.chance(0.05) {
                0
            } else if self.sched.chance(0.05) {
                2
            } else {
                1
            };
            tracing::info!(provider = %self.provider(), record = %event.record_id, kind = ?event.kind, reported = ?event.reported, copies, "simulated CRM: webhook");
            if copies == 0 && by_user {
                let mut unreported = self.unreported.lock().unwrap_or_else(|p| p.into_inner());
                for r in &event.reported {
                    unreported.insert((event.record_id.clone(), r.field));
                }
            }
            for _ in 0..copies {
                self.outbox.push(Hook {
                    due_ms: now + self.sched.between(20, 1500),
                    event: event.clone(),
                });
            }
        }
    }
}

/// The network between the workers and one simulator.
pub struct SimExchange {
    router: axum::Router,
    feed: Arc<Feed>,
    sched: Sched,
}

impl SimExchange {
    pub fn new(router: axum::Router, feed: Arc<Feed>, sched: Sched) -> Self {
        Self {
            router,
            feed,
            sched,
        }
    }

    /// The simulator's answer to `request`, its webhooks put on their way.
    async fn dispatch(&self, request: reqwest::Request) -> Result<Answer, String> {
        let mut builder = axum::http::Request::builder()
            .method(request.method().as_str())
            .uri(request.url().as_str());
        for (name, value) in request.headers() {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
        let body = request
            .body()
            .and_then(|b| b.as_bytes())
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let req = builder.body(Body::from(body)).map_err(|e| e.to_string())?;
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = StatusCode::from_u16(resp.status().as_u16()).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        for (name, value) in resp.headers() {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_str().as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.append(n, v);
            }
        }
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| e.to_string())?;
        self.feed.pump();
        Ok(Answer {
            status,
            headers,
            body: bytes.to_vec(),
        })
    }

    /// A refusal before the request had any effect: the CRM's 429, a 503, or no connection.
    fn refusal(&self) -> Result<Answer, String> {
        let mut headers = HeaderMap::new();
        let (status, body) = match self.sched.below(3) {
            0 => {
                match self.feed.provider() {
                    Provider::HubSpot => {
                        headers.insert("retry-after", HeaderValue::from_static("1"));
                    }
                    Provider::Pipedrive => {
                        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
                        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1"));
                    }
                }
                let body = match self.feed.provider() {
                    Provider::HubSpot => json!({
                        "status": "error",
                        "message": "You have reached your ten_secondly_rolling limit.",
                        "errorType": "RATE_LIMIT",
                        "policyName": "TEN_SECONDLY_ROLLING",
                    }),
                    Provider::Pipedrive => json!({
                        "success": false,
                        "error": "Request over limit",
                    }),
                };
                (StatusCode::TOO_MANY_REQUESTS, body)
            }
            1 => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "error", "message": "simulated: service unavailable"}),
            ),
            _ => return Err("simulated: connection reset before the request was sent".into()),
        };
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        Ok(Answer {
            status,
            headers,
            body: body.to_string().into_bytes(),
        })
    }
}

#[async_trait]
impl Exchange for SimExchange {
    async fn exchange(&self, request: reqwest::Request) -> Result<Answer, String> {
        self.sched.boundary().await;
        let write = request.method() != reqwest::Method::GET;
        match self.sched.roll(write) {
            Fault::Before => self.refusal(),
            Fault::AnswerLost => {
                let applied = self.dispatch(request).await;
                tracing::info!(provider = %self.feed.provider(), worker = ?Sched::current_worker(), status = ?applied.as_ref().map(|a| a.status), "simulated CRM: answer lost");
                Err("simulated: timeout after the request was sent".into())
            }
            Fault::None => self.dispatch(request).await,
        }
    }
}

/// One simulated CRM: its simulator and what the workers did to it. Each worker's reads and
/// writes of each record are noted, so a user's edit that one of our writes overwrote
/// (planned on a read from before it; neither CRM has a conditional write) is known.
pub struct SimCrm {
    provider: Provider,
    router: axum::Router,
    pub feed: Arc<Feed>,
    sched: Sched,
    /// The keys the real client keeps our two custom fields under.
    pub pronouns_key: String,
    pub job_title_key: String,
    /// When each worker last read each record.
    reads: Mutex<BTreeMap<(usize, String), i64>>,
    /// Users' edits: record, field, when.
    user_edits: Mutex<Vec<(String, Field, i64)>>,
    /// Users' edits one of our writes overwrote, planned on a read from before them: record
    /// and field.
    pub overwritten: Mutex<BTreeSet<(String, Field)>>,
}

impl SimCrm {
    pub fn new(
        router: axum::Router,
        feed: Arc<Feed>,
        sched: Sched,
        pronouns_key: String,
        job_title_key: String,
    ) -> Self {
        Self {
            provider: feed.provider(),
            router,
            feed,
            sched,
            pronouns_key,
            job_title_key,
            reads: Mutex::new(BTreeMap::new()),
            user_edits: Mutex::new(Vec::new()),
            overwritten: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// A worker's own client (a Lambda's, built at its cold start: its caches are its own),
    /// the real one, talking to the simulator through the simulated network.
    pub fn client(self: &Arc<Self>) -> Arc<dyn CrmClient> {
        let exchange = Arc::new(SimExchange::new(
            self.router.clone(),
            self.feed.clone(),
            self.sched.clone(),
        ));
        let clock: shared::ports::Clock = {
            let sched = self.sched.clone();
            Arc::new(move || sched.now())
        };
        let client: Arc<dyn CrmClient> = match &self.feed.backend {
            Backend::HubSpot(sim) => {
                let mut cfg = hubspot::HubSpotClientConfig::new(
                    "http://hubspot.sim",
                    hubspot::HubSpotAuth::Token(sim.config().access_tokens[0].clone()),
                );
                cfg.burst_per_10s = 1_000_000;
                cfg.search_per_second = 1_000_000;
                // A 429 settles the job at once (no real-time sleep in a virtual-time run).
                cfg.max_rate_limit_retries = 0;
                let c = hubspot::HubSpotClient::new(cfg, reqwest::Client::new());
                c.exchange_through(exchange, clock);
                Arc::new(c)
            }
            Backend::Pipedrive(sim) => {
                let mut cfg = shared::crm::pipedrive::PipedriveClientConfig::new(
                    "http://pipedrive.sim",
                    shared::crm::pipedrive::PipedriveAuth::ApiToken(
                        sim.config().api_tokens[0].clone(),
                    ),
                );
                cfg.burst_per_2s = 1_000_000;
                cfg.search_per_2s = 1_000_000;
                cfg.daily_token_budget = None;
                cfg.max_rate_limit_retries = 0;
                let c = shared::crm::pipedrive::PipedriveClient::new(cfg, reqwest::Client::new());
                c.exchange_through(exchange, clock);
                Arc::new(c)
            }
        };
        Arc::new(WorkerCrm {
            client,
            crm: self.clone(),
        })
    }

    fn slots(&self) -> Slots<'_> {
        Slots {
            pronouns: Some(&self.pronouns_key),
            job_title: Some(&self.job_title_key),
        }
    }

    fn pd_id(id: &str) -> u64 {
        id.parse().unwrap_or(u64::MAX)
    }

    /// Every record the simulator holds (archived, deleted and merged-away ones archived),
    /// read through the client's own mapping.
    pub fn records(&self) -> Vec<CrmRecord> {
        match &self.feed.backend {
            Backend::HubSpot(sim) => sim
                .contacts()
                .into_iter()
                .map(|c| {
                    let props: serde_json::Map<String, Value> = c
                        .properties
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect();
                    CrmRecord {
                        fields: hs_mapping::from_properties(&props, Some(PRONOUNS)),
                        archived: c.archived || c.merged_into.is_some(),
                        updated_at: Some(c.updated_at),
                        id: c.id,
                    }
                })
                .collect(),
            Backend::Pipedrive(sim) => sim
                .persons()
                .iter()
                .filter_map(|v| self.person_record(v))
                .collect(),
        }
    }

    fn person_record(&self, v: &Value) -> Option<CrmRecord> {
        let p = Person::from_json(v)?;
        Some(CrmRecord {
            fields: pd_mapping::to_fields(&p, self.slots()),
            id: p.id.to_string(),
            updated_at: None,
            archived: v["is_deleted"].as_bool().unwrap_or(false) || !v["merged_into"].is_null(),
        })
    }

    pub fn record(&self, id: &str) -> Option<CrmRecord> {
        match &self.feed.backend {
            Backend::HubSpot(_) => self.records().into_iter().find(|r| r.id == id),
            Backend::Pipedrive(sim) => sim
                .person(Self::pd_id(id))
                .and_then(|v| self.person_record(&v)),
        }
    }

    /// A user edits a record in the CRM's UI (its webhook follows).
    pub fn user_edit(&self, record: &str, patch: &FieldPatch) {
        let ok = match &self.feed.backend {
            Backend::HubSpot(sim) => sim
                .ui_update(record, hs_mapping::patch_properties(patch, Some(PRONOUNS)))
                .is_ok(),
            Backend::Pipedrive(sim) => {
                let id = Self::pd_id(record);
                let current = sim.person(id).and_then(|v| Person::from_json(&v));
                let body = pd_mapping::patch_body(patch, current.as_ref(), self.slots());
                sim.try_ui_update(id, body).is_ok()
            }
        };
        if ok {
            let now = self.sched.now_ms();
            let mut edits = self.user_edits.lock().unwrap_or_else(|p| p.into_inner());
            for field in Field::ALL.into_iter().filter(|f| patch.contains(*f)) {
                edits.push((record.to_string(), field, now));
            }
        }
        self.feed.pump();
    }

    /// A user creates a record in the CRM's UI; its id.
    pub fn user_create(&self, fields: &ContactFields) -> Option<String> {
        let id = match &self.feed.backend {
            Backend::HubSpot(sim) => sim
                .ui_create(hs_mapping::to_properties(fields, Some(PRONOUNS)))
                .ok(),
            Backend::Pipedrive(sim) => sim
                .try_ui_create(pd_mapping::create_body(fields, self.slots()))
                .ok()
                .map(|id| id.to_string()),
        };
        self.feed.pump();
        id
    }

    /// A user deletes a record in the CRM's UI.
    pub fn user_archive(&self, record: &str) {
        match &self.feed.backend {
            Backend::HubSpot(sim) => {
                let _ = sim.ui_delete(record);
            }
            Backend::Pipedrive(sim) => {
                sim.ui_delete(Self::pd_id(record));
            }
        }
        self.feed.pump();
    }

    /// A user restores a deleted record (HubSpot's recycle bin; Pipedrive has none). True if
    /// it was restored.
    pub fn user_restore(&self, record: &str) -> bool {
        let ok = match &self.feed.backend {
            Backend::HubSpot(sim) => sim.ui_restore(record).is_ok(),
            Backend::Pipedrive(_) => false,
        };
        self.feed.pump();
        ok
    }

    /// A user merges record `other` into `keep` in the CRM's UI; the survivor's id.
    pub fn user_merge(&self, keep: &str, other: &str) -> Option<String> {
        let survivor = match &self.feed.backend {
            Backend::HubSpot(sim) => sim.ui_merge(keep, other).ok(),
            Backend::Pipedrive(sim) => sim
                .try_ui_merge(Self::pd_id(other), Self::pd_id(keep))
                .ok()
                .map(|()| keep.to_string()),
        };
        self.feed.pump();
        survivor
    }

    pub(crate) fn note_read(&self, record: &str) {
        if let Some(w) = Sched::current_worker() {
            let now = self.sched.now_ms();
            self.reads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((w, record.to_string()), now);
        }
    }

    /// Our write of `patch` to `record`: users' edits of the fields it sets made since this
    /// worker last read the record are overwritten unseen. A Pipedrive name write sends both
    /// halves of the name.
    pub(crate) fn note_write(&self, record: &str, patch: &FieldPatch) {
        let Some(w) = Sched::current_worker() else {
            return;
        };
        let read = self
            .reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(w, record.to_string()))
            .copied()
            .unwrap_or(i64::MIN);
        let names = matches!(self.feed.backend, Backend::Pipedrive(_))
            && (patch.contains(Field::FirstName) || patch.contains(Field::LastName));
        let sets = |f: Field| {
            patch.contains(f) || (names && matches!(f, Field::FirstName | Field::LastName))
        };
        let edits = self.user_edits.lock().unwrap_or_else(|p| p.into_inner());
        let mut over = self.overwritten.lock().unwrap_or_else(|p| p.into_inner());
        for (r, field, at) in edits.iter() {
            if r == record && *at >= read && sets(*field) {
                tracing::info!(provider = %self.provider, record, ?field, worker = w, "simulated CRM: a user's edit overwritten by a write planned before it");
                over.insert((r.clone(), *field));
            }
        }
    }

    /// A rate-limit wait that would cross the job's deadline: nothing is sent, and the job
    /// runs again later without an attempt counted (the transport's answer when a wait would
    /// outlast the invocation).
    fn out_of_time(&self) -> Result<(), CrmError> {
        if self.sched.roll(false) == Fault::Before && self.sched.chance(0.3) {
            return Err(CrmError::OutOfTime {
                provider: self.provider,
                resume_at: self.sched.now()
                    + chrono::Duration::milliseconds(self.sched.between(100, 2000)),
            });
        }
        Ok(())
    }
}

/// A CRM as one worker's sync service sees it: the worker's real client, observed.
pub struct WorkerCrm {
    client: Arc<dyn CrmClient>,
    crm: Arc<SimCrm>,
}

#[async_trait]
impl CrmClient for WorkerCrm {
    fn provider(&self) -> Provider {
        self.client.provider()
    }

    async fn get(&self, ctx: &CrmContext, id: &str) -> Result<Option<CrmRecord>, CrmError> {
        self.crm.out_of_time()?;
        self.crm.note_read(id);
        self.client.get(ctx, id).await
    }

    async fn find_by_email(
        &self,
        ctx: &CrmContext,
        email: &str,
    ) -> Result<Option<CrmRecord>, CrmError> {
        self.crm.out_of_time()?;
        let found = self.client.find_by_email(ctx, email).await?;
        if let Some(r) = &found {
            self.crm.note_read(&r.id);
        }
        Ok(found)
    }

    async fn get_many(
        &self,
        ctx: &CrmContext,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, CrmRecord>, CrmError> {
        self.crm.out_of_time()?;
        for id in ids {
            self.crm.note_read(id);
        }
        self.client.get_many(ctx, ids).await
    }

    async fn create(
        &self,
        ctx: &CrmContext,
        fields: &ContactFields,
    ) -> Result<CrmRecord, CrmError> {
        self.crm.out_of_time()?;
        let created = self.client.create(ctx, fields).await;
        if let Ok(r) = &created {
            tracing::info!(provider = %self.provider(), id = %r.id, fields = ?r.fields, worker = ?Sched::current_worker(), "simulated CRM: record created");
        }
        created
    }

    async fn update(
        &self,
        ctx: &CrmContext,
        id: &str,
        patch: &FieldPatch,
    ) -> Result<CrmRecord, CrmError> {
        self.crm.out_of_time()?;
        self.crm.note_write(id, patch);
        self.client.update(ctx, id, patch).await
    }

    async fn archive(&self, ctx: &CrmContext, id: &str) -> Result<(), CrmError> {
        self.crm.out_of_time()?;
        self.client.archive(ctx, id).await
    }

    async fn find_many_by_email(
        &self,
        ctx: &CrmContext,
        emails: &[String],
    ) -> Result<std::collections::HashMap<String, CrmRecord>, CrmError> {
        self.crm.out_of_time()?;
        let found = self.client.find_many_by_email(ctx, emails).await?;
        for r in found.values() {
            self.crm.note_read(&r.id);
        }
        Ok(found)
    }

    async fn create_many(
        &self,
        ctx: &CrmContext,
        records: &[ContactFields],
    ) -> Result<Vec<Result<CrmRecord, CrmError>>, CrmError> {
        self.crm.out_of_time()?;
        self.client.create_many(ctx, records).await
    }

    async fn changed_since(
        &self,
        ctx: &CrmContext,
        cursor: Option<&str>,
    ) -> Result<ChangedRecords, CrmError> {
        self.crm.out_of_time()?;
        self.client.changed_since(ctx, cursor).await
    }

    fn fields_written(&self, patch: &FieldPatch, current: &ContactFields) -> FieldPatch {
        self.client.fields_written(patch, current)
    }

    fn custom_fields(&self) -> &'static [CustomField] {
        self.client.custom_fields()
    }

    async fn ensure_field(&self, ctx: &CrmContext, field: CustomField) -> Result<String, CrmError> {
        self.crm.out_of_time()?;
        self.client.ensure_field(ctx, field).await
    }

    async fn find_field(
        &self,
        ctx: &CrmContext,
        field: CustomField,
    ) -> Result<Option<String>, CrmError> {
        self.crm.out_of_time()?;
        self.client.find_field(ctx, field).await
    }
}

/// The two simulated CRMs of one run, on the virtual clock.
pub struct Crms {
    pub hubspot: Arc<SimCrm>,
    pub pipedrive: Arc<SimCrm>,
}

/// Builds both simulators (the workers' clients are built from them, one per worker).
pub fn build(sched: &Sched, outbox: &Arc<Outbox>, search_lag_ms: i64) -> Crms {
    let clock = {
        let sched = sched.clone();
        crm_sim::SimClock::virtual_time(move || sched.now())
    };
    let lag = u64::try_from(search_lag_ms).unwrap_or(0);
    let hs_sim = HubSpotSim::new(crm_sim::hubspot::HubSpotConfig {
        burst_limit: None,
        daily_limit: None,
        search_per_second: 0,
        search_index_lag_ms: lag,
        clock: clock.clone(),
        ..Default::default()
    });
    hs_sim.capture_webhooks();
    hs_sim
        .create_property(json!({
            "name": PRONOUNS, "label": "Pronouns", "type": "string",
            "fieldType": "text", "groupName": "contactinformation",
        }))
        .expect("pronouns property");
    let pd_sim = PipedriveSim::new(crm_sim::pipedrive::PipedriveConfig {
        burst_limit: None,
        oauth_burst_limit: None,
        search_burst_limit: None,
        daily_token_budget: None,
        daily_token_headers: false,
        // A fresh account: no standard job title (and Pipedrive's webhooks would not report
        // one), so the job title is a custom field, as the client provisions it.
        contact_sync_fields: false,
        search_index_lag_ms: lag,
        clock,
        ..Default::default()
    });
    pd_sim.capture_webhooks();
    let pd_pronouns = pd_sim
        .create_field("Pronouns", "varchar", &[])
        .expect("pronouns field");
    let pd_job_title = pd_sim
        .create_field("Job title", "varchar", &[])
        .expect("job title field");

    let hs_feed = Arc::new(Feed {
        backend: Backend::HubSpot(hs_sim.clone()),
        sched: sched.clone(),
        outbox: outbox.clone(),
        unreported: Mutex::new(BTreeSet::new()),
        keys: (Some(PRONOUNS.into()), None),
    });
    let pd_feed = Arc::new(Feed {
        backend: Backend::Pipedrive(pd_sim.clone()),
        sched: sched.clone(),
        outbox: outbox.clone(),
        unreported: Mutex::new(BTreeSet::new()),
        keys: (Some(pd_pronouns.clone()), Some(pd_job_title.clone())),
    });

    Crms {
        hubspot: Arc::new(SimCrm::new(
            crm_sim::hubspot::routes(hs_sim),
            hs_feed,
            sched.clone(),
            PRONOUNS.into(),
            PRONOUNS.into(),
        )),
        pipedrive: Arc::new(SimCrm::new(
            crm_sim::pipedrive::routes(pd_sim),
            pd_feed,
            sched.clone(),
            pd_pronouns,
            pd_job_title,
        )),
    }
}
