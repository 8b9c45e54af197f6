//! What a first sync would do, before it writes anything: per CRM, which app contacts its
//! backfill would match by email or create, which CRM records its poll would import, and which
//! fields of the matched pairs conflict, as the engine would decide them. Reads only: one
//! listing of each CRM, which the Sync Now that follows reuses while it is fresh (it keeps the
//! listing as its backfill's email index), so the preview costs Pipedrive no extra tokens.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::index::{self, BackfillIndex};
use crate::domain::{Contact, CrmRecord, Field, LinkStatus, Provider, Side, TenantId};
use crate::engine::{self, AppSide, CrmSide, PlanInput};
use crate::error::SyncError;
use crate::sync::SyncService;

/// Examples kept of each kind.
const EXAMPLES: usize = 20;
/// Records a preview lists of one CRM at most; beyond it the counts cover what was listed.
const MAX_LISTED: usize = 20_000;

/// The preview of a tenant's first sync.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SyncPreview {
    pub tenant: TenantId,
    pub generated_at: DateTime<Utc>,
    pub crms: Vec<CrmPreview>,
}

/// What a first sync would do with one CRM.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CrmPreview {
    pub provider: Option<Provider>,
    /// Live app contacts, and of them those linked with this CRM already (left as they are).
    pub app_contacts: usize,
    pub linked: usize,
    /// App contacts whose email the CRM has: linked to that record, fields merged.
    pub matched: PreviewGroup,
    /// App contacts the CRM does not have: created in it.
    pub created: PreviewGroup,
    /// CRM records no app contact has the email of: imported into the app.
    pub imported: PreviewGroup,
    /// Records the other CRMs' imports bring into the app that this CRM does not have: created
    /// in it too, once imported.
    pub created_from_other_crms: PreviewGroup,
    /// App contacts without an email: not synced (matching is by email).
    pub app_without_email: PreviewGroup,
    /// CRM records without an email: not imported.
    pub crm_without_email: PreviewGroup,
    /// Fields of matched pairs that hold different values on the two sides, and who would win.
    pub conflicts: ConflictGroup,
    /// CRM records listed, and whether that was all of them (else the counts cover those).
    pub records_listed: usize,
    pub listing_complete: bool,
    /// What the preview cost the CRM: requests, and tokens where it prices calls in tokens.
    pub crm_requests: u64,
    pub crm_tokens: Option<u64>,
    /// Why this CRM could not be previewed (e.g. its daily budget is spent).
    pub error: Option<String>,
}

/// A count, and up to 20 examples.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PreviewGroup {
    pub count: usize,
    pub examples: Vec<PreviewExample>,
}

/// One contact or record of a group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PreviewExample {
    pub contact_id: Option<String>,
    pub record_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
}

/// Conflicting fields: how many (and in how many contacts), with up to 20 examples.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ConflictGroup {
    pub fields: usize,
    pub contacts: usize,
    pub examples: Vec<ConflictExample>,
}

/// One field that differs between an app contact and the CRM record it would be matched with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConflictExample {
    pub contact_id: String,
    pub record_id: String,
    pub email: Option<String>,
    pub field: Field,
    pub app_value: Option<String>,
    pub crm_value: Option<String>,
    /// The side whose value the first sync would keep (the tenant's conflict policy).
    pub winner: Side,
}

impl PreviewGroup {
    fn add(&mut self, example: impl FnOnce() -> PreviewExample) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(example());
        }
    }
}

fn name_of(first: Option<&str>, last: Option<&str>) -> Option<String> {
    let name = [first, last].into_iter().flatten().collect::<Vec<_>>();
    (!name.is_empty()).then(|| name.join(" "))
}

fn contact_example(c: &Contact, record_id: Option<&str>) -> PreviewExample {
    PreviewExample {
        contact_id: Some(c.id.clone()),
        record_id: record_id.map(str::to_owned),
        email: c.fields.email.clone(),
        name: name_of(
            c.fields.first_name.as_deref(),
            c.fields.last_name.as_deref(),
        ),
    }
}

