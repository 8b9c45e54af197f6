//! Contacts (a live email is unique per tenant) and ContactLinks, each written conditionally on
//! its version.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{EmbeddedStore, backend, from_json, is_unique_violation, to_json};
use crate::adapters::{link_key, link_sort_key};
use crate::domain::{Contact, ContactLink, Provider, TenantId};
use crate::error::StoreError;
use crate::ports::{ContactStore, LinkStore, Page};

#[async_trait]
impl ContactStore for EmbeddedStore {
    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Contact>, StoreError> {
        let body: Option<String> = self
            .db()
            .query_row(
                "SELECT body FROM contacts WHERE tenant = ?1 AND id = ?2",
                params![tenant.as_str(), id],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn find_by_email(
        &self,
        tenant: &TenantId,
        email: &str,
    ) -> Result<Option<Contact>, StoreError> {
        let body: Option<String> = self
            .db()
            .query_row(
                "SELECT body FROM contacts WHERE tenant = ?1 AND email = ?2 AND deleted = 0",
                params![tenant.as_str(), email.trim().to_lowercase()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Contact>, StoreError> {
        let limit = limit.clamp(1, 1000);
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT body FROM contacts WHERE tenant = ?1 AND deleted = 0 AND id > ?2
                 ORDER BY id LIMIT ?3",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(
                params![tenant.as_str(), after.unwrap_or(""), (limit + 1) as i64],
                |r| r.get::<_, String>(0),
            )
            .map_err(backend)?;
        let mut items = Vec::new();
        for row in rows {
            items.push(from_json::<Contact>(&row.map_err(backend)?)?);
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn insert(&self, contact: &Contact) -> Result<Contact, StoreError> {
        let mut stored = contact.clone();
        stored.version = 1;
        let result = self.db().execute(
            "INSERT INTO contacts (tenant, id, email, deleted, version, body) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
            params![
                stored.tenant.as_str(),
                stored.id,
                stored.fields.email,
                stored.deleted as i64,
                to_json(&stored)?
            ],
        );
        match result {
            Ok(_) => Ok(stored),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate(format!(
                "a contact with email {} already exists",
                stored.fields.email.as_deref().unwrap_or("")
            ))),
            Err(e) => Err(backend(e)),
        }
    }

    async fn update(&self, contact: &Contact) -> Result<Contact, StoreError> {
        let mut stored = contact.clone();
        stored.version = contact.version + 1;
        let result = self.db().execute(
            "UPDATE contacts SET email = ?3, deleted = ?4, version = ?5, body = ?6
             WHERE tenant = ?1 AND id = ?2 AND version = ?7",
            params![
                stored.tenant.as_str(),
                stored.id,
                stored.fields.email,
                stored.deleted as i64,
                stored.version as i64,
                to_json(&stored)?,
                contact.version as i64
            ],
        );
        match result {
            Ok(1) => Ok(stored),
            Ok(_) => Err(StoreError::Conflict(format!(
                "contact {} changed meanwhile",
                contact.id
            ))),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate(format!(
                "a contact with email {} already exists",
                stored.fields.email.as_deref().unwrap_or("")
            ))),
            Err(e) => Err(backend(e)),
        }
    }

    async fn erase(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError> {
        // The row and its email go together (the email's uniqueness is an index of the row).
        self.db()
            .execute(
                "DELETE FROM contacts WHERE tenant = ?1 AND id = ?2",
                params![tenant.as_str(), id],
            )
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl LinkStore for EmbeddedStore {
    async fn get_link(
        &self,
        tenant: &TenantId,
        provider: Provider,
        external_id: &str,
    ) -> Result<Option<ContactLink>, StoreError> {
        let body: Option<String> = self
            .db()
            .query_row(
                "SELECT body FROM links WHERE tenant = ?1 AND sk = ?2",
                params![tenant.as_str(), link_sort_key(provider, external_id)],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn links_for_contact(
        &self,
        tenant: &TenantId,
        contact_id: &str,
    ) -> Result<Vec<ContactLink>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT body FROM links WHERE tenant = ?1 AND contact_id = ?2 ORDER BY sk")
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant.as_str(), contact_id], |r| {
                r.get::<_, String>(0)
            })
            .map_err(backend)?;
        rows.map(|r| from_json(&r.map_err(backend)?)).collect()
    }

    async fn links_for_tenant(&self, tenant: &TenantId) -> Result<Vec<ContactLink>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT body FROM links WHERE tenant = ?1 ORDER BY sk")
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant.as_str()], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|r| from_json(&r.map_err(backend)?)).collect()
    }

    async fn link_for_contact(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
    ) -> Result<Option<ContactLink>, StoreError> {
        let body: Option<String> = self
            .db()
            .query_row(
                "SELECT l.body FROM link_claims c JOIN links l ON l.tenant = c.tenant AND l.sk = c.sk
                 WHERE c.tenant = ?1 AND c.contact_id = ?2 AND c.provider = ?3",
                params![tenant.as_str(), contact_id, provider.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn put_link(&self, link: &ContactLink) -> Result<ContactLink, StoreError> {
        let mut stored = link.clone();
        stored.version = link.version + 1;
        let body = to_json(&stored)?;
        let sk = link_key(&stored);
        let conflict =
            || StoreError::Conflict(format!("link {} changed meanwhile", link_key(link)));
        let mut db = self.db();
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        if link.version == 0 {
            let claimed: Option<String> = tx
                .query_row(
                    "SELECT sk FROM link_claims WHERE tenant = ?1 AND contact_id = ?2 AND provider = ?3",
                    params![stored.tenant.as_str(), stored.contact_id, stored.provider.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            if claimed.is_some_and(|c| c != sk) {
                return Err(StoreError::Conflict(format!(
                    "contact {} already has a {} link",
                    stored.contact_id, stored.provider
                )));
            }
            match tx.execute(
                "INSERT INTO links (tenant, sk, contact_id, version, body) VALUES (?1, ?2, ?3, 1, ?4)",
                params![stored.tenant.as_str(), sk, stored.contact_id, body],
            ) {
                Err(e) if is_unique_violation(&e) => return Err(conflict()),
                other => other.map_err(backend)?,
            };
            tx.execute(
                "INSERT OR IGNORE INTO link_claims (tenant, contact_id, provider, sk) VALUES (?1, ?2, ?3, ?4)",
                params![stored.tenant.as_str(), stored.contact_id, stored.provider.as_str(), sk],
            )
            .map_err(backend)?;
        } else {
            let n = tx
                .execute(
                    "UPDATE links SET contact_id = ?3, version = ?4, body = ?5
                     WHERE tenant = ?1 AND sk = ?2 AND version = ?6",
                    params![
                        stored.tenant.as_str(),
                        sk,
                        stored.contact_id,
                        stored.version as i64,
                        body,
                        link.version as i64
                    ],
                )
                .map_err(backend)?;
            if n != 1 {
                return Err(conflict());
            }
        }
        tx.commit().map_err(backend)?;
        Ok(stored)
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
        let body = to_json(&moved)?;
        let mut db = self.db();
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let n = tx
            .execute(
                "DELETE FROM links WHERE tenant = ?1 AND sk = ?2 AND version = ?3",
                params![link.tenant.as_str(), old_sk, link.version as i64],
            )
            .map_err(backend)?;
        if n != 1 {
            return Err(StoreError::Conflict(format!(
                "link {old_sk} changed meanwhile"
            )));
        }
        match tx.execute(
            "INSERT INTO links (tenant, sk, contact_id, version, body) VALUES (?1, ?2, ?3, 1, ?4)",
            params![moved.tenant.as_str(), new_sk, moved.contact_id, body],
        ) {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("{new_sk} is linked already")));
            }
            other => other.map_err(backend)?,
        };
        tx.execute(
            "INSERT INTO link_claims (tenant, contact_id, provider, sk) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, contact_id, provider) DO UPDATE SET sk = excluded.sk",
            params![
                moved.tenant.as_str(),
                moved.contact_id,
                moved.provider.as_str(),
                new_sk
            ],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(moved)
    }

    async fn delete_link(&self, link: &ContactLink) -> Result<(), StoreError> {
        let sk = link_key(link);
        let mut db = self.db();
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let n = tx
            .execute(
                "DELETE FROM links WHERE tenant = ?1 AND sk = ?2 AND version = ?3",
                params![link.tenant.as_str(), sk, link.version as i64],
            )
            .map_err(backend)?;
        if n != 1 {
            return Err(StoreError::Conflict(format!("link {sk} changed meanwhile")));
        }
        tx.execute(
            "DELETE FROM link_claims WHERE tenant = ?1 AND contact_id = ?2 AND provider = ?3 AND sk = ?4",
            params![link.tenant.as_str(), link.contact_id, link.provider.as_str(), sk],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(())
    }
}
