//! Each CRM's health for a tenant, as an operator asks for it: how many contacts are in sync,
//! excluded (and why), failing (grouped by error); and whether the CRM's webhooks still reach
//! us — a poll that finds changes no webhook delivered, while no webhook comes in for longer
//! than the grace, means they silently stopped.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;
use utoipa::ToSchema;

use super::SyncService;
use crate::domain::{ContactLink, LinkStatus, Provider, TenantId};
use crate::error::SyncError;
use crate::ports::WebhookHealth;

/// How often one process marks a CRM's webhook as seen (a write), at most (or a quarter of the
/// grace, if that is shorter).
const WEBHOOK_MARK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// By default, how long a CRM's webhook may take before a poll that finds its change counts it
/// as missed (seconds).
pub const WEBHOOK_GRACE_SECS: u64 = 300;
/// Contacts named per group, at most.
const EXAMPLES: usize = 5;

/// Whether a CRM's webhooks reach us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    /// Webhooks come in (or no poll found a change they missed).
    Ok,
    /// The last poll found changes no webhook delivered, and none has come in within the grace.
    Broken,
    /// No webhook seen yet, and no poll found one missing.
    Unknown,
}

/// Contacts in one state for one reason.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReasonCount {
    pub reason: String,
    pub count: usize,
    /// Up to 5 of the contacts.
    pub contacts: Vec<String>,
}

/// One CRM's health for a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CrmHealthReport {
    pub provider: Provider,
    pub in_sync: usize,
    /// Waiting for a sync (queued, or being created).
    pub pending: usize,
    pub excluded: Vec<ReasonCount>,
    pub failing: Vec<ReasonCount>,
    pub webhooks: WebhookState,
    pub last_webhook_at: Option<DateTime<Utc>>,
    pub seconds_since_webhook: Option<i64>,
    pub last_poll_at: Option<DateTime<Utc>>,
    /// Changes the last poll found that no webhook had delivered.
    pub missed_by_last_poll: u64,
    /// When a poll last found such a change.
    pub last_missed_at: Option<DateTime<Utc>>,
    /// What an operator should do, when something is wrong.
    pub warning: Option<String>,
}

fn group(links: &[&ContactLink], reason: impl Fn(&ContactLink) -> String) -> Vec<ReasonCount> {
    let mut groups: BTreeMap<String, ReasonCount> = BTreeMap::new();
    for l in links {
        let reason = reason(l);
        let g = groups.entry(reason.clone()).or_insert(ReasonCount {
            reason,
            count: 0,
            contacts: Vec::new(),
        });
        g.count += 1;
        if g.contacts.len() < EXAMPLES {
            g.contacts.push(l.contact_id.clone());
        }
    }
    let mut out: Vec<ReasonCount> = groups.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    out
}

impl SyncService {
    /// A webhook from `provider` reached us for `tenant`. Marked in the state at most once a
    /// minute per process; a failure to mark is logged, not the webhook's.
    pub async fn note_webhook(&self, tenant: &TenantId, provider: Provider) {
        {
            let mut marks = self.webhook_marks.lock().unwrap_or_else(|p| p.into_inner());
            let key = (tenant.clone(), provider);
            let every = WEBHOOK_MARK_EVERY.min(self.webhook_grace.to_std().unwrap_or_default() / 4);
            if marks.get(&key).is_some_and(|at| at.elapsed() < every) {
                return;
            }
            marks.insert(key, Instant::now());
        }
        if let Err(e) = self.state.note_webhook(tenant, provider, self.now()).await {
            warn!(%tenant, %provider, error = %e, "could not mark the webhook as seen");
        }
    }

    /// A CRM's daily quota is spent for the tenant until `until`: an outcome.
    pub(super) async fn quota_paused(
        &self,
        tenant: &TenantId,
        provider: Provider,
        until: DateTime<Utc>,
    ) {
        self.publish(vec![crate::domain::SyncOutcome::QuotaPaused {
            tenant: tenant.clone(),
            provider,
            until,
            at: self.now(),
        }])
        .await;
    }

    /// Whether a change a poll found should have come by webhook already: made longer ago than
    /// the webhooks' grace.
    pub(super) fn missed_by_webhooks(&self, updated_at: Option<DateTime<Utc>>) -> bool {
        updated_at.is_some_and(|u| u <= self.now() - self.webhook_grace)
    }

    /// Whether a CRM's webhooks reach us: broken when a poll found a change no webhook had
    /// delivered, and none has come in since, for longer than the grace (a webhook on its way
    /// when the poll ran is no sign).
    pub fn webhook_state(&self, health: &WebhookHealth) -> WebhookState {
        let quiet = health
            .last_webhook_at
            .is_none_or(|at| self.now() - at > self.webhook_grace);
        let missed_since = health
            .last_missed_at
            .is_some_and(|m| health.last_webhook_at.is_none_or(|w| w < m));
        if missed_since && quiet {
            WebhookState::Broken
        } else if health.last_webhook_at.is_none() {
            WebhookState::Unknown
        } else {
            WebhookState::Ok
        }
    }

    /// One CRM's health for the tenant, from its links (`links`: the tenant's) and what its
    /// webhooks and polls left.
    pub async fn crm_health(
        &self,
        tenant: &TenantId,
        provider: Provider,
        links: &[ContactLink],
    ) -> Result<CrmHealthReport, SyncError> {
        let mine: Vec<&ContactLink> = links.iter().filter(|l| l.provider == provider).collect();
        let with = |s: LinkStatus| -> Vec<&ContactLink> {
            mine.iter().copied().filter(|l| l.status == s).collect()
        };
        let name = provider.display_name();
        let excluded = group(&with(LinkStatus::Deleted), |_| {
            format!("deleted in the app or in {name} (kept as a tombstone: never recreated)")
        });
        let failing = group(&with(LinkStatus::Error), |l| {
            l.last_error
                .clone()
                .unwrap_or_else(|| "unknown error".into())
        });
        let health = self.state.webhook_health(tenant, provider).await?;
        let now = self.now();
        let webhooks = self.webhook_state(&health);
        let warning = (webhooks == WebhookState::Broken).then(|| {
            let since = match health.last_webhook_at {
                Some(at) => format!("none has come in for {} min", (now - at).num_minutes()),
                None => "none has ever come in".into(),
            };
            format!(
                "{name} webhooks look broken: a poll found changes no webhook delivered, and {since}; \
                 changes now arrive only with the poll. Check the webhook subscription in {name}."
            )
        });
        Ok(CrmHealthReport {
            provider,
            in_sync: with(LinkStatus::Synced).len(),
            pending: with(LinkStatus::Pending).len() + with(LinkStatus::Creating).len(),
            excluded,
            failing,
            webhooks,
            seconds_since_webhook: health.last_webhook_at.map(|at| (now - at).num_seconds()),
            last_webhook_at: health.last_webhook_at,
            last_poll_at: health.last_poll_at,
            missed_by_last_poll: health.missed_by_last_poll,
            last_missed_at: health.last_missed_at,
            warning,
        })
    }
}
