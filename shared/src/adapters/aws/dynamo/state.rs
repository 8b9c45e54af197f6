//! The key-value port of the state layout on the SyncState table: `tenant` + `k` → `v`, with
//! `expires_at` (epoch seconds, the table's TTL attribute) on expiring items and `version` on
//! items updated read-modify-write. Reads are strongly consistent.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;

use super::super::sdk_message;
use super::{DynamoStore, backend, n, s};
use crate::adapters::state::{StateKv, Update};
use crate::domain::TenantId;
use crate::error::StoreError;

/// Read-modify-write attempts before a key that keeps changing is given up on; a lost race
/// waits a little (random, growing) before it reads again, so racing writers spread out.
const UPDATE_ATTEMPTS: u32 = 30;

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    e: &aws_sdk_dynamodb::error::SdkError<E>,
) -> bool {
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

impl DynamoStore {
    /// The item's value and version, unless absent or expired.
    async fn versioned(
        &self,
        partition: &str,
        key: &str,
    ) -> Result<Option<(Option<String>, u64)>, StoreError> {
        let Some(item) = self
            .get_item(&self.tables.state, &TenantId::new(partition), "k", key)
            .await?
        else {
            return Ok(None);
        };
        if let Some(AttributeValue::N(at)) = item.get("expires_at")
            && at
                .parse::<i64>()
                .is_ok_and(|at| at <= Utc::now().timestamp())
        {
            return Ok(None);
        }
        let value = match item.get("v") {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        let version = match item.get("version") {
            Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
            _ => 0,
        };
        Ok(Some((value, version)))
    }
}

#[async_trait]
impl StateKv for DynamoStore {
    async fn kv_get(&self, partition: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.versioned(partition, key).await?.and_then(|(v, _)| v))
    }

    async fn kv_put(&self, partition: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.tables.state)
            .item("tenant", s(partition))
            .item("k", s(key))
            .item("v", s(value))
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        Ok(())
    }

    async fn kv_put_new(
        &self,
        partition: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Utc::now().timestamp();
        let expires = now + ttl.as_secs().max(1) as i64;
        match self
            .client
            .put_item()
            .table_name(&self.tables.state)
            .item("tenant", s(partition))
            .item("k", s(key))
            .item("v", s(value))
            .item("expires_at", n(expires))
            .condition_expression("attribute_not_exists(k) OR expires_at <= :now")
            .expression_attribute_values(":now", n(now))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend(sdk_message(&e))),
        }
    }

    async fn kv_delete(&self, partition: &str, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.tables.state)
            .key("tenant", s(partition))
            .key("k", s(key))
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        Ok(())
    }

    async fn kv_scan(
        &self,
        partition: &str,
        prefix: &str,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<String>, StoreError> {
        let mut req = self
            .client
            .query()
            .table_name(&self.tables.state)
            .key_condition_expression("tenant = :t AND begins_with(k, :p)")
            .expression_attribute_values(":t", s(partition))
            .expression_attribute_values(":p", s(prefix))
            .scan_index_forward(!newest_first)
            .consistent_read(true);
        if let Some(l) = limit {
            req = req.limit(l.clamp(1, 1000) as i32);
        }
        let now = Utc::now().timestamp();
        let items = self.query_all(req, limit).await?;
        Ok(items
            .into_iter()
            .filter(|i| match i.get("expires_at") {
                Some(AttributeValue::N(at)) => at.parse::<i64>().is_ok_and(|at| at > now),
                _ => true,
            })
            .filter_map(|i| match i.get("v") {
                Some(AttributeValue::S(v)) => Some(v.clone()),
                _ => None,
            })
            .take(limit.unwrap_or(usize::MAX))
            .collect())
    }

    async fn kv_entries(
        &self,
        partition: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut req = self
            .client
            .query()
            .table_name(&self.tables.state)
            .expression_attribute_values(":t", s(partition))
            .consistent_read(true);
        // A key condition cannot test for an empty prefix: every key has it.
        req = if prefix.is_empty() {
            req.key_condition_expression("tenant = :t")
        } else {
            req.key_condition_expression("tenant = :t AND begins_with(k, :p)")
                .expression_attribute_values(":p", s(prefix))
        };
        let items = self.query_all(req, None).await?;
        Ok(items
            .into_iter()
            .filter_map(|i| match (i.get("k"), i.get("v")) {
                (Some(AttributeValue::S(k)), Some(AttributeValue::S(v))) => {
                    Some((k.clone(), v.clone()))
                }
                _ => None,
            })
            .collect())
    }

    /// Conditional on the item's `version`: a writer that lost the race re-reads and retries.
    async fn kv_update(
        &self,
        partition: &str,
        key: &str,
        update: Update<'_>,
    ) -> Result<(), StoreError> {
        for attempt in 0..UPDATE_ATTEMPTS {
            let (current, version) = self.versioned(partition, key).await?.unwrap_or((None, 0));
            let Some(next) = update(current.as_deref())? else {
                return Ok(());
            };
            let mut req = self
                .client
                .put_item()
                .table_name(&self.tables.state)
                .item("tenant", s(partition))
                .item("k", s(key))
                .item("v", s(next))
                .item("version", n(version + 1));
            req = if version == 0 {
                req.condition_expression("attribute_not_exists(k) OR attribute_not_exists(version)")
            } else {
                req.condition_expression("version = :v")
                    .expression_attribute_values(":v", n(version))
            };
            match req.send().await {
                Ok(_) => return Ok(()),
                Err(e) if is_condition_failure(&e) => {
                    let spread = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 16);
                    tokio::time::sleep(Duration::from_millis(
                        spread * u64::from(attempt.min(8) + 1),
                    ))
                    .await;
                }
                Err(e) => return Err(backend(sdk_message(&e))),
            }
        }
        Err(StoreError::Conflict(format!("{key} kept changing")))
    }
}
