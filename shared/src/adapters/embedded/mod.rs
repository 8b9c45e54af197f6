//! The embedded adapter: one SQLite file holds contacts, links, sync state and the job queue
//! (with its dead letters), so a local run survives a restart with nothing lost.
//!
//! - `records.rs`: contacts (unique live email per tenant) and ContactLinks, versioned;
//! - `state.rs`: the key-value port of the state layout (`adapters::state`);
//! - `queue.rs`: the job queue with SQS semantics (visibility timeout, 3 attempts, DLQ).

mod queue;
mod records;
mod state;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use rusqlite::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::error::{QueueError, StoreError};

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
CREATE TABLE IF NOT EXISTS link_claims (
  tenant TEXT NOT NULL, contact_id TEXT NOT NULL, provider TEXT NOT NULL, sk TEXT NOT NULL,
  PRIMARY KEY (tenant, contact_id, provider));
INSERT OR IGNORE INTO link_claims (tenant, contact_id, provider, sk)
  SELECT tenant, contact_id, substr(sk, 1, instr(sk, '#') - 1), sk FROM links;
CREATE TABLE IF NOT EXISTS state (
  tenant TEXT NOT NULL, k TEXT NOT NULL, v TEXT NOT NULL, expires_at INTEGER,
  PRIMARY KEY (tenant, k));
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
    /// Opens (or creates) the store in `dir` (file `contact-sync.db`). A folder it creates is
    /// its owner's only (mode 0700), as is the file (0600): it holds contacts and the state.
    pub fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(backend)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(backend)?;
            }
        }
        Self::open_file(&dir.join("contact-sync.db"))
    }

    /// Opens (or creates, mode 0600) the store in the file `path`. SQLite gives its journal
    /// files the same mode.
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(backend)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(backend)?;
        }
        let conn = Connection::open(path).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        // A deleted row's bytes are overwritten, not left in a free page: an erased person's
        // email is found nowhere in the file.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(backend)?;
        // One process owns the store (its one connection, shared by its workers): no file lock
        // per transaction, and a second runner on the same folder is refused at its first
        // access instead of sharing the queue.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
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

    fn db(&self) -> Held<'_> {
        // A panic while holding the lock cannot leave SQLite half-written (each call is one
        // statement or one transaction), so a poisoned lock is safe to reuse.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Held {
            conn,
            since: crate::timing::start(),
        }
    }

    /// Woken whenever a job is enqueued.
    pub fn job_notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

/// The connection while this call holds it (its time reported by [`crate::timing`]).
struct Held<'a> {
    conn: MutexGuard<'a, Connection>,
    since: Option<std::time::Instant>,
}

impl std::ops::Deref for Held<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        crate::timing::store(self.since);
    }
}

#[cfg(test)]
mod tests;
