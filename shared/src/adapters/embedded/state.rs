//! The key-value port of the state layout on SQLite's `state` table: `(tenant, k) → v`, with an
//! optional expiry in milliseconds.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{EmbeddedStore, backend, now_ms};
use crate::adapters::state::{StateKv, Update};
use crate::error::StoreError;

/// Stores `(?1 partition, ?2 key) = ?3` expiring at `?4` unless a live value is there (one
/// whose expiry is after `?5`, now).
const PUT_NEW: &str = "INSERT INTO state (tenant, k, v, expires_at) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (tenant, k) DO UPDATE SET v = excluded.v, expires_at = excluded.expires_at
     WHERE state.expires_at IS NOT NULL AND state.expires_at <= ?5";

#[async_trait]
impl StateKv for EmbeddedStore {
    async fn kv_get(&self, partition: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.db()
            .query_row(
                "SELECT v FROM state WHERE tenant = ?1 AND k = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                params![partition, key, now_ms()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
    }

    async fn kv_put(&self, partition: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.db()
            .execute(
                "INSERT INTO state (tenant, k, v, expires_at) VALUES (?1, ?2, ?3, NULL)
                 ON CONFLICT (tenant, k) DO UPDATE SET v = excluded.v, expires_at = NULL",
                params![partition, key, value],
            )
            .map_err(backend)?;
        Ok(())
    }

    async fn kv_put_new(
        &self,
        partition: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        let n = self
            .db()
            .execute(PUT_NEW, params![partition, key, value, expires, now])
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn kv_put_new_many(
        &self,
        partition: &str,
        keys: &[String],
        value: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        let mut out = Vec::with_capacity(keys.len());
        {
            let mut stmt = tx.prepare_cached(PUT_NEW).map_err(backend)?;
            for key in keys {
                let n = stmt
                    .execute(params![partition, key, value, expires, now])
                    .map_err(backend)?;
                out.push(n == 1);
            }
        }
        tx.commit().map_err(backend)?;
        Ok(out)
    }

    async fn kv_append(
        &self,
        partition: &str,
        prefix: &str,
        key: &str,
        value: &str,
        ttl: Duration,
        keep: usize,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        tx.execute(PUT_NEW, params![partition, key, value, expires, now])
            .map_err(backend)?;
        // The oldest beyond `keep` go in the same transaction.
        tx.execute(
            "DELETE FROM state WHERE tenant = ?1 AND substr(k, 1, length(?2)) = ?2 AND k NOT IN
             (SELECT k FROM state WHERE tenant = ?1 AND substr(k, 1, length(?2)) = ?2
              ORDER BY k DESC LIMIT ?3)",
            params![partition, prefix, keep as i64],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)
    }

    async fn kv_delete(&self, partition: &str, key: &str) -> Result<(), StoreError> {
        self.db()
            .execute(
                "DELETE FROM state WHERE tenant = ?1 AND k = ?2",
                params![partition, key],
            )
            .map_err(backend)?;
        Ok(())
    }

    async fn kv_scan(
        &self,
        partition: &str,
        prefix: &str,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<String>, StoreError> {
        let order = if newest_first { "DESC" } else { "ASC" };
        let db = self.db();
        // `substr` compares the prefix exactly (LIKE would treat `_` and `%` as patterns).
        let mut stmt = db
            .prepare(&format!(
                "SELECT v FROM state WHERE tenant = ?1 AND substr(k, 1, length(?2)) = ?2
                 AND (expires_at IS NULL OR expires_at > ?3) ORDER BY k {order} LIMIT ?4"
            ))
            .map_err(backend)?;
        let limit = limit.map_or(-1, |l| l as i64);
        let rows = stmt
            .query_map(params![partition, prefix, now_ms(), limit], |r| {
                r.get::<_, String>(0)
            })
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend)).collect()
    }

    async fn kv_entries(
        &self,
        partition: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT k, v FROM state WHERE tenant = ?1 AND substr(k, 1, length(?2)) = ?2 ORDER BY k",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![partition, prefix], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend)).collect()
    }

    async fn kv_update(
        &self,
        partition: &str,
        key: &str,
        update: Update<'_>,
    ) -> Result<(), StoreError> {
        // Read-modify-write in one immediate (write-locking) transaction: no update is lost,
        // not even between processes sharing the file.
        let mut db = self.db();
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let current: Option<String> = tx
            .query_row(
                "SELECT v FROM state WHERE tenant = ?1 AND k = ?2",
                params![partition, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        let Some(next) = update(current.as_deref())? else {
            return Ok(());
        };
        tx.execute(
            "INSERT INTO state (tenant, k, v) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant, k) DO UPDATE SET v = excluded.v",
            params![partition, key, next],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(())
    }
}
