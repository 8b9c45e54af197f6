//! Each contact's sync history: one entry per sync that wrote something, met a conflict or
//! failed, with per CRM what was written where (old → new), the conflicts and who won, and the
//! error. Built from the plan and what the pair held before it (pure), recorded once per job.

use tracing::warn;

use super::SyncService;
use super::pair::PairState;
use crate::domain::history::{all_set, changes};
use crate::domain::{
    CrmDecision, DecisionAction, HistoryEntry, LinkStatus, Provider, TenantId, Trigger,
};
use crate::engine::{AppAction, CrmAction, LinkOutcome, SyncPlan};
use crate::error::SyncError;

/// What a plan does with one CRM, as history tells it; `None` for a plan that changes nothing
/// (an echo, a sync that found both sides agreeing).
pub(super) fn decision(
    provider: Provider,
    pair: &PairState,
    plan: &SyncPlan,
) -> Option<CrmDecision> {
    let before = pair
        .record
        .as_ref()
        .filter(|r| !r.archived)
        .map(|r| &r.fields);
    let crm_writes = match &plan.crm {
        CrmAction::Create { fields } => all_set(fields),
        CrmAction::Update { patch } => changes(patch, before),
        CrmAction::None | CrmAction::Archive => Vec::new(),
    };
    let app_writes = match &plan.app {
        AppAction::Create { fields } => all_set(fields),
        AppAction::Update { patch } => changes(patch, Some(&pair.contact.fields)),
        AppAction::None => Vec::new(),
    };
    let newly_linked = pair
        .link
        .as_ref()
        .is_none_or(|l| l.is_placeholder() || l.status == LinkStatus::Pending)
        && plan.link == LinkOutcome::Synced;
    let action = match (&plan.crm, plan.link) {
        (CrmAction::Create { .. }, _) => DecisionAction::Created,
        (CrmAction::Archive, _) => DecisionAction::Archived,
        (_, LinkOutcome::Tombstone)
            if pair
                .link
                .as_ref()
                .is_some_and(|l| l.status != LinkStatus::Deleted) =>
        {
            DecisionAction::Tombstoned
        }
        _ if newly_linked && pair.record.is_some() => DecisionAction::Linked,
        _ if !crm_writes.is_empty() || !app_writes.is_empty() => DecisionAction::Updated,
        _ if !plan.conflicts.is_empty() => DecisionAction::Updated,
        _ => return None,
    };
    Some(CrmDecision {
        provider,
        record_id: pair
            .linked_id()
            .map(str::to_owned)
            .or_else(|| pair.record.as_ref().map(|r| r.id.clone())),
        action,
        crm_writes,
        app_writes,
        conflicts: plan.conflicts.clone(),
        error: None,
    })
}

/// A failed sync with one CRM, as history tells it; `None` for a wait that is no failure
/// (another worker's create under way, a check not due yet, a job out of time).
pub(super) fn failure(provider: Provider, err: &SyncError) -> Option<CrmDecision> {
    if matches!(err, SyncError::Busy { .. } | SyncError::CheckDue { .. }) || err.is_out_of_time() {
        return None;
    }
    Some(CrmDecision {
        provider,
        record_id: None,
        action: DecisionAction::Failed,
        crm_writes: Vec::new(),
        app_writes: Vec::new(),
        conflicts: Vec::new(),
        error: Some(err.to_string()),
    })
}

impl SyncService {
    /// Records one entry of the contact's history, if the sync decided anything. A failure to
    /// record is logged, not the sync's: what it did in the CRMs and the app stands.
    pub(super) async fn record_history(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        trigger: Trigger,
        crms: Vec<CrmDecision>,
    ) {
        if crms.is_empty() {
            return;
        }
        let entry = HistoryEntry {
            tenant: tenant.clone(),
            contact_id: contact_id.to_string(),
            at: self.now(),
            trigger,
            crms,
        };
        if let Err(e) = self.state.record_history(&entry).await {
            warn!(%tenant, contact_id, error = %e, "could not record the contact's sync history");
        }
    }

    /// The contact's history, newest first (at most 50 entries).
    pub async fn history(
        &self,
        tenant: &TenantId,
        contact_id: &str,
    ) -> Result<Vec<HistoryEntry>, SyncError> {
        Ok(self
            .state
            .history(tenant, contact_id, crate::adapters::state::HISTORY_KEEP)
            .await?)
    }
}
