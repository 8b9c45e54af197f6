//! One simulated deployment: the real sync service and worker over the simulated ports, K
//! workers, and the driver that plays the users, the webhooks and the scheduler.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shared::adapters::embedded::EmbeddedStore;
use shared::domain::{CustomField, Job, Provider, TenantId};
use shared::ports::FieldKeys;
use shared::sync::{SyncService, worker};
use shared::tenant::{TenantConfig, Tenants};
use tokio::task::JoinHandle;

use crate::crm::{self, Outbox, SimCrm};
use crate::queue::SimQueue;
use crate::sched::{FaultRates, Sched};
use crate::seen::Seen;
use crate::store::SimStore;

/// What one run does.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// User operations before the faults stop.
    pub ops: usize,
    pub workers: usize,
    pub rates: FaultRates,
    /// How stale a by-contact (GSI) read may be, ms.
    pub gsi_lag_ms: i64,
    /// How long a CRM's search index lags a create or an update, ms.
    pub search_lag_ms: i64,
    /// A broken store, to show the invariants catch one: link writes ignore the version they
    /// were read at (last writer wins, as without conditional writes).
    pub blind_link_writes: bool,
}

impl Config {
    pub fn new(seed: u64, ops: usize, workers: usize) -> Self {
        Self {
            seed,
            ops,
            workers,
            rates: FaultRates::default(),
            gsi_lag_ms: 500,
            search_lag_ms: 2_000,
            blind_link_writes: false,
        }
    }
}

pub fn tenant() -> TenantId {
    TenantId::new("sim")
}

/// A run's world.
pub struct World {
    pub cfg: Config,
    pub sched: Sched,
    pub store: EmbeddedStore,
    pub hubspot: Arc<SimCrm>,
    pub pipedrive: Arc<SimCrm>,
    pub outbox: Arc<Outbox>,
    pub queue: Arc<SimQueue>,
    /// When a sync first saw each value users wrote.
    pub seen: Arc<Seen>,
    sim_store: Arc<SimStore>,
    clock: shared::ports::Clock,
    /// Ids of imported contacts, shared by every worker.
    ids: Arc<AtomicU64>,
    workers: BTreeMap<usize, JoinHandle<()>>,
    next_worker: usize,
    /// Scheduler steps taken.
    pub steps: u64,
    /// Workers cut off.
    pub drops: u64,
    /// Something the run could not do (a worker that never reached a boundary).
    pub stuck: Option<String>,
}

impl World {
    pub async fn new(cfg: Config) -> Self {
        let sched = Sched::new(cfg.seed, cfg.rates);
        let store = EmbeddedStore::in_memory().expect("in-memory store");
        let clock: shared::ports::Clock = {
            let sched = sched.clone();
            Arc::new(move || sched.now())
        };
        let outbox = Arc::new(Outbox::default());
        let seen = Arc::new(Seen::default());
        let crm::Crms { hubspot, pipedrive } =
            crm::build(&sched, &outbox, cfg.search_lag_ms, tenant(), &seen);
        for (crm, field, key) in [
            (&hubspot, CustomField::Pronouns, &hubspot.pronouns_key),
            (&pipedrive, CustomField::Pronouns, &pipedrive.pronouns_key),
            (&pipedrive, CustomField::JobTitle, &pipedrive.job_title_key),
        ] {
            store
                .set_field_key(&tenant(), crm.provider(), field, Some(key))
                .await
                .expect("field key");
        }
        let sim_store = SimStore::new(
            store.clone(),
            sched.clone(),
            cfg.gsi_lag_ms,
            cfg.blind_link_writes,
            seen.clone(),
        );
        let ids = Arc::new(AtomicU64::new(0));
        let queue = Arc::new(SimQueue::new(sched.clone(), 0.03));
        let mut world = Self {
            cfg,
            sched,
            store,
            hubspot,
            pipedrive,
            outbox,
            queue,
            seen,
            sim_store,
            clock,
            ids,
            workers: BTreeMap::new(),
            next_worker: 0,
            steps: 0,
            drops: 0,
            stuck: None,
        };
        for _ in 0..world.cfg.workers {
            world.spawn_worker();
        }
        world
    }

