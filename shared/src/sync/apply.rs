//! A plan applied: the CRM write first (fenced on the link, so a write cut off or whose answer
//! is lost is known later as ours), then the app write (conditional on the contact's version),
//! then the link with the new base, the conflict log and the stats.

use chrono::{DateTime, Utc};
use tracing::info;

use super::pair::PairState;
use super::{SyncReport, SyncService};
use crate::domain::{
    AppWrite, ConflictRecord, ContactFields, ContactLink, CrmWrite, FieldPatch, LinkStatus,
    PendingWrites, Provider, RecentWrites, TenantId,
};
use crate::engine::{self, AppAction, CrmAction, LinkOutcome, SyncPlan};
use crate::error::{CrmError, StoreError, SyncError};
use crate::ports::{CrmClient, CrmContext};

impl SyncService {
    /// Applies a plan: the CRM write, then the app write (conditional on the contact's version),
    /// then the link with the new base, the conflict log and the stats. `overwritten`: the
    /// users' values the plan took as overwritten (seen from now on).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply(
        &self,
        tenant: &TenantId,
        client: &dyn CrmClient,
        ctx: &CrmContext,
        pair: PairState,
        plan: SyncPlan,
        overwritten: &FieldPatch,
        now: DateTime<Utc>,
    ) -> Result<SyncReport, SyncError> {
        let provider = client.provider();
        let mut external_id = pair
            .linked_id()
            .map(str::to_owned)
            .or_else(|| pair.record.as_ref().map(|r| r.id.clone()));
        let base = pair.base();
        let first_sync = pair.link.as_ref().is_none_or(ContactLink::is_intent);
        // The link a sync that links the pair ends with (a create's intent moves straight to
        // it, so the final write finds nothing left to write).
        let synced_link = |contact_id: &str,
                           external_id: &str,
                           crm_modified: Option<DateTime<Utc>>,
                           writes: RecentWrites,
                           app_synced: &Option<String>| ContactLink {
            writes,
            app_synced: app_synced.clone(),
            ..ContactLink::synced(
                tenant,
                contact_id,
                provider,
                external_id,
                crm_modified,
                plan.new_base.clone(),
                plan.warnings.clone(),
                now,
            )
        };
        // Our recent writes to the record, kept on the link (a user's value found overwritten
        // is resolved by this plan: it is not reported again).
        let unresolved = pair.recent_writes(now);
        // The last app write of the pair the new base includes: the one the contact shows.
        let mut app_synced = pair.contact.synced.get(&provider).map(|w| w.stamp.clone());
        let mut recent = unresolved.clone().resolve(overwritten);
        let PairState {
            contact,
            mut link,
            record,
        } = pair;
        match (link.as_ref(), external_id.as_deref(), record.as_ref()) {
            // An abandoned create whose record turned up: the intent moves to it first.
            (Some(l), Some(id), _) if l.is_placeholder() => {
                link = Some(self.links.rekey_link(l, id).await?);
            }
            // A record found by email, not linked: claim the link before writing anything. The
            // plan has no base; if another worker is creating or linking this record (it found
            // no link when this one looked), the claim fails and the job re-reads, to plan on
            // that worker's base instead of reverting the app to the CRM's older values.
            (None, Some(id), Some(r)) if !r.archived => {
                let claim = ContactLink {
                    status: LinkStatus::Pending,
                    last_synced_at: None,
                    ..ContactLink::synced(
                        tenant,
                        &contact.id,
                        provider,
                        id,
                        None,
                        ContactFields::default(),
                        Vec::new(),
                        now,
                    )
                };
                link = Some(self.links.put_link(&claim).await?);
            }
            _ => {}
        }
        // The conflicts are logged before anything is written: a write whose answer is lost
        // (it happened) leaves both sides agreeing, and the retry would see no conflict to log.
        // A write that then fails for good leaves an entry the retry's own entry follows.
        if let Some(id) = external_id.as_deref() {
            self.log_conflicts(tenant, &contact.id, provider, id, &plan.conflicts)
                .await?;
        }
        let mut report = SyncReport {
            conflicts: plan.conflicts.len(),
            ..Default::default()
        };
        let mut crm_modified = record.as_ref().and_then(|r| r.updated_at);
        // The writes are recorded on the link first (by its version: a worker that synced the
        // pair since makes this one re-read instead of writing over it), so a write cut off or
        // whose answer is lost is not mistaken later for a user's edit.
        let in_flight = match (&plan.crm, record.as_ref()) {
            (CrmAction::Update { patch }, Some(r)) => Some(
                CrmWrite::planned(
                    &r.fields,
                    r.updated_at,
                    &client.fields_written(patch, &r.fields),
                )
                .restoring(overwritten),
            ),
            _ => None,
        };
        let mut pending = PendingWrites {
            crm_write: in_flight.clone(),
            to_crm: match &plan.crm {
                CrmAction::Update { patch } => patch.clone(),
                _ => FieldPatch::default(),
            },
            to_app: match &plan.app {
                AppAction::Update { patch } => patch.clone(),
                _ => FieldPatch::default(),
            },
            app_write: None,
            since: Some(now),
            app_read: FieldPatch::default(),
        };
        for field in pending.to_app.fields().collect::<Vec<_>>() {
            pending
                .app_read
                .insert(field, contact.fields.get(field).map(str::to_owned));
        }
        if pending != PendingWrites::default()
            && let Some(l) = link.take()
        {
            // The writes it replaces were settled by this sync's reads: what they show landed
            // is kept (the base they agreed on, the write among ours), or the next sync would
            // take our own landed write for a user's change.
            // (With the app write it includes: the one the contact shows, as the final link
            // write would say.)
            let (settled, settled_app) = match &base {
                Some(b) if !l.is_placeholder() => (b.clone(), app_synced.clone()),
                _ => (l.base.clone(), l.app_synced.clone()),
            };
            if !pending.to_app.is_empty() {
                pending.app_write = Some(PendingWrites::app_stamp(&l));
            }
            let fenced = ContactLink {
                pending: Some(pending),
                base_hash: settled.content_hash(),
                base: settled,
                app_synced: settled_app,
                // Resolved only once this plan's writes are done.
                writes: unresolved,
                ..l
            };
            link = Some(self.links.put_link(&fenced).await?);
        }
        match &plan.crm {
            CrmAction::None => {}
            CrmAction::Create { fields } => {
                recent = RecentWrites::default();
                // With no app write to come, the intent moves straight to the link the sync
                // ends with (its record id and modification time filled in by the move).
                let settled = (plan.app == AppAction::None && plan.link == LinkOutcome::Synced)
                    .then(|| {
                        synced_link(&contact.id, "", None, RecentWrites::default(), &app_synced)
                    });
                let (created, moved) = self
                    .create_with_intent(client, ctx, &contact, link.take(), fields, settled, now)
                    .await?;
                external_id = Some(created.id.clone());
                crm_modified = created.updated_at;
                link = Some(moved);
                report.crm_writes += 1;
                // A new record: no value of a user's for it to have replaced.
                report.crm_writes_checked += 1;
            }
            CrmAction::Update { patch } => {
                let id = external_id.as_deref().unwrap_or_default();
                let updated = match client.update(ctx, id, patch).await {
                    Ok(updated) => updated,
                    Err(e @ CrmError::Rejected { status: 400, .. })
                        if self.written_field_vanished(client, ctx, patch).await? =>
                    {
                        return Err(StoreError::Conflict(format!(
                            "a {provider} field was deleted ({e})"
                        ))
                        .into());
                    }
                    Err(e) => {
                        if !matches!(e, CrmError::Unavailable { .. }) {
                            // Answered (refused, or never sent): it will not land later, so
                            // no other worker need wait for it.
                            self.withdraw_crm_write(link.as_ref()).await;
                        }
                        return Err(e.into());
                    }
                };
                crm_modified = updated.updated_at;
                if let Some(w) = in_flight {
                    recent = recent.with(w.landed(updated.updated_at, now));
                }
                report.crm_writes += 1;
                // In a CRM whose echoes do not say what a write replaced, the write is checked
                // now, before the link records it (saving the link a write of its own).
                if !client.echo_shows_what_a_write_replaced()
                    && self.check_landed(client, ctx, id, &mut recent).await
                {
                    report.crm_writes_checked += 1;
                }
                if plan.app != AppAction::None {
                    // The app write may fail or never run: store what is agreed now.

                    let mut crm_after = record
                        .as_ref()
                        .map(|r| r.fields.clone())
                        .unwrap_or_default();
                    crm_after.apply(patch);
                    let mid = engine::base_after_crm_write(
                        base.as_ref(),
                        &contact.fields,
                        &crm_after,
                        ctx.support(),
                    );
                    let agreed = ContactLink {
                        status: link.as_ref().map_or(LinkStatus::Pending, |l| l.status),
                        version: link.as_ref().map_or(0, |l| l.version),
                        last_synced_at: link.as_ref().and_then(|l| l.last_synced_at),
                        crm_last_modified: link.as_ref().and_then(|l| l.crm_last_modified),
                        // The app write is still to come.
                        pending: link.as_ref().and_then(|l| l.pending.clone()).map(|p| {
                            PendingWrites {
                                to_crm: FieldPatch::default(),
                                crm_write: None,
                                ..p
                            }
                        }),
                        writes: recent.clone(),
                        // The base it agreed on includes the app write the contact shows.
                        app_synced: app_synced.clone(),
                        ..ContactLink::synced(
                            tenant,
                            &contact.id,
                            provider,
                            id,
                            None,
                            mid,
                            plan.warnings.clone(),
                            now,
                        )
                    };
                    link = Some(self.links.put_link(&agreed).await?);
                }
            }
            CrmAction::Archive => {
                let id = external_id.as_deref().unwrap_or_default();
                client.archive(ctx, id).await?;
                report.crm_writes += 1;
            }
        }
        if let AppAction::Update { patch } = &plan.app {
            let mut updated = contact.clone();
            updated.fields.apply(patch);
            // Stamped as this fenced write, with what it writes: a retry that finds the stamp
            // knows it landed, whatever became of the link write after it.
            match link
                .as_ref()
                .and_then(|l| l.pending.as_ref())
                .and_then(|p| p.app_write.clone())
            {
                Some(stamp) => {
                    app_synced = Some(stamp.clone());
                    let write = AppWrite::after(
                        stamp,
                        patch,
                        contact.synced.get(&provider),
                        &contact.fields,
                    );
                    updated.synced.insert(provider, write);
                }
                None => {
                    updated.synced.remove(&provider);
                }
            }
            self.contacts.update(&updated).await?;
            report.app_writes += 1;
        }
        let Some(external_id) = external_id else {
            // Nothing to link (no record, none created): an abandoned intent is withdrawn.
            if let Some(intent) = link.filter(ContactLink::is_placeholder) {
                self.links.delete_link(&intent).await?;
            }
            return Ok(report);
        };
        report.record_id = Some(external_id.clone());
        match plan.link {
            LinkOutcome::Skip => {}
            LinkOutcome::Tombstone => {
                if let Some(mut link) = link {
                    link.status = LinkStatus::Deleted;
                    link.last_synced_at = Some(now);
                    link.last_error = None;
                    self.links.put_link(&link).await?;
                }
            }
            LinkOutcome::Synced => {
                let synced = ContactLink {
                    version: link.as_ref().map_or(0, |l| l.version),
                    ..synced_link(&contact.id, &external_id, crm_modified, recent, &app_synced)
                };
                if link.as_ref() != Some(&synced) || synced.version == 0 {
                    self.links.put_link(&synced).await?;
                }
            }
        }
        self.state
            .record_outcome(tenant, provider, Ok(()), plan.conflicts.len() as u64)
            .await?;
        // Issues are recorded only for contacts without a link, so only a first sync clears one
        // (no extra write on every later sync).
        if first_sync {
            self.state
                .set_issue(tenant, &contact.id, provider, None)
                .await?;
        }
        if report.app_writes + report.crm_writes > 0 {
            info!(%tenant, contact_id = %contact.id, %provider, app_writes = report.app_writes, crm_writes = report.crm_writes, conflicts = report.conflicts, "synced");
        }
        Ok(report)
    }

    /// A fenced CRM write that was certainly not made is withdrawn from the link (best effort:
    /// left there, it only makes the next sync of the pair wait for it).
    async fn withdraw_crm_write(&self, link: Option<&ContactLink>) {
        let Some(l) = link else { return };
        let Some(p) = &l.pending else { return };
        let withdrawn = ContactLink {
            pending: Some(PendingWrites {
                crm_write: None,
                to_crm: FieldPatch::default(),
                ..p.clone()
            }),
            ..l.clone()
        };
        let _ = self.links.put_link(&withdrawn).await;
    }

    async fn log_conflicts(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
        external_id: &str,
        conflicts: &[crate::domain::Conflict],
    ) -> Result<(), SyncError> {
        for conflict in conflicts {
            self.state
                .log_conflict(&ConflictRecord {
                    tenant: tenant.clone(),
                    contact_id: contact_id.to_string(),
                    provider,
                    external_id: external_id.to_string(),
                    conflict: conflict.clone(),
                })
                .await?;
        }
        Ok(())
    }
}
