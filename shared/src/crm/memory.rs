//! An in-process CRM holding universal records: a test double for the sync service's unit
//! tests. The HTTP clients (HubSpot, Pipedrive) are tested against the simulators in `crm-sim`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;

use crate::domain::{ContactFields, CrmRecord, CustomField, Field, FieldPatch, Provider, Reported};
use crate::error::CrmError;
use crate::ports::{ChangedRecord, ChangedRecords, Clock, CrmClient, CrmContext, RecordListing};

#[derive(Default)]
struct Inner {
    next_id: u64,
    records: BTreeMap<String, CrmRecord>,
    writes: usize,
    failing: Option<CrmError>,
    /// The key of the pronouns field, while it exists.
    pronouns_key: Option<String>,
    /// Creates that happen but whose answer is lost (a timeout after the CRM acted).
    lost_create_answers: usize,
    /// Emails need not be unique (as in Pipedrive): a create never answers "already exists".
    duplicate_emails: bool,
    /// How long a create takes, so concurrent syncs overlap.
    create_delay: std::time::Duration,
    /// The clock of modification times (the system's unless set).
    clock: Option<Clock>,
    /// Emails the CRM refuses to store (400), as HubSpot refuses addresses it deems invalid.
    refused_emails: Vec<String>,
    /// A user's edit that lands just before our next update (neither CRM has conditional
    /// writes): the update overwrites it.
    edit_before_update: Option<FieldPatch>,
    /// Every value each record's fields were set to, and when (the CRMs' field history).
    history: BTreeMap<String, Vec<Reported>>,
    /// Whether the echo of our write says what it replaced (as Pipedrive's does).
    echoes: bool,
}

impl Inner {
    /// Record `id` changed from `before` to its values now, at `at` (through the port: `ours`):
    /// the history grows.
    fn note(&mut self, id: &str, before: &ContactFields, at: chrono::DateTime<Utc>, ours: bool) {
        let Some(after) = self.records.get(id).map(|r| r.fields.clone()) else {
            return;
        };
        let entries = self.history.entry(id.to_string()).or_default();
        for field in Field::ALL {
            if before.get(field) != after.get(field) {
                entries.push(
                    Reported::set(field, after.get(field).map(str::to_owned), at).via_api(ours),
                );
            }
        }
    }
}

/// In-memory CRM for one provider.
#[derive(Clone)]
pub struct MemoryCrm {
    provider: Provider,
    inner: Arc<Mutex<Inner>>,
}

