//! The embedded adapter: one SQLite file holds contacts, links, sync state and the job queue
//! (with its dead letters), so a local run survives a restart with nothing lost.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::domain::{
    ConflictRecord, Contact, ContactLink, CustomField, Job, Provider, TenantId, link_sort_key,
};
use crate::error::{QueueError, StoreError};
use crate::ports::{
    ContactIssue, ContactStore, Delivery, FailOutcome, JobQueue, LinkStore, Page, ProviderStats,
    QueueDepth, SyncNowProgress, SyncState,
};
use crate::tenant::{TenantRecord, TenantRegistry};

/// Attempts before a job is dead-lettered (as the SQS redrive policy's maxReceiveCount).
pub const MAX_ATTEMPTS: u32 = 3;
/// How long a received job stays invisible before it is handed out again (a crashed worker).
const VISIBILITY: Duration = Duration::from_secs(60);

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS contacts (
  tenant TEXT NOT NULL, id TEXT NOT NULL, email TEXT, deleted INTEGER NOT NULL,
  version INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant, id));
CREATE UNIQUE INDEX IF NOT EXISTS contacts_live_email ON contacts (tenant, email)
  WHERE deleted = 0 AND email IS NOT NULL;
CREATE TABLE IF NOT EXISTS links (
  tenant TEXT NOT NULL, sk TEXT NOT NULL, contact_id TEXT NOT NULL,
  version INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant, sk));
CREATE INDEX IF NOT EXISTS links_by_contact ON links (tenant, contact_id);
CREATE TABLE IF NOT EXISTS state (
  tenant TEXT NOT NULL, k TEXT NOT NULL, v TEXT NOT NULL, expires_at INTEGER,
  PRIMARY KEY (tenant, k));
CREATE TABLE IF NOT EXISTS issues (
  tenant TEXT NOT NULL, contact_id TEXT NOT NULL, provider TEXT NOT NULL, body TEXT NOT NULL,
  PRIMARY KEY (tenant, contact_id, provider));
CREATE TABLE IF NOT EXISTS conflicts (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, body TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, visible_at INTEGER NOT NULL, dead INTEGER NOT NULL DEFAULT 0,
  last_error TEXT);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (dead, visible_at);
"#;

