//! A CRM as one worker's sync service sees it: the worker's own real client, observed.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::domain::{
    ContactFields, CrmRecord, CustomField, Field, FieldPatch, Provider, Reported,
};
use shared::error::CrmError;
use shared::ports::{ChangedRecords, CrmClient, CrmContext, RecordListing};

use super::SimCrm;
use crate::sched::Sched;

/// A CRM as one worker's sync service sees it: the worker's real client, observed.
pub struct WorkerCrm {
    pub(super) client: Arc<dyn CrmClient>,
    pub(super) crm: Arc<SimCrm>,
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

    async fn get_with_history(
        &self,
        ctx: &CrmContext,
        id: &str,
        fields: &[Field],
        since: DateTime<Utc>,
    ) -> Result<(Option<CrmRecord>, Vec<Reported>), CrmError> {
        self.crm.out_of_time()?;
        self.crm.note_read(id);
        self.client.get_with_history(ctx, id, fields, since).await
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
        self.crm.note_create(fields);
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
        let updated = self.client.update(ctx, id, patch).await;
        // Judged when the write reached the CRM (no boundary lies between its landing and
        // here): a user's edit made while this worker waited to send it is overwritten too.
        // A write that was refused had no effect.
        if !matches!(
            updated,
            Err(CrmError::RateLimited { .. } | CrmError::OutOfTime { .. })
        ) {
            self.crm.note_write(id, patch);
        }
        updated
    }

    async fn archive(&self, ctx: &CrmContext, id: &str) -> Result<(), CrmError> {
        self.crm.out_of_time()?;
        self.client.archive(ctx, id).await
    }

    async fn erase(&self, ctx: &CrmContext, id: &str) -> Result<(), CrmError> {
        self.crm.out_of_time()?;
        self.client.erase(ctx, id).await
    }

    async fn list_records(&self, ctx: &CrmContext, max: usize) -> Result<RecordListing, CrmError> {
        self.crm.out_of_time()?;
        let listing = self.client.list_records(ctx, max).await?;
        for (r, _) in &listing.records {
            self.crm.note_read(&r.id);
        }
        Ok(listing)
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
        for fields in records {
            self.crm.note_create(fields);
        }
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

    fn echo_shows_what_a_write_replaced(&self) -> bool {
        self.client.echo_shows_what_a_write_replaced()
    }

    fn reads_in_batches(&self) -> bool {
        self.client.reads_in_batches()
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
