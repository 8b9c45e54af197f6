//! Contacts (a live email is unique per tenant) and ContactLinks, each written conditionally on
//! its version.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

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

    async fn put_link(&self, link: &ContactLink) -> Result<ContactLink, StoreError> {
        let mut stored = link.clone();
        stored.version = link.version + 1;
        let body = to_json(&stored)?;
        let db = self.db();
        let changed = if link.version == 0 {
            match db.execute(
                "INSERT INTO links (tenant, sk, contact_id, version, body) VALUES (?1, ?2, ?3, 1, ?4)",
                params![stored.tenant.as_str(), link_key(&stored), stored.contact_id, body],
            ) {
                Err(e) if is_unique_violation(&e) => 0,
                other => other.map_err(backend)?,
            }
        } else {
            db.execute(
                "UPDATE links SET contact_id = ?3, version = ?4, body = ?5
                 WHERE tenant = ?1 AND sk = ?2 AND version = ?6",
                params![
                    stored.tenant.as_str(),
                    link_key(&stored),
                    stored.contact_id,
                    stored.version as i64,
                    body,
                    link.version as i64
                ],
            )
            .map_err(backend)?
        };
        if changed == 1 {
            Ok(stored)
        } else {
            Err(StoreError::Conflict(format!(
                "link {} changed meanwhile",
                link_key(link)
            )))
        }
    }

    async fn delete_link(
        &self,
        tenant: &TenantId,
        provider: Provider,
        external_id: &str,
        version: u64,
    ) -> Result<(), StoreError> {
        let n = self
            .db()
            .execute(
                "DELETE FROM links WHERE tenant = ?1 AND sk = ?2 AND version = ?3",
                params![
                    tenant.as_str(),
                    link_sort_key(provider, external_id),
                    version as i64
                ],
            )
            .map_err(backend)?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "link {provider}#{external_id} changed meanwhile"
            )))
        }
    }
}
