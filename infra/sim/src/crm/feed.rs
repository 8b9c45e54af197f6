//! The simulators' webhooks on their way: captured, parsed by the real parsers under the real
//! ingest's rules, then delivered late, out of order, twice or never.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crm_sim::hubspot::HubSpotSim;
use crm_sim::pipedrive::PipedriveSim;
use shared::crm::hubspot::webhook::{HubSpotEvent, coalesce};
use shared::crm::pipedrive::mapping::Slots;
use shared::crm::pipedrive::webhook::PipedriveWebhook;
use shared::domain::{ChangeEvent, Field, Provider, TenantId};
use std::sync::Arc;

use crate::sched::Sched;

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
    pub(crate) sched: Sched,
    pub(crate) outbox: Arc<Outbox>,
    /// Users' edits whose webhook was dropped: nothing reports their values (record, field).
    pub unreported: Mutex<BTreeSet<(String, Field)>>,
    /// The tenant's pronouns and job title field keys, as the ingest reads them.
    pub(crate) keys: (Option<String>, Option<String>),
    /// The tenant the webhooks are for.
    pub(crate) tenant: TenantId,
}

impl Feed {
    pub(crate) fn provider(&self) -> Provider {
        match self.backend {
            Backend::HubSpot(_) => Provider::HubSpot,
            Backend::Pipedrive(_) => Provider::Pipedrive,
        }
    }

    /// Takes the webhooks the simulator produced and puts them on their way, as the real
    /// ingest would enqueue them: HubSpot's echoes of our own writes dropped, one trigger per
    /// record of a HubSpot batch; Pipedrive's echoes as such (they check our writes).
    pub fn pump(&self) {
        let t = self.tenant.clone();
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
                    .filter_map(|h| {
                        let by_user = !h.is_own_write(own);
                        h.trigger(&t, slots, own).map(|c| (c, by_user))
                    })
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
