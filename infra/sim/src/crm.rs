//! A CRM as the workers see it: the in-process CRM behind a boundary, with the faults of a
//! remote API (an outage or a 429 before the effect; a write whose answer is lost after it), a
//! search index that lags creates (Pipedrive's: a person is not found by email for a while;
//! HubSpot's lookup by email is a read by unique property, consistent), and a webhook for every
//! change, ours included, delivered late, out of order, twice or never.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shared::crm::memory::MemoryCrm;
use shared::domain::{
    ContactFields, CrmRecord, CustomField, Field, FieldPatch, Provider, Reported,
};
use shared::error::CrmError;
use shared::ports::{ChangedRecords, CrmClient, CrmContext};

use crate::sched::{Fault, Sched};

/// A webhook on its way: due at `due_ms`, saying that `record` of `provider` changed, and for a
/// user's edit, the values it set and when (as both CRMs' webhooks do; those of our own writes
/// are dropped as echoes by the real ingest, here they come as bare triggers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub due_ms: i64,
    pub provider: Provider,
    pub record: String,
    pub deleted: bool,
    pub reported: Vec<Reported>,
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

pub struct SimCrm {
    pub inner: MemoryCrm,
    sched: Sched,
    outbox: Arc<Outbox>,
    /// When each record becomes findable by email (Pipedrive's lagging search).
    indexed_at: Mutex<BTreeMap<String, i64>>,
    search_lag_ms: i64,
    /// When each worker last read each record.
    reads: Mutex<BTreeMap<(usize, String), i64>>,
    /// Users' edits: record, field, when.
    user_edits: Mutex<Vec<(String, Field, i64)>>,
    /// Users' edits one of our writes overwrote, planned on a read from before them (neither
    /// CRM offers a conditional write): record and field.
    pub overwritten: Mutex<BTreeSet<(String, Field)>>,
    /// Users' edits whose webhook was dropped: nothing reports their values (record, field).
    pub unreported: Mutex<BTreeSet<(String, Field)>>,
}

impl SimCrm {
    pub fn new(inner: MemoryCrm, sched: Sched, outbox: Arc<Outbox>, search_lag_ms: i64) -> Self {
        Self {
            inner,
            sched,
            outbox,
            indexed_at: Mutex::new(BTreeMap::new()),
            search_lag_ms,
            reads: Mutex::new(BTreeMap::new()),
            user_edits: Mutex::new(Vec::new()),
            overwritten: Mutex::new(BTreeSet::new()),
            unreported: Mutex::new(BTreeSet::new()),
        }
    }

    /// A user edits a record in the CRM's UI (its webhook follows).
    pub fn user_edit(&self, record: &str, patch: &FieldPatch) {
        self.inner.user_edit(record, patch);
        let now = self.sched.now_ms();
        let mut edits = self.user_edits.lock().unwrap_or_else(|p| p.into_inner());
        for field in Field::ALL.into_iter().filter(|f| patch.contains(*f)) {
            edits.push((record.to_string(), field, now));
        }
        drop(edits);
        let at = self.sched.now();
        let reported = patch
            .0
            .iter()
            .map(|(field, value)| Reported {
                field: *field,
                value: value.clone(),
                at,
            })
            .collect();
        self.changed(record, false, false, reported);
    }

    fn note_read(&self, record: &str) {
        if let Some(w) = Sched::current_worker() {
            let now = self.sched.now_ms();
            self.reads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((w, record.to_string()), now);
        }
    }

    /// Our write of `patch` to `record`: users' edits of those fields made since this worker
    /// last read the record are overwritten unseen.
    fn note_write(&self, record: &str, patch: &FieldPatch) {
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
        let edits = self.user_edits.lock().unwrap_or_else(|p| p.into_inner());
        let mut over = self.overwritten.lock().unwrap_or_else(|p| p.into_inner());
        for (r, field, at) in edits.iter() {
            if r == record && *at >= read && patch.contains(*field) {
                over.insert((r.clone(), *field));
            }
        }
    }

    fn provider_of(&self) -> Provider {
        self.inner.provider()
    }

    /// A change to `record`: its webhook is queued (late, maybe twice, maybe never), and a new
    /// record's index entry is due after the search lag.
    pub fn changed(&self, record: &str, created: bool, deleted: bool, reported: Vec<Reported>) {
        let now = self.sched.now_ms();
        if created && self.search_lag_ms > 0 {
            let lag = self.sched.between(0, self.search_lag_ms);
            self.indexed_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(record.to_string(), now + lag);
        }
        let copies = if self.sched.chance(0.05) {
            0
        } else if self.sched.chance(0.05) {
            2
        } else {
            1
        };
        if copies == 0 {
            let mut unreported = self.unreported.lock().unwrap_or_else(|p| p.into_inner());
            for r in &reported {
                unreported.insert((record.to_string(), r.field));
            }
        }
        for _ in 0..copies {
            self.outbox.push(Hook {
                due_ms: now + self.sched.between(20, 1500),
                provider: self.provider_of(),
                record: record.to_string(),
                deleted,
                reported: reported.clone(),
            });
        }
    }