fn record_example(r: &CrmRecord) -> PreviewExample {
    PreviewExample {
        contact_id: None,
        record_id: Some(r.id.clone()),
        email: r.fields.email.clone(),
        name: name_of(
            r.fields.first_name.as_deref(),
            r.fields.last_name.as_deref(),
        ),
    }
}

/// One CRM's preview, and what the others' need of it.
#[derive(Default)]
struct Previewed {
    crm: CrmPreview,
    /// Every record it would import (lowercased email), and every email it has.
    imported: Vec<PreviewExample>,
    emails: HashSet<String>,
}

impl SyncService {
    /// The preview of a first sync with every CRM of the tenant. Writes nothing anywhere but
    /// the kept listing (a cursor of ours), which the next Sync Now's backfill reuses.
    pub async fn preview(&self, tenant: &TenantId) -> Result<SyncPreview, SyncError> {
        self.tenant(tenant).await?;
        let contacts = self.all_contacts(tenant).await?;
        let links = self.links.links_for_tenant(tenant).await?;
        let providers = self.tenants.providers(tenant);
        let previews = futures::future::join_all(providers.iter().map(|&provider| {
            let (contacts, links) = (&contacts, &links);
            async move {
                match self.preview_crm(tenant, provider, contacts, links).await {
                    Ok(p) => p,
                    Err(e) => Previewed {
                        crm: CrmPreview {
                            provider: Some(provider),
                            error: Some(e.to_string()),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                }
            }
        }))
        .await;
        // What one CRM's poll imports reaches the others as an app contact: created in each
        // that lacks its email.
        let mut crms = Vec::with_capacity(previews.len());
        for (i, this) in previews.iter().enumerate() {
            let mut crm = this.crm.clone();
            let mut seen: HashSet<&str> = HashSet::new();
            for (j, other) in previews.iter().enumerate() {
                if i == j || this.crm.error.is_some() {
                    continue;
                }
                for record in &other.imported {
                    let Some(email) = record.email.as_deref() else {
                        continue;
                    };
                    if !this.emails.contains(email) && seen.insert(email) {
                        crm.created_from_other_crms.add(|| record.clone());
                    }
                }
            }
            crms.push(crm);
        }
        Ok(SyncPreview {
            tenant: tenant.clone(),
            generated_at: self.now(),
            crms,
        })
    }

    async fn preview_crm(
        &self,
        tenant: &TenantId,
        provider: Provider,
        contacts: &[Contact],
        links: &[crate::domain::ContactLink],
    ) -> Result<Previewed, SyncError> {
        let cfg = self.tenant_planning(tenant).await?;
        let Some(client) = self.tenants.client(tenant, provider) else {
            return Err(SyncError::UnknownTenant(format!(
                "{tenant} has no {provider}"
            )));
        };
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, client.as_ref()).await?;
        let support = ctx.support();
        let listed_at = self.now();
        let listing = client.list_records(&ctx, MAX_LISTED).await?;

        let live_links: Vec<_> = links
            .iter()
            .filter(|l| l.provider == provider && l.status != LinkStatus::Deleted)
            .collect();
        let linked_contacts: HashSet<&str> =
            live_links.iter().map(|l| l.contact_id.as_str()).collect();
        let linked_records: HashSet<&str> =
            live_links.iter().map(|l| l.external_id.as_str()).collect();
        // Email → the record with it, among records no contact is linked to: the record whose
        // own email it is first, then the first listed (as the backfill's index picks).
        let mut by_email: HashMap<&str, &CrmRecord> = HashMap::new();
        let unlinked = || {
            listing
                .records
                .iter()
                .filter(|(r, _)| !linked_records.contains(r.id.as_str()))
        };
        for (record, emails) in unlinked() {
            let own = record
                .fields
                .email
                .as_deref()
                .map(|e| e.trim().to_lowercase());
            if let Some(email) = emails.iter().find(|e| Some(e.as_str()) == own.as_deref()) {
                by_email.entry(email.as_str()).or_insert(record);
            }
        }
        for (record, emails) in unlinked() {
            for email in emails {
                by_email.entry(email.as_str()).or_insert(record);
            }
        }

        let mut p = CrmPreview {
            provider: Some(provider),
            records_listed: listing.records.len(),
            listing_complete: listing.complete,
            crm_requests: listing.requests,
            crm_tokens: listing.tokens,
            ..Default::default()
        };
        let mut imported = Vec::new();
        let mut matched_records: HashSet<&str> = HashSet::new();
        let mut app_emails: HashSet<String> = HashSet::new();
        let mut kept: HashMap<String, CrmRecord> = HashMap::new();
        for contact in contacts.iter().filter(|c| !c.deleted) {
            p.app_contacts += 1;
            if let Some(e) = &contact.fields.email {
                app_emails.insert(e.trim().to_lowercase());
            }
            if linked_contacts.contains(contact.id.as_str()) {
                p.linked += 1;
                continue;
            }
            let Some(email) = contact
                .fields
                .email
                .as_deref()
                .map(|e| e.trim().to_lowercase())
            else {
                p.app_without_email.add(|| contact_example(contact, None));
                continue;
            };
            let Some(record) = by_email.get(email.as_str()) else {
                p.created.add(|| contact_example(contact, None));
                continue;
            };
            matched_records.insert(record.id.as_str());
            kept.insert(email.clone(), (*record).clone());
            p.matched
                .add(|| contact_example(contact, Some(record.id.as_str())));
            let plan = engine::plan(&PlanInput {
                provider,
                app: AppSide::Live(&contact.fields),
                crm: CrmSide::Live(&record.fields),
                base: None,
                policy: cfg.conflict_policy,
                rules: &cfg.field_rules,
                app_modified: Some(contact.last_app_modified),
                crm_modified: record.updated_at,
                support,
                now: listed_at,
                overwritten: None,
            });
            if !plan.conflicts.is_empty() {
                p.conflicts.contacts += 1;
            }
            for c in plan.conflicts {
                p.conflicts.fields += 1;
                if p.conflicts.examples.len() < EXAMPLES {
                    p.conflicts.examples.push(ConflictExample {
                        contact_id: contact.id.clone(),
                        record_id: record.id.clone(),
                        email: contact.fields.email.clone(),
                        field: c.field,
                        app_value: c.app_value,
                        crm_value: c.crm_value,
                        winner: c.winner,
                    });
                }
            }
        }
        for (record, emails) in &listing.records {
            if linked_records.contains(record.id.as_str())
                || matched_records.contains(record.id.as_str())
            {
                continue;
            }
            if emails.is_empty() {
                p.crm_without_email.add(|| record_example(record));
            } else if !emails.iter().any(|e| app_emails.contains(e)) {
                p.imported.add(|| record_example(record));
                imported.push(PreviewExample {
                    email: emails.first().cloned(),
                    ..record_example(record)
                });
            }
        }
        // The listing, kept as the backfill's email index: the Sync Now that follows within
        // its freshness lists the CRM no more.
        if listing.complete {
            let index = BackfillIndex::from_preview(listed_at, kept);
            if let Some(kept) = index.to_kept() {
                self.state
                    .set_cursor(tenant, &index::cursor_name(provider), &kept)
                    .await?;
            }
        }
        let emails = listing
            .records
            .iter()
            .flat_map(|(_, emails)| emails.iter().cloned())
            .collect();
        Ok(Previewed {
            crm: p,
            imported,
            emails,
        })
    }

    /// Every live app contact of the tenant, page by page.
    pub(super) async fn all_contacts(&self, tenant: &TenantId) -> Result<Vec<Contact>, SyncError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.contacts.list(tenant, after.as_deref(), 500).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }
}
