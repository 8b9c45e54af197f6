//! Creating a contact's record in a CRM exactly once: under an intent claimed first, moved to
//! the record created; a create that certainly failed withdraws it, one whose answer was lost
//! leaves it for the next worker to find the record by email after the grace.

use chrono::{DateTime, Utc};

use super::SyncService;
use crate::domain::{Contact, ContactFields, ContactLink, CrmRecord, Provider, TenantId};
use crate::error::{CrmError, StoreError, SyncError};
use crate::ports::{CrmClient, CrmContext};

impl SyncService {
    /// Creates the contact's record in the CRM under an intent: the intent is claimed first (a
    /// second worker finds it and waits; a worker cut off after the create leaves it for the
    /// next to find the record by email), then moved to the record created — as `settled`, when
    /// given, the link the sync ends with (one write fewer). Returns the record and the moved
    /// link.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_with_intent(
        &self,
        client: &dyn CrmClient,
        ctx: &CrmContext,
        contact: &Contact,
        link: Option<ContactLink>,
        fields: &ContactFields,
        settled: Option<ContactLink>,
        now: DateTime<Utc>,
    ) -> Result<(CrmRecord, ContactLink), SyncError> {
        let provider = client.provider();
        let fresh =
            ContactLink::intent(&contact.tenant, &contact.id, provider, fields.clone(), now);
        // Claim the intent (or take over the one found, by its version): a worker that lost
        // the race re-reads and waits for the winner.
        let claimed = match link {
            // An intent under the email of an earlier create (the contact's email changed
            // since): moved to the new email's key, by its version.
            Some(old) if old.is_placeholder() && old.external_id != fresh.external_id => {
                let moved = ContactLink {
                    external_id: old.external_id.clone(),
                    version: old.version,
                    ..fresh.clone()
                };
                self.links.rekey_link(&moved, &fresh.external_id).await?
            }
            Some(old) if old.is_placeholder() => ContactLink {
                version: old.version,
                ..fresh
            },
            // A record that was created but is gone before it was agreed on: create anew,
            // moving its link.
            Some(old) => ContactLink {
                last_synced_at: Some(now),
                base_hash: fields.content_hash(),
                base: fields.clone(),
                ..old
            },
            None => fresh,
        };
        let intent = self.links.put_link(&claimed).await?;
        match client.create(ctx, fields).await {
            Ok(created) => {
                let target = match settled {
                    Some(l) => ContactLink {
                        external_id: intent.external_id.clone(),
                        version: intent.version,
                        crm_last_modified: created.updated_at,
                        ..l
                    },
                    None => intent,
                };
                let moved = self.links.rekey_link(&target, &created.id).await?;
                Ok((created, moved))
            }
            // Someone created it meanwhile (or search lagged): link to it and re-plan against
            // what it holds, with no base (our create did not happen).
            Err(CrmError::AlreadyExists { existing_id, .. }) => {
                let unagreed = ContactLink {
                    base: ContactFields::default(),
                    base_hash: ContactFields::default().content_hash(),
                    ..intent.clone()
                };
                if let Err(e) = self.links.rekey_link(&unagreed, &existing_id).await {
                    self.links.delete_link(&intent).await?;
                    return Err(e.into());
                }
                Err(StoreError::Conflict(format!(
                    "{provider} record {existing_id} appeared while creating"
                ))
                .into())
            }
            Err(e) => {
                self.settle_failed_create(&intent, &e).await?;
                Err(e.into())
            }
        }
    }

    /// The intent of a create under way (or cut off) in this CRM for a record with `email`,
    /// whichever contact it is for.
    pub(super) async fn intent_for_email(
        &self,
        tenant: &TenantId,
        provider: Provider,
        email: &str,
    ) -> Result<Option<ContactLink>, StoreError> {
        self.links
            .get_link(
                tenant,
                provider,
                &ContactLink::placeholder_id(Some(email), ""),
            )
            .await
    }

    /// After a failed create: a create that certainly did not happen withdraws its intent; one
    /// that may have (no answer, a server error) leaves it, and whoever takes it over after the
    /// grace looks for the record first.
    pub(super) async fn settle_failed_create(
        &self,
        intent: &ContactLink,
        err: &CrmError,
    ) -> Result<(), SyncError> {
        if !err.may_have_applied() {
            self.links.delete_link(intent).await?;
        }
        Ok(())
    }
}