    async fn enter(&self, write: bool) -> Result<bool, CrmError> {
        self.sched.boundary().await;
        let provider = self.provider_of();
        match self.sched.roll(write) {
            Fault::Before if self.sched.chance(0.5) => Err(CrmError::RateLimited {
                provider,
                retry_after: Duration::from_millis(self.sched.between(100, 2000) as u64),
            }),
            // A rate-limit wait that would cross the job's deadline: nothing sent, the job
            // runs again later without counting an attempt.
            Fault::Before if self.sched.chance(0.3) => Err(CrmError::OutOfTime {
                provider,
                resume_at: self.sched.now()
                    + chrono::Duration::milliseconds(self.sched.between(100, 2000)),
            }),
            Fault::Before => Err(CrmError::Unavailable {
                provider,
                message: "simulated: 503".into(),
            }),
            Fault::AnswerLost => Ok(true),
            Fault::None => Ok(false),
        }
    }

    fn lost(&self) -> CrmError {
        CrmError::Unavailable {
            provider: self.provider_of(),
            message: "simulated: timeout after the request was sent".into(),
        }
    }

    fn indexed(&self, id: &str) -> bool {
        let now = self.sched.now_ms();
        self.indexed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_none_or(|at| *at <= now)
    }
}

#[async_trait]
impl CrmClient for SimCrm {
    fn provider(&self) -> Provider {
        self.provider_of()
    }

    async fn get(&self, ctx: &CrmContext, id: &str) -> Result<Option<CrmRecord>, CrmError> {
        self.enter(false).await?;
        self.note_read(id);
        self.inner.get(ctx, id).await
    }

    async fn find_by_email(
        &self,
        ctx: &CrmContext,
        email: &str,
    ) -> Result<Option<CrmRecord>, CrmError> {
        self.enter(false).await?;
        if self.search_lag_ms == 0 {
            let found = self.inner.find_by_email(ctx, email).await?;
            if let Some(r) = &found {
                self.note_read(&r.id);
            }
            return Ok(found);
        }
        // The search index: records created a moment ago are not in it yet.
        let found = self
            .inner
            .records()
            .into_iter()
            .filter(|r| !r.archived && r.fields.email.as_deref() == Some(email))
            .find(|r| self.indexed(&r.id));
        match found {
            Some(r) => {
                self.note_read(&r.id);
                self.inner.get(ctx, &r.id).await
            }
            None => Ok(None),
        }
    }

    async fn create(
        &self,
        ctx: &CrmContext,
        fields: &ContactFields,
    ) -> Result<CrmRecord, CrmError> {
        let lose = self.enter(true).await?;
        let created = self.inner.create(ctx, fields).await?;
        tracing::info!(provider = %self.provider_of(), id = %created.id, fields = ?created.fields, worker = ?Sched::current_worker(), lost = lose, "simulated CRM: record created");
        self.changed(&created.id, true, false, Vec::new());
        if lose { Err(self.lost()) } else { Ok(created) }
    }

    async fn update(
        &self,
        ctx: &CrmContext,
        id: &str,
        patch: &FieldPatch,
    ) -> Result<CrmRecord, CrmError> {
        let lose = self.enter(true).await?;
        self.note_write(id, patch);
        let updated = self.inner.update(ctx, id, patch).await?;
        self.changed(id, false, false, Vec::new());
        if lose { Err(self.lost()) } else { Ok(updated) }
    }

    async fn archive(&self, ctx: &CrmContext, id: &str) -> Result<(), CrmError> {
        let lose = self.enter(true).await?;
        self.inner.archive(ctx, id).await?;
        self.changed(id, false, true, Vec::new());
        if lose { Err(self.lost()) } else { Ok(()) }
    }

    async fn changed_since(
        &self,
        ctx: &CrmContext,
        cursor: Option<&str>,
    ) -> Result<ChangedRecords, CrmError> {
        self.enter(false).await?;
        self.inner.changed_since(ctx, cursor).await
    }

    fn custom_fields(&self) -> &'static [CustomField] {
        self.inner.custom_fields()
    }

    async fn ensure_field(&self, ctx: &CrmContext, field: CustomField) -> Result<String, CrmError> {
        self.enter(true).await?;
        self.inner.ensure_field(ctx, field).await
    }

    async fn find_field(
        &self,
        ctx: &CrmContext,
        field: CustomField,
    ) -> Result<Option<String>, CrmError> {
        self.enter(false).await?;
        self.inner.find_field(ctx, field).await
    }
}
