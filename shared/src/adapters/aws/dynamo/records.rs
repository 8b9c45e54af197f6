//! Contacts (with `email#` items making a live email unique per tenant, in one transaction)
//! and ContactLinks (GSI `by_contact`), written conditionally on their version.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};

use super::super::sdk_message;
use super::{DynamoStore, backend, cancelled_at, contact_sk, email_sk, from_item, n, s, to_item};
use crate::adapters::{link_key, link_sort_key};
use crate::domain::{Contact, ContactLink, Provider, TenantId};
use crate::error::StoreError;
use crate::ports::{ContactStore, LinkStore, Page};

/// Sort-key prefix of a contact's claim on its link with one CRM: `claim#<contact>#<provider>`,
/// whose `target` is the link's sort key (no `contact_id` attribute, so not in the GSI).
const CLAIM: &str = "claim#";

fn claim_sk(contact_id: &str, provider: Provider) -> String {
    format!("{CLAIM}{contact_id}#{provider}")
}

#[async_trait]
impl ContactStore for DynamoStore {
    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Contact>, StoreError> {
        self.get_item(&self.tables.contacts, tenant, "sk", &contact_sk(id))
            .await?
            .map(from_item)
            .transpose()
    }

    async fn find_by_email(
        &self,
        tenant: &TenantId,
        email: &str,
    ) -> Result<Option<Contact>, StoreError> {
        let Some(lock) = self
            .get_item(&self.tables.contacts, tenant, "sk", &email_sk(email))
            .await?
        else {
            return Ok(None);
        };
        let Some(AttributeValue::S(id)) = lock.get("contact_id") else {
            return Ok(None);
        };
        Ok(self.get(tenant, id).await?.filter(|c| !c.deleted))
    }

    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Contact>, StoreError> {
        let limit = limit.clamp(1, 1000);
        let mut req = self
            .client
            .query()
            .table_name(&self.tables.contacts)
            .key_condition_expression("tenant = :t AND begins_with(sk, :p)")
            .filter_expression("deleted = :f")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":p", s("contact#"))
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .consistent_read(true);
        if let Some(a) = after {
            req = req
                .exclusive_start_key("tenant", s(tenant.as_str()))
                .exclusive_start_key("sk", s(contact_sk(a)));
        }
        let items = self.query_all(req, Some(limit + 1)).await?;
        let mut contacts: Vec<Contact> =
            items.into_iter().map(from_item).collect::<Result<_, _>>()?;
        let next = if contacts.len() > limit {
            contacts.truncate(limit);
            contacts.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok(Page {
            items: contacts,
            next,
        })
    }