/// SQLite-backed store and queue.
#[derive(Clone)]
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
    notify: Arc<Notify>,
    /// How long a received job stays invisible (default [`VISIBILITY`]).
    visibility: Duration,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn qbackend(e: impl std::fmt::Display) -> QueueError {
    QueueError::Backend(e.to_string())
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(backend)
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(backend)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` (file `contact-sync.db`).
    pub fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        Self::open_file(&dir.join("contact-sync.db"))
    }

    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
        Self::init(conn)
    }

    /// A throwaway in-memory store (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.execute_batch(SCHEMA).map_err(backend)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            notify: Arc::new(Notify::new()),
            visibility: VISIBILITY,
        })
    }

    /// Sets how long a received job stays invisible before it is handed out again, like an SQS
    /// queue's visibility timeout (default 60 s).
    pub fn with_visibility_timeout(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (each call is one
        // statement or one transaction), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every waiting job due now (tests that do not want to sleep through backoff).
    #[cfg(test)]
    pub(crate) fn replay_due_for_tests(&self) {
        self.db()
            .execute("UPDATE jobs SET visible_at = 0 WHERE dead = 0", [])
            .expect("update jobs");
    }

    /// The tenant's live (`dead` false) or dead-lettered jobs.
    fn count_jobs(&self, tenant: &TenantId, dead: bool) -> Result<QueueDepth, QueueError> {
        let n: i64 = self
            .db()
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE dead = ?1 AND tenant = ?2",
                params![dead as i64, tenant.as_str()],
                |r| r.get(0),
            )
            .map_err(qbackend)?;
        Ok(QueueDepth::tenant(n as usize))
    }

    /// Woken whenever a job is enqueued.
    pub fn job_notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    fn get_state<T: DeserializeOwned>(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let db = self.db();
        let v: Option<String> = db
            .query_row(
                "SELECT v FROM state WHERE tenant = ?1 AND k = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                params![tenant.as_str(), key, now_ms()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        v.map(|s| from_json(&s)).transpose()
    }

    fn put_state<T: Serialize>(
        &self,
        tenant: &TenantId,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let body = to_json(value)?;
        self.db()
            .execute(
                "INSERT INTO state (tenant, k, v, expires_at) VALUES (?1, ?2, ?3, NULL)
                 ON CONFLICT (tenant, k) DO UPDATE SET v = excluded.v, expires_at = NULL",
                params![tenant.as_str(), key, body],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn update_stats(
        &self,
        tenant: &TenantId,
        provider: Provider,
        f: impl FnOnce(&mut ProviderStats),
    ) -> Result<(), StoreError> {
        // Read-modify-write under the connection lock: no lost update between writers.
        let key = format!("stats#{provider}");
        let db = self.db();
        let current: Option<String> = db
            .query_row(
                "SELECT v FROM state WHERE tenant = ?1 AND k = ?2",
                params![tenant.as_str(), key],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        let mut stats: ProviderStats = match current {
            Some(s) => from_json(&s)?,
            None => ProviderStats::default(),
        };
        stats.provider = Some(provider);
        f(&mut stats);
        db.execute(
            "INSERT INTO state (tenant, k, v) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant, k) DO UPDATE SET v = excluded.v",
            params![tenant.as_str(), key, to_json(&stats)?],
        )
        .map_err(backend)?;
        Ok(())
    }
}

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
                params![stored.tenant.as_str(), stored.sort_key(), stored.contact_id, body],
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
                    stored.sort_key(),
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
                link.sort_key()
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

#[async_trait]
impl SyncState for EmbeddedStore {
    async fn cursor(&self, tenant: &TenantId, name: &str) -> Result<Option<String>, StoreError> {
        self.get_state(tenant, &format!("cursor#{name}"))
    }

    async fn set_cursor(
        &self,
        tenant: &TenantId,
        name: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        self.put_state(tenant, &format!("cursor#{name}"), &value)
    }

    async fn sync_now_progress(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<SyncNowProgress>, StoreError> {
        Ok(self
            .cursor(tenant, "sync_now")
            .await?
            .and_then(|s| serde_json::from_str(&s).ok()))
    }

    async fn save_sync_now_progress(
        &self,
        tenant: &TenantId,
        progress: &SyncNowProgress,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(progress).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.set_cursor(tenant, "sync_now", &json).await
    }

    async fn record_outcome(
        &self,
        tenant: &TenantId,
        provider: Provider,
        outcome: Result<(), String>,
        conflicts: u64,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        self.update_stats(tenant, provider, |st| st.record(&outcome, conflicts, now))
    }

    async fn set_paused_until(
        &self,
        tenant: &TenantId,
        provider: Provider,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.update_stats(tenant, provider, |s| s.paused_until = until)
    }

    async fn stats(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<ProviderStats, StoreError> {
        Ok(self
            .get_state::<ProviderStats>(tenant, &format!("stats#{provider}"))?
            .unwrap_or(ProviderStats {
                provider: Some(provider),
                ..Default::default()
            }))
    }

    async fn log_conflict(&self, record: &ConflictRecord) -> Result<(), StoreError> {
        self.db()
            .execute(
                "INSERT INTO conflicts (tenant, body) VALUES (?1, ?2)",
                params![record.tenant.as_str(), to_json(record)?],
            )
            .map_err(backend)?;
        Ok(())
    }

    async fn conflicts(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT body FROM conflicts WHERE tenant = ?1 ORDER BY seq DESC LIMIT ?2")
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant.as_str(), limit as i64], |r| {
                r.get::<_, String>(0)
            })
            .map_err(backend)?;
        rows.map(|r| from_json(&r.map_err(backend)?)).collect()
    }

    async fn first_sighting(
        &self,
        tenant: &TenantId,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        let n = self
            .db()
            .execute(
                "INSERT INTO state (tenant, k, v, expires_at) VALUES (?1, ?2, '1', ?3)
                 ON CONFLICT (tenant, k) DO UPDATE SET v = '1', expires_at = excluded.expires_at
                 WHERE state.expires_at IS NOT NULL AND state.expires_at <= ?4",
                params![tenant.as_str(), format!("seen#{key}"), expires, now],
            )
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn forget_sighting(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError> {
        self.db()
            .execute(
                "DELETE FROM state WHERE tenant = ?1 AND k = ?2",
                params![tenant.as_str(), format!("seen#{key}")],
            )
            .map_err(backend)?;
        Ok(())
    }

    async fn field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: CustomField,
    ) -> Result<Option<String>, StoreError> {
        self.get_state(tenant, &format!("field#{provider}#{}", field.as_str()))
    }

    async fn set_field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: CustomField,
        key: Option<&str>,
    ) -> Result<(), StoreError> {
        let k = format!("field#{provider}#{}", field.as_str());
        match key {
            Some(v) => self.put_state(tenant, &k, &v),
            None => {
                self.db()
                    .execute(
                        "DELETE FROM state WHERE tenant = ?1 AND k = ?2",
                        params![tenant.as_str(), k],
                    )
                    .map_err(backend)?;
                Ok(())
            }
        }
    }

    async fn set_issue(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        let db = self.db();
        match message {
            Some(m) => {
                let issue = ContactIssue {
                    contact_id: contact_id.to_string(),
                    provider,
                    message: m.to_string(),
                    at: Utc::now(),
                };
                db.execute(
                    "INSERT INTO issues (tenant, contact_id, provider, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tenant, contact_id, provider) DO UPDATE SET body = excluded.body",
                    params![tenant.as_str(), contact_id, provider.as_str(), to_json(&issue)?],
                )
                .map_err(backend)?;
            }
            None => {
                db.execute(
                    "DELETE FROM issues WHERE tenant = ?1 AND contact_id = ?2 AND provider = ?3",
                    params![tenant.as_str(), contact_id, provider.as_str()],
                )
                .map_err(backend)?;
            }
        }
        Ok(())
    }

    async fn issues(
        &self,
        tenant: &TenantId,
        contact_id: &str,
    ) -> Result<Vec<ContactIssue>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT body FROM issues WHERE tenant = ?1 AND contact_id = ?2 ORDER BY provider",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant.as_str(), contact_id], |r| {
                r.get::<_, String>(0)
            })
            .map_err(backend)?;
        rows.map(|r| from_json(&r.map_err(backend)?)).collect()
    }
}

/// The partition of the state table that holds the tenant registry.
const REGISTRY: &str = "_registry";

#[async_trait]
impl TenantRegistry for EmbeddedStore {
    async fn put_tenant(&self, record: &TenantRecord) -> Result<(), StoreError> {
        self.put_state(
            &TenantId::new(REGISTRY),
            &format!("tenant#{}", record.config.id),
            record,
        )
    }

    async fn registered_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT v FROM state WHERE tenant = ?1 AND k LIKE 'tenant#%' ORDER BY k")
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![REGISTRY], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|r| from_json(&r.map_err(backend)?)).collect()
    }
}

fn receipt(seq: i64, attempt: u32) -> String {
    format!("{seq}:{attempt}")
}

fn parse_receipt(r: &str) -> Result<(i64, i64), QueueError> {
    let (a, b) = r.split_once(':').ok_or_else(|| qbackend("bad receipt"))?;
    Ok((a.parse().map_err(qbackend)?, b.parse().map_err(qbackend)?))
}

#[async_trait]
impl JobQueue for EmbeddedStore {
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), QueueError> {
        {
            let mut db = self.db();
            let tx = db.transaction().map_err(qbackend)?;
            for job in jobs {
                let body = serde_json::to_string(job).map_err(qbackend)?;
                tx.execute(
                    "INSERT INTO jobs (tenant, body, visible_at) VALUES (?1, ?2, ?3)",
                    params![job.tenant().as_str(), body, now_ms()],
                )
                .map_err(qbackend)?;
            }
            tx.commit().map_err(qbackend)?;
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
        Ok(())
    }

    async fn enqueue_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        let body = serde_json::to_string(job).map_err(qbackend)?;
        self.db()
            .execute(
                "INSERT INTO jobs (tenant, body, visible_at) VALUES (?1, ?2, ?3)",
                params![
                    job.tenant().as_str(),
                    body,
                    now_ms() + delay.as_millis() as i64
                ],
            )
            .map_err(qbackend)?;
        Ok(())
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let now = now_ms();
        let mut db = self.db();
        let tx = db.transaction().map_err(qbackend)?;
        let rows: Vec<(i64, String, i64)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT seq, body, attempts FROM jobs WHERE dead = 0 AND visible_at <= ?1
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(qbackend)?;
            stmt.query_map(params![now, max as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(qbackend)?
            .collect::<Result<_, _>>()
            .map_err(qbackend)?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (seq, body, attempts) in rows {
            let attempt = attempts as u32 + 1;
            tx.execute(
                "UPDATE jobs SET attempts = ?2, visible_at = ?3 WHERE seq = ?1",
                params![
                    seq,
                    attempt as i64,
                    now + self.visibility.as_millis() as i64
                ],
            )
            .map_err(qbackend)?;
            let job = Job::parse(&body).map_err(qbackend)?;
            out.push(Delivery {
                job,
                attempt,
                receipt: receipt(seq, attempt),
            });
        }
        tx.commit().map_err(qbackend)?;
        Ok(out)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let (seq, attempt) = parse_receipt(&delivery.receipt)?;
        self.db()
            .execute(
                "DELETE FROM jobs WHERE seq = ?1 AND attempts = ?2",
                params![seq, attempt],
            )
            .map_err(qbackend)?;
        Ok(())
    }

    async fn fail(
        &self,
        delivery: &Delivery,
        error: &str,
        retry_after: Duration,
    ) -> Result<FailOutcome, QueueError> {
        let (seq, attempt) = parse_receipt(&delivery.receipt)?;
        let dead = attempt as u32 >= MAX_ATTEMPTS;
        self.db()
            .execute(
                "UPDATE jobs SET dead = ?3, visible_at = ?4, last_error = ?5 WHERE seq = ?1 AND attempts = ?2",
                params![seq, attempt, dead as i64, now_ms() + retry_after.as_millis() as i64, error],
            )
            .map_err(qbackend)?;
        Ok(if dead {
            FailOutcome::DeadLettered
        } else {
            FailOutcome::WillRetry
        })
    }

    async fn defer(&self, delivery: &Delivery, until: DateTime<Utc>) -> Result<(), QueueError> {
        let (seq, attempt) = parse_receipt(&delivery.receipt)?;
        self.db()
            .execute(
                "UPDATE jobs SET attempts = attempts - 1, visible_at = ?3 WHERE seq = ?1 AND attempts = ?2",
                params![seq, attempt, until.timestamp_millis()],
            )
            .map_err(qbackend)?;
        Ok(())
    }

    async fn depth(&self, tenant: &TenantId) -> Result<QueueDepth, QueueError> {
        self.count_jobs(tenant, false)
    }

    async fn dlq_depth(&self, tenant: &TenantId) -> Result<QueueDepth, QueueError> {
        self.count_jobs(tenant, true)
    }

    async fn replay_dlq(&self, tenant: &TenantId) -> Result<usize, QueueError> {
        let n = self
            .db()
            .execute(
                "UPDATE jobs SET dead = 0, attempts = 0, visible_at = ?2 WHERE dead = 1 AND tenant = ?1",
                params![tenant.as_str(), now_ms()],
            )
            .map_err(qbackend)?;
        if n > 0 {
            self.notify.notify_one();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
