//! The CRMs as the workers see them: the real HubSpot and Pipedrive clients, talking to the
//! stateful simulators in process through an
//! [`Exchange`](shared::crm::transport::Exchange) that stands for the network. Every request
//! waits at a scheduler boundary and may meet the faults of a remote API: refused before it
//! has any effect (a 429 with the CRM's headers, a 503, a dropped connection), or applied with
//! its answer lost. The simulators run on the virtual clock, with their search indexes lagging
//! creates and updates; their webhooks (ours included) are captured and delivered by the
//! driver through the real payload parsers, late, out of order, twice or never, the echoes of
//! our own writes dropped as the real ingest drops them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crm_sim::hubspot::HubSpotSim;
use crm_sim::pipedrive::PipedriveSim;
use serde_json::{Value, json};
use shared::crm::hubspot::{self, mapping as hs_mapping};
use shared::crm::pipedrive::mapping::{self as pd_mapping, Person, Slots};
use shared::domain::{ContactFields, CrmRecord, Field, FieldPatch, Provider, TenantId};
use shared::error::CrmError;
use shared::ports::CrmClient;

use crate::sched::{Fault, Sched};
use crate::seen::Seen;

mod feed;
mod network;
mod worker;

pub use feed::{Backend, Feed, Hook, Outbox};
pub use network::SimExchange;
pub use worker::WorkerCrm;

/// The pronouns property (HubSpot) and the Pipedrive field's name.
pub const PRONOUNS: &str = "pronouns";

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
    /// The values our writes carried: seen by a sync.
    seen: Arc<Seen>,
}

impl SimCrm {
    pub fn new(
        router: axum::Router,
        feed: Arc<Feed>,
        sched: Sched,
        pronouns_key: String,
        job_title_key: String,
        seen: Arc<Seen>,
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
            seen,
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

    /// A create of ours sent `fields`: seen by a sync.
    pub(crate) fn note_create(&self, fields: &ContactFields) {
        self.seen.fields(fields, self.sched.now());
    }

    /// Our write of `patch` to `record`: users' edits of the fields it sets made since this
    /// worker last read the record are overwritten unseen. A Pipedrive name write sends both
    /// halves of the name.
    pub(crate) fn note_write(&self, record: &str, patch: &FieldPatch) {
        self.seen.patch(patch, self.sched.now());
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

/// The two simulated CRMs of one run, on the virtual clock.
pub struct Crms {
    pub hubspot: Arc<SimCrm>,
    pub pipedrive: Arc<SimCrm>,
}

/// Builds both simulators (the workers' clients are built from them, one per worker).
pub fn build(
    sched: &Sched,
    outbox: &Arc<Outbox>,
    search_lag_ms: i64,
    tenant: TenantId,
    seen: &Arc<Seen>,
) -> Crms {
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
        tenant: tenant.clone(),
    });
    let pd_feed = Arc::new(Feed {
        backend: Backend::Pipedrive(pd_sim.clone()),
        sched: sched.clone(),
        outbox: outbox.clone(),
        unreported: Mutex::new(BTreeSet::new()),
        keys: (Some(pd_pronouns.clone()), Some(pd_job_title.clone())),
        tenant,
    });

    Crms {
        hubspot: Arc::new(SimCrm::new(
            crm_sim::hubspot::routes(hs_sim),
            hs_feed,
            sched.clone(),
            PRONOUNS.into(),
            PRONOUNS.into(),
            seen.clone(),
        )),
        pipedrive: Arc::new(SimCrm::new(
            crm_sim::pipedrive::routes(pd_sim),
            pd_feed,
            sched.clone(),
            pd_pronouns,
            pd_job_title,
            seen.clone(),
        )),
    }
}