impl MemoryCrm {
    pub fn new(provider: Provider) -> Self {
        Self {
            provider,
            inner: Arc::new(Mutex::new(Inner {
                next_id: 1000,
                ..Default::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> chrono::DateTime<Utc> {
        let clock = self.lock().clock.clone();
        clock.map_or_else(Utc::now, |c| c())
    }

    /// Stamps modifications with `clock`'s time (a simulation's virtual time).
    pub fn with_clock(self, clock: Clock) -> Self {
        self.lock().clock = Some(clock);
        self
    }

    /// Writes made through the port (create, update, archive).
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// Every call fails with `err` until cleared.
    pub fn fail_with(&self, err: Option<CrmError>) {
        self.lock().failing = err;
    }

    /// A user creates (`Some(key)`) or deletes (`None`) the pronouns field in the CRM's settings.
    pub fn user_set_pronouns_field(&self, key: Option<&str>) {
        self.lock().pronouns_key = key.map(str::to_owned);
    }

    /// The next `n` creates happen, but answer as if the connection dropped.
    pub fn lose_create_answers(&self, n: usize) {
        self.lock().lost_create_answers = n;
    }

    /// Lets two records share an email, as Pipedrive does: the CRM itself prevents no duplicate.
    pub fn allow_duplicate_emails(&self) {
        self.lock().duplicate_emails = true;
    }

    /// Refuses records with `email` (400, with a message naming it).
    pub fn refuse_email(&self, email: &str) {
        self.lock().refused_emails.push(email.to_lowercase());
    }

    /// Acts as a CRM whose echo of our write says what it replaced (Pipedrive): a write is then
    /// left to its echo or a later check, not checked at once.
    pub fn echo_what_writes_replace(&self) {
        self.lock().echoes = true;
    }

    /// A user's `patch` lands just before our next update, after the sync read the record.
    pub fn edit_before_next_update(&self, patch: FieldPatch) {
        self.lock().edit_before_update = Some(patch);
    }

    /// Makes every create take `delay`.
    pub fn slow_creates(&self, delay: std::time::Duration) {
        self.lock().create_delay = delay;
    }

    pub fn record(&self, id: &str) -> Option<CrmRecord> {
        self.lock().records.get(id).cloned()
    }

    pub fn records(&self) -> Vec<CrmRecord> {
        self.lock().records.values().cloned().collect()
    }

    /// A change made by a user in the CRM (not through the port; not counted as our write).
    pub fn user_edit(&self, id: &str, patch: &FieldPatch) {
        let now = self.now();
        let mut inner = self.lock();
        if let Some(r) = inner.records.get_mut(id) {
            let before = r.fields.clone();
            r.fields.apply(patch);
            r.updated_at = Some(now);
            inner.note(id, &before, now, false);
        }
    }

    /// Sets a record's modification time (e.g. to a whole second, as Pipedrive reports it).
    pub fn set_updated_at(&self, id: &str, at: chrono::DateTime<Utc>) {
        if let Some(r) = self.lock().records.get_mut(id) {
            r.updated_at = Some(at);
        }
    }

    /// A record created by a user in the CRM; returns its id.
    pub fn user_create(&self, fields: ContactFields) -> String {
        let now = self.now();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id.to_string();
        inner.records.insert(
            id.clone(),
            CrmRecord {
                id: id.clone(),
                fields: fields.normalized(),
                updated_at: Some(now),
                archived: false,
            },
        );
        inner.note(&id, &ContactFields::default(), now, false);
        id
    }

    pub fn user_archive(&self, id: &str) {
        let now = self.now();
        if let Some(r) = self.lock().records.get_mut(id) {
            r.archived = true;
            r.updated_at = Some(now);
        }
    }

    /// A user restores an archived record (HubSpot's recycle bin, Pipedrive's undo).
    pub fn user_restore(&self, id: &str) {
        let now = self.now();
        if let Some(r) = self.lock().records.get_mut(id) {
            r.archived = false;
            r.updated_at = Some(now);
        }
    }

    fn check(&self) -> Result<(), CrmError> {
        match &self.lock().failing {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn strip(&self, ctx: &CrmContext, mut fields: ContactFields) -> ContactFields {
        // Without the field (never set up, or deleted in the CRM) pronouns are neither stored
        // nor read, as a CRM omits a property it does not have.
        let key = ctx.field(CustomField::Pronouns);
        if key.is_none() || key != self.lock().pronouns_key.as_deref() {
            fields.pronouns = None;
        }
        fields
    }
}

#[async_trait]
impl CrmClient for MemoryCrm {
    fn provider(&self) -> Provider {
        self.provider
    }

    async fn get(&self, ctx: &CrmContext, id: &str) -> Result<Option<CrmRecord>, CrmError> {
        self.check()?;
        Ok(self.record(id).map(|mut r| {
            r.fields = self.strip(ctx, r.fields);
            r
        }))
    }

    async fn get_with_history(
        &self,
        ctx: &CrmContext,
        id: &str,
        fields: &[Field],
        since: chrono::DateTime<Utc>,
    ) -> Result<(Option<CrmRecord>, Vec<Reported>), CrmError> {
        let record = self.get(ctx, id).await?;
        let history = self
            .lock()
            .history
            .get(id)
            .map(|h| {
                h.iter()
                    .filter(|r| r.at >= since && fields.contains(&r.field))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok((record, history))
    }

    async fn find_by_email(
        &self,
        ctx: &CrmContext,
        email: &str,
    ) -> Result<Option<CrmRecord>, CrmError> {
        self.check()?;
        let found = self
            .lock()
            .records
            .values()
            .find(|r| !r.archived && r.fields.email.as_deref() == Some(email))
            .cloned();
        Ok(found.map(|mut r| {
            r.fields = self.strip(ctx, r.fields);
            r
        }))
    }

    async fn create(
        &self,
        ctx: &CrmContext,
        fields: &ContactFields,
    ) -> Result<CrmRecord, CrmError> {
        self.check()?;
        let (delay, unique, refused) = {
            let inner = self.lock();
            (
                inner.create_delay,
                !inner.duplicate_emails,
                inner.refused_emails.clone(),
            )
        };
        if let Some(email) = fields.email.as_deref()
            && refused.contains(&email.to_lowercase())
        {
            return Err(CrmError::Rejected {
                provider: self.provider,
                status: 400,
                message: format!("Email address {email} is invalid"),
            });
        }
        if !delay.is_zero() {
            // A paced CRM: a create that must wait past the job's deadline is not made.
            if crate::deadline::would_cross(delay) {
                return Err(CrmError::OutOfTime {
                    provider: self.provider,
                    resume_at: Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                });
            }
            tokio::time::sleep(delay).await;
        }
        if unique
            && let Some(email) = fields.email.as_deref()
            && let Some(existing) = self.find_by_email(ctx, email).await?
        {
            return Err(CrmError::AlreadyExists {
                provider: self.provider,
                existing_id: existing.id,
            });
        }
        let id = self.user_create(self.strip(ctx, fields.clone()));
        let mut inner = self.lock();
        inner.writes += 1;
        if inner.lost_create_answers > 0 {
            inner.lost_create_answers -= 1;
            return Err(CrmError::Unavailable {
                provider: self.provider,
                message: "connection reset after the request was sent".into(),
            });
        }
        Ok(inner.records.get(&id).cloned().expect("just created"))
    }

    async fn update(
        &self,
        ctx: &CrmContext,
        id: &str,
        patch: &FieldPatch,
    ) -> Result<CrmRecord, CrmError> {
        self.check()?;
        let edit = self.lock().edit_before_update.take();
        if let Some(edit) = edit {
            self.user_edit(id, &edit);
        }
        let now = self.now();
        let mut inner = self.lock();
        let key = ctx.field(CustomField::Pronouns);
        if patch.contains(crate::domain::Field::Pronouns)
            && key.is_some()
            && key != inner.pronouns_key.as_deref()
        {
            // As HubSpot answers a write to a property it does not have.
            return Err(CrmError::Rejected {
                provider: self.provider,
                status: 400,
                message: "Property \"pronouns\" does not exist".into(),
            });
        }
        let Some(r) = inner.records.get_mut(id) else {
            return Err(CrmError::Rejected {
                provider: self.provider,
                status: 404,
                message: format!("no record {id}"),
            });
        };
        let before = r.fields.clone();
        r.fields.apply(patch);
        if ctx.field(CustomField::Pronouns).is_none() {
            r.fields.pronouns = None;
        }
        r.updated_at = Some(now);
        let out = r.clone();
        inner.note(id, &before, now, true);
        inner.writes += 1;
        Ok(out)
    }

    async fn archive(&self, _ctx: &CrmContext, id: &str) -> Result<(), CrmError> {
        self.check()?;
        let mut inner = self.lock();
        if let Some(r) = inner.records.get_mut(id) {
            r.archived = true;
        }
        inner.writes += 1;
        Ok(())
    }

    async fn erase(&self, _ctx: &CrmContext, id: &str) -> Result<(), CrmError> {
        self.check()?;
        let mut inner = self.lock();
        inner.records.remove(id);
        inner.writes += 1;
        Ok(())
    }

    async fn changed_since(
        &self,
        _ctx: &CrmContext,
        cursor: Option<&str>,
    ) -> Result<ChangedRecords, CrmError> {
        self.check()?;
        let since = cursor.and_then(|c| c.parse::<chrono::DateTime<Utc>>().ok());
        let inner = self.lock();
        let records = inner
            .records
            .values()
            .filter(|r| match (since, r.updated_at) {
                (Some(s), Some(u)) => u >= s,
                _ => true,
            })
            .map(|r| ChangedRecord {
                id: r.id.clone(),
                updated_at: r.updated_at,
                fields: Some(r.fields.clone()),
            })
            .collect();
        let next = inner
            .records
            .values()
            .filter_map(|r| r.updated_at)
            .max()
            .map(|t| t.to_rfc3339());
        Ok(ChangedRecords {
            records,
            next_cursor: next.or_else(|| cursor.map(str::to_owned)),
            has_more: false,
        })
    }

    async fn list_records(&self, ctx: &CrmContext, max: usize) -> Result<RecordListing, CrmError> {
        self.check()?;
        let live: Vec<CrmRecord> = self
            .lock()
            .records
            .values()
            .filter(|r| !r.archived)
            .cloned()
            .collect();
        let complete = live.len() <= max;
        let records = live
            .into_iter()
            .take(max)
            .map(|mut r| {
                r.fields = self.strip(ctx, r.fields);
                let emails = r.fields.email.iter().map(|e| e.to_lowercase()).collect();
                (r, emails)
            })
            .collect();
        Ok(RecordListing {
            records,
            complete,
            requests: 1,
            tokens: None,
        })
    }

    fn echo_shows_what_a_write_replaced(&self) -> bool {
        self.lock().echoes
    }

    fn custom_fields(&self) -> &'static [CustomField] {
        &[CustomField::Pronouns]
    }

    async fn ensure_field(
        &self,
        _ctx: &CrmContext,
        field: CustomField,
    ) -> Result<String, CrmError> {
        self.check()?;
        Ok(self
            .lock()
            .pronouns_key
            .get_or_insert_with(|| field.as_str().into())
            .clone())
    }

    async fn find_field(
        &self,
        _ctx: &CrmContext,
        field: CustomField,
    ) -> Result<Option<String>, CrmError> {
        self.check()?;
        let _ = field;
        Ok(self.lock().pronouns_key.clone())
    }
}
