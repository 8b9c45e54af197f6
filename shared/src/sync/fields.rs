//! Our custom fields in the CRMs: pronouns (set up at the tenant's request) and the fields a CRM
//! needs prepared without asking (Pipedrive's job title). Their keys are stored per tenant and
//! CRM, so every [`crate::ports::CrmContext`] carries them.

use tracing::{info, warn};

use super::SyncService;
use super::pair::PairState;
use crate::domain::{ContactLink, CustomField, Provider, TenantId};
use crate::engine::{AppAction, SyncPlan};
use crate::error::{CrmError, SyncError};
use crate::ports::{CrmClient, CrmContext};

impl SyncService {
    /// Creates the pronouns field in every CRM of the tenant (idempotent) and stores its key.
    pub async fn setup_pronouns(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Provider, Result<String, CrmError>)>, SyncError> {
        self.tenant(tenant).await?;
        let mut out = Vec::new();
        for client in self.tenants.clients(tenant) {
            let provider = client.provider();
            if !client.custom_fields().contains(&CustomField::Pronouns) {
                continue;
            }
            let ctx = self.crm_context(tenant, client.as_ref()).await?;
            let result = client.ensure_field(&ctx, CustomField::Pronouns).await;
            if let Ok(key) = &result {
                self.state
                    .set_field_key(tenant, provider, CustomField::Pronouns, Some(key))
                    .await?;
                info!(%tenant, %provider, key, "pronouns field ready");
            }
            out.push((provider, result));
        }
        Ok(out)
    }

    /// Looks the pronouns field up in every CRM (without creating it) and stores what it finds.
    pub async fn refresh_pronouns_fields(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Provider, Result<Option<String>, CrmError>)>, SyncError> {
        self.tenant(tenant).await?;
        let mut out = Vec::new();
        for client in self.tenants.clients(tenant) {
            let provider = client.provider();
            if !client.custom_fields().contains(&CustomField::Pronouns) {
                continue;
            }
            let ctx = self.crm_context(tenant, client.as_ref()).await?;
            let found = client.find_field(&ctx, CustomField::Pronouns).await;
            if let Ok(key) = &found {
                self.state
                    .set_field_key(tenant, provider, CustomField::Pronouns, key.as_deref())
                    .await?;
            }
            out.push((provider, found));
        }
        Ok(out)
    }

    /// Prepares the custom fields a CRM needs without asking (see [`CustomField::automatic`]):
    /// found (afresh with `fresh`: the account may have gained a standard field; else only when
    /// no key is stored yet), created when missing, and stored. A failure is logged; the client
    /// then finds the field itself when it needs it.
    pub async fn prepare_fields(&self, tenant: &TenantId, fresh: bool) -> Result<(), SyncError> {
        self.tenant(tenant).await?;
        for client in self.tenants.clients(tenant) {
            let provider = client.provider();
            for &field in client.custom_fields().iter().filter(|f| f.automatic()) {
                let mut ctx = self.crm_context(tenant, client.as_ref()).await?;
                if ctx.field(field).is_some() && !fresh {
                    continue;
                }
                ctx.fields.remove(&field);
                match client.ensure_field(&ctx, field).await {
                    // Found afresh: what the account has now replaces what was stored.
                    Ok(key) if fresh => {
                        self.state
                            .set_field_key(tenant, provider, field, Some(&key))
                            .await?
                    }
                    // First set-up: another worker may have created the field at the same
                    // time; the first key stored is everyone's.
                    Ok(key) => {
                        let stored = self
                            .state
                            .claim_field_key(tenant, provider, field, &key)
                            .await?;
                        if stored != key {
                            warn!(%tenant, %provider, field = field.as_str(), unused = key, used = stored, "another worker set the field up first; using its field");
                        }
                    }
                    Err(e) => {
                        warn!(%tenant, %provider, field = field.as_str(), error = %e, "could not prepare the field")
                    }
                }
            }
        }
        Ok(())
    }

    /// A CRM reads a deleted custom field as empty (HubSpot omits a property it does not have;
    /// Pipedrive drops a deleted field's key), which would look like a user clearing it. Before a
    /// plan clears such a field in the app, the field is looked up: if it is gone (or has a new
    /// key), its key is updated, the link forgets the field's agreed value (the CRM's is
    /// unknown, not empty), and `true` asks for a re-plan.
    pub(super) async fn forget_vanished_field(
        &self,
        client: &dyn CrmClient,
        ctx: &CrmContext,
        pair: &PairState,
        plan: &SyncPlan,
    ) -> Result<bool, SyncError> {
        let (AppAction::Update { patch }, Some(record), Some(link)) =
            (&plan.app, &pair.record, &pair.link)
        else {
            return Ok(false);
        };
        let mut vanished = Vec::new();
        for &custom in client.custom_fields() {
            let field = custom.field();
            let cleared_in_crm =
                patch.get(field) == Some(&None) && record.fields.get(field).is_none();
            if cleared_in_crm && self.refresh_field_key(client, ctx, custom).await? {
                vanished.push(field);
            }
        }
        if vanished.is_empty() {
            return Ok(false);
        }
        let mut base = link.base.clone();
        for field in vanished {
            base.set(field, None);
        }
        self.links
            .put_link(&ContactLink {
                base_hash: base.content_hash(),
                base,
                ..link.clone()
            })
            .await?;
        Ok(true)
    }

    /// After the CRM refused a write (a 400) that carried custom fields: whether one of them
    /// is gone (its key is then updated, and a re-plan leaves it out or uses its new key).
    pub(super) async fn written_field_vanished(
        &self,
        client: &dyn CrmClient,
        ctx: &CrmContext,
        patch: &crate::domain::FieldPatch,
    ) -> Result<bool, SyncError> {
        let mut vanished = false;
        for &custom in client.custom_fields() {
            if patch.contains(custom.field()) && self.refresh_field_key(client, ctx, custom).await?
            {
                vanished = true;
            }
        }
        Ok(vanished)
    }

    /// Looks a stored custom field up in the CRM; when it is gone or moved, stores what is
    /// there now (an automatic field is created again) and returns `true`.
    async fn refresh_field_key(
        &self,
        client: &dyn CrmClient,
        ctx: &CrmContext,
        custom: CustomField,
    ) -> Result<bool, SyncError> {
        let Some(key) = ctx.field(custom) else {
            return Ok(false);
        };
        let mut found = client.find_field(ctx, custom).await?;
        if found.as_deref() == Some(key) {
            return Ok(false);
        }
        if found.is_none() && custom.automatic() {
            let mut bare = ctx.clone();
            bare.fields.remove(&custom);
            found = Some(client.ensure_field(&bare, custom).await?);
        }
        let (tenant, provider) = (&ctx.tenant, client.provider());
        warn!(%tenant, %provider, field = custom.as_str(), key, now = ?found, "a custom field was deleted in the CRM; its values are not cleared");
        self.state
            .set_field_key(tenant, provider, custom, found.as_deref())
            .await?;
        Ok(true)
    }
}