    pub fn crm(&self, provider: Provider) -> &SimCrm {
        match provider {
            Provider::HubSpot => &self.hubspot,
            Provider::Pipedrive => &self.pipedrive,
        }
    }

    /// The sync service of a worker starting cold (a new Lambda instance): its own CRM
    /// clients, the shared store and queue.
    fn service(&self) -> SyncService {
        let mut tenants = Tenants::new();
        tenants.add(
            TenantConfig::new("sim"),
            vec![self.hubspot.client(), self.pipedrive.client()],
        );
        let ids = self.ids.clone();
        SyncService::new(
            self.sim_store.clone(),
            self.sim_store.clone(),
            Arc::new(self.store.clone()),
            Arc::new(tenants),
        )
        .with_clock(self.clock.clone())
        .with_id_source(Arc::new(move || {
            format!("imported-{}", ids.fetch_add(1, Ordering::SeqCst))
        }))
        .with_create_grace(std::time::Duration::from_secs(30))
    }

    fn spawn_worker(&mut self) {
        let id = self.next_worker;
        self.next_worker += 1;
        let (service, queue) = (self.service(), self.queue.clone());
        let handle = tokio::spawn(Sched::as_worker(id, async move {
            loop {
                // The worker Lambda's loop: a batch of up to three, read together, settled
                // one by one. A queue error just ends the round, as a failed invocation does.
                let _ = worker::run_once(&service, queue.as_ref(), 3).await;
            }
        }));
        self.workers.insert(id, handle);
    }

    /// Lets every running worker reach its next boundary, or block on a lock another one
    /// holds while parked (a client's field lock, a value being fetched once): those run on
    /// once the holder is granted its step.
    async fn settle(&mut self) {
        let (mut last, mut still) = (usize::MAX, 0);
        for _ in 0..100_000 {
            let parked = self.sched.parked().len();
            if parked == self.workers.len() {
                return;
            }
            if parked == last {
                still += 1;
                if still >= 64 && parked > 0 {
                    return;
                }
            } else {
                (last, still) = (parked, 0);
            }
            tokio::task::yield_now().await;
        }
        self.stuck
            .get_or_insert_with(|| "a worker never reached a boundary".into());
    }

    /// Moves the webhooks that fell due into the queue.
    pub fn deliver_hooks(&self) {
        for hook in self.outbox.take_due(self.sched.now_ms()) {
            self.queue.send(Job::Change(hook.event), 0);
        }
    }

    /// One scheduler step: a worker runs to its next boundary (or is cut off there).
    pub async fn step(&mut self) {
        self.settle().await;
        self.deliver_hooks();
        let parked = self.sched.parked();
        if parked.is_empty() {
            return;
        }
        let id = parked[self.sched.below(parked.len())];
        if self.sched.drop_now() {
            // Cut off between two calls: its messages come back after the visibility timeout.
            self.sched.forget(id);
            if let Some(h) = self.workers.remove(&id) {
                h.abort();
                let _ = h.await;
            }
            self.drops += 1;
            self.spawn_worker();
        } else {
            self.sched.grant(id);
        }
        self.sched.advance(self.sched.between(0, 4));
        self.steps += 1;
    }

    /// Runs workers until nothing is queued, in flight or on its way, moving the clock on
    /// whenever nothing is due. False if that did not happen within `max_steps`.
    pub async fn drain(&mut self, max_steps: u64) -> bool {
        let start = self.steps;
        let mut idle = 0;
        while self.steps - start < max_steps {
            let (queued, _) = self.queue.counts();
            if queued == 0 && self.outbox.is_empty() {
                return true;
            }
            let now = self.sched.now_ms();
            let live = |w: usize| self.workers.contains_key(&w);
            let next_visible = self.queue.next_visible(&live);
            if next_visible.is_none_or(|t| t > now) {
                idle += 1;
            }
            if idle > 4 * self.workers.len() as u64 {
                // Nothing to do until the next message or webhook falls due.
                idle = 0;
                let next = [next_visible, self.outbox.next_due()]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(now + 1_000);
                self.sched.advance((next - now).max(1));
            }
            self.step().await;
        }
        false
    }

    /// Stops every worker (end of run).
    pub async fn stop(&mut self) {
        for (id, h) in std::mem::take(&mut self.workers) {
            self.sched.forget(id);
            h.abort();
            let _ = h.await;
        }
    }
}