    async fn insert(&self, contact: &Contact) -> Result<Contact, StoreError> {
        let mut stored = contact.clone();
        stored.version = 1;
        let mut tx = self.client.transact_write_items().transact_items(
            TransactWriteItem::builder()
                .put(self.contact_put(&stored, "attribute_not_exists(sk)", vec![])?)
                .build(),
        );
        let email = stored.fields.email.clone().filter(|_| !stored.deleted);
        if let Some(e) = &email {
            tx = tx.transact_items(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.tables.contacts)
                            .item("tenant", s(stored.tenant.as_str()))
                            .item("sk", s(email_sk(e)))
                            .item("contact_id", s(&stored.id))
                            .condition_expression("attribute_not_exists(sk)")
                            .build()
                            .map_err(backend)?,
                    )
                    .build(),
            );
        }
        match tx.send().await {
            Ok(_) => Ok(stored),
            Err(e) if cancelled_at(&e, 0) => Err(StoreError::Duplicate(format!(
                "contact {} exists",
                stored.id
            ))),
            Err(e) if cancelled_at(&e, 1) => Err(StoreError::Duplicate(format!(
                "a contact with email {} already exists",
                email.unwrap_or_default()
            ))),
            Err(e) => Err(backend(sdk_message(&e))),
        }
    }

    async fn erase(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError> {
        // The email's item first: a retry after a failure in between still finds the contact
        // (and so its email) to finish with.
        if let Some(c) = self.get(tenant, id).await? {
            if let Some(email) = &c.fields.email {
                self.delete_contact_item(tenant, &email_sk(email), Some(id))
                    .await?;
            }
            self.delete_contact_item(tenant, &contact_sk(id), None)
                .await?;
        }
        Ok(())
    }

    async fn update(&self, contact: &Contact) -> Result<Contact, StoreError> {
        let Some(current) = self.get(&contact.tenant, &contact.id).await? else {
            return Err(StoreError::NotFound(format!("contact {}", contact.id)));
        };
        if current.version != contact.version {
            return Err(StoreError::Conflict(format!(
                "contact {} changed meanwhile",
                contact.id
            )));
        }
        let mut stored = contact.clone();
        stored.version = contact.version + 1;
        let old_email = current.fields.email.clone().filter(|_| !current.deleted);
        let new_email = stored.fields.email.clone().filter(|_| !stored.deleted);
        if old_email == new_email {
            // The email's item stays as it is: one conditional put (a transaction of one
            // item would cost twice the write units).
            let put =
                self.contact_put(&stored, "version = :v", vec![(":v", n(contact.version))])?;
            return match self
                .client
                .put_item()
                .table_name(put.table_name())
                .set_item(Some(put.item().clone()))
                .condition_expression("version = :v")
                .set_expression_attribute_values(put.expression_attribute_values().cloned())
                .send()
                .await
            {
                Ok(_) => Ok(stored),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                {
                    Err(StoreError::Conflict(format!(
                        "contact {} changed meanwhile",
                        contact.id
                    )))
                }
                Err(e) => Err(backend(sdk_message(&e))),
            };
        }
        let mut tx = self.client.transact_write_items().transact_items(
            TransactWriteItem::builder()
                .put(self.contact_put(&stored, "version = :v", vec![(":v", n(contact.version))])?)
                .build(),
        );
        let mut lock_index = None;
        if let Some(old) = &old_email {
            tx = tx.transact_items(
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.tables.contacts)
                            .key("tenant", s(stored.tenant.as_str()))
                            .key("sk", s(email_sk(old)))
                            .condition_expression("attribute_not_exists(sk) OR contact_id = :id")
                            .expression_attribute_values(":id", s(&stored.id))
                            .build()
                            .map_err(backend)?,
                    )
                    .build(),
            );
        }
        if let Some(new) = &new_email {
            lock_index = Some(if old_email.is_some() { 2 } else { 1 });
            tx = tx.transact_items(
                TransactWriteItem::builder()
                    .put(self.email_lock_put(&stored, new)?)
                    .build(),
            );
        }
        match tx.send().await {
            Ok(_) => Ok(stored),
            Err(e) if cancelled_at(&e, 0) => Err(StoreError::Conflict(format!(
                "contact {} changed meanwhile",
                contact.id
            ))),
            Err(e) if lock_index.is_some_and(|i| cancelled_at(&e, i)) => {
                Err(StoreError::Duplicate(format!(
                    "a contact with email {} already exists",
                    new_email.unwrap_or_default()
                )))
            }
            Err(e) => {
                use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
                if matches!(
                    e.as_service_error(),
                    Some(E::TransactionCanceledException(_))
                ) {
                    // Cancelled by a concurrent transaction on the same items: a lost race.
                    Err(StoreError::Conflict(format!(
                        "contact {} changed meanwhile",
                        contact.id
                    )))
                } else {
                    Err(backend(sdk_message(&e)))
                }
            }
        }
    }
}

impl DynamoStore {
    /// Deletes one item of the contacts table (nothing when it is gone already).
    async fn delete_contact_item(
        &self,
        tenant: &TenantId,
        sk: &str,
        only_if_contact: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.tables.contacts)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(sk));
        if let Some(id) = only_if_contact {
            req = req
                .condition_expression("attribute_not_exists(sk) OR contact_id = :id")
                .expression_attribute_values(":id", s(id));
        }
        match req.send().await {
            Ok(_) => Ok(()),
            // The email is another contact's now: not this one's to delete.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(backend(sdk_message(&e))),
        }
    }
}

#[async_trait]
impl LinkStore for DynamoStore {
    async fn get_link(
        &self,
        tenant: &TenantId,
        provider: Provider,
        external_id: &str,
    ) -> Result<Option<ContactLink>, StoreError> {
        self.get_item(
            &self.tables.links,
            tenant,
            "sk",
            &link_sort_key(provider, external_id),
        )
        .await?
        .map(from_item)
        .transpose()
    }

    async fn links_for_contact(
        &self,
        tenant: &TenantId,
        contact_id: &str,
    ) -> Result<Vec<ContactLink>, StoreError> {
        let req = self
            .client
            .query()
            .table_name(&self.tables.links)
            .index_name("by_contact")
            .key_condition_expression("tenant = :t AND contact_id = :c")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":c", s(contact_id));
        let items = self.query_all(req, None).await?;
        items.into_iter().map(from_item).collect()
    }

    async fn links_for_tenant(&self, tenant: &TenantId) -> Result<Vec<ContactLink>, StoreError> {
        let req = self
            .client
            .query()
            .table_name(&self.tables.links)
            .key_condition_expression("tenant = :t")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .consistent_read(true);
        let items = self.query_all(req, None).await?;
        items
            .into_iter()
            .filter(
                |i| !matches!(i.get("sk"), Some(AttributeValue::S(sk)) if sk.starts_with(CLAIM)),
            )
            .map(from_item)
            .collect()
    }

    async fn link_for_contact(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
    ) -> Result<Option<ContactLink>, StoreError> {
        let claim = self
            .get_item(
                &self.tables.links,
                tenant,
                "sk",
                &claim_sk(contact_id, provider),
            )
            .await?;
        let Some(AttributeValue::S(target)) = claim.as_ref().and_then(|c| c.get("target")) else {
            return Ok(None);
        };
        self.get_item(&self.tables.links, tenant, "sk", target)
            .await?
            .map(from_item)
            .transpose()
    }

    async fn put_link(&self, link: &ContactLink) -> Result<ContactLink, StoreError> {
        let mut stored = link.clone();
        stored.version = link.version + 1;
        let sk = link_key(&stored);
        let mut item = to_item(&stored)?;
        item.insert("sk".into(), s(&sk));
        let conflict =
            || StoreError::Conflict(format!("link {} changed meanwhile", link_key(link)));
        if link.version > 0 {
            return match self
                .client
                .put_item()
                .table_name(&self.tables.links)
                .set_item(Some(item))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(link.version))
                .send()
                .await
            {
                Ok(_) => Ok(stored),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                {
                    Err(conflict())
                }
                Err(e) => Err(backend(sdk_message(&e))),
            };
        }
        // A new link, and its contact's claim on this CRM, in one transaction.
        let put_link = Put::builder()
            .table_name(&self.tables.links)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(backend)?;
        let claim = Put::builder()
            .table_name(&self.tables.links)
            .item("tenant", s(stored.tenant.as_str()))
            .item("sk", s(claim_sk(&stored.contact_id, stored.provider)))
            .item("target", s(&sk))
            .condition_expression("attribute_not_exists(sk) OR target = :sk")
            .expression_attribute_values(":sk", s(&sk))
            .build()
            .map_err(backend)?;
        match self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_link).build())
            .transact_items(TransactWriteItem::builder().put(claim).build())
            .send()
            .await
        {
            Ok(_) => Ok(stored),
            Err(e) if cancelled_at(&e, 0) => Err(conflict()),
            Err(e) if cancelled_at(&e, 1) => Err(StoreError::Conflict(format!(
                "contact {} already has a {} link",
                stored.contact_id, stored.provider
            ))),
            Err(e) => Err(backend(sdk_message(&e))),
        }
    }

    async fn rekey_link(
        &self,
        link: &ContactLink,
        external_id: &str,
    ) -> Result<ContactLink, StoreError> {
        let old_sk = link_key(link);
        let moved = ContactLink {
            external_id: external_id.to_string(),
            version: 1,
            ..link.clone()
        };
        let new_sk = link_key(&moved);
        let mut item = to_item(&moved)?;
        item.insert("sk".into(), s(&new_sk));
        let delete_old = Delete::builder()
            .table_name(&self.tables.links)
            .key("tenant", s(link.tenant.as_str()))
            .key("sk", s(&old_sk))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(link.version))
            .build()
            .map_err(backend)?;
        let put_new = Put::builder()
            .table_name(&self.tables.links)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(backend)?;
        let claim = Put::builder()
            .table_name(&self.tables.links)
            .item("tenant", s(moved.tenant.as_str()))
            .item("sk", s(claim_sk(&moved.contact_id, moved.provider)))
            .item("target", s(&new_sk))
            .build()
            .map_err(backend)?;
        match self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete_old).build())
            .transact_items(TransactWriteItem::builder().put(put_new).build())
            .transact_items(TransactWriteItem::builder().put(claim).build())
            .send()
            .await
        {
            Ok(_) => Ok(moved),
            Err(e) if cancelled_at(&e, 0) => Err(StoreError::Conflict(format!(
                "link {old_sk} changed meanwhile"
            ))),
            Err(e) if cancelled_at(&e, 1) => {
                Err(StoreError::Conflict(format!("{new_sk} is linked already")))
            }
            Err(e) => Err(backend(sdk_message(&e))),
        }
    }

    async fn delete_link(&self, link: &ContactLink) -> Result<(), StoreError> {
        let sk = link_key(link);
        let delete_link = Delete::builder()
            .table_name(&self.tables.links)
            .key("tenant", s(link.tenant.as_str()))
            .key("sk", s(&sk))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(link.version))
            .build()
            .map_err(backend)?;
        let delete_claim = Delete::builder()
            .table_name(&self.tables.links)
            .key("tenant", s(link.tenant.as_str()))
            .key("sk", s(claim_sk(&link.contact_id, link.provider)))
            .condition_expression("attribute_not_exists(sk) OR target = :sk")
            .expression_attribute_values(":sk", s(&sk))
            .build()
            .map_err(backend)?;
        match self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete_link).build())
            .transact_items(TransactWriteItem::builder().delete(delete_claim).build())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if cancelled_at(&e, 0) || cancelled_at(&e, 1) => {
                Err(StoreError::Conflict(format!("link {sk} changed meanwhile")))
            }
            Err(e) => Err(backend(sdk_message(&e))),
        }
    }
}
