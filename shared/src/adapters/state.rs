//! The sync state's layout, written once: every part of [`SyncState`](crate::ports::SyncState)
//! and the tenant registry, over a small key-value port ([`StateKv`]) that each store
//! implements (SQLite's `state` table, DynamoDB's SyncState table).
//!
//! A tenant's items live in its partition, under these keys (values are JSON):
//!
//! | key | what |
//! | --- | --- |
//! | `cursor#<name>` | a poll cursor (`cursor#sync_now`: Sync Now's progress) |
//! | `stats#<provider>` | a CRM's [`ProviderStats`], updated read-modify-write |
//! | `conflict#<time>#<uuid>` | one conflict record (newest last in key order) |
//! | `seen#<event key>` | a webhook delivery seen, until its expiry |
//! | `field#<provider>#<field>` | a custom field's key in a CRM |
//! | `issue#<contact>#<provider>` | a contact's sync problem while it has no link |
//! | `settings#fields` | the tenant's [`FieldRules`] |
//! | `webhooks#<provider>` | a CRM's [`WebhookHealth`]: the last webhook, what the last poll found missed |
//! | `history#<contact>#<time>#<uuid>` | one entry of a contact's sync history, expiring after 30 days (the newest 50 are read; SQLite keeps no more) |
//!
//! The registry is the partition `_registry`: one `tenant#<id>` item per tenant, and a
//! `key#<index>` item (the tenant's id) per key it is found by ([`TenantKey::index`]: its API
//! key and webhook logins hashed, its CRM accounts).
//!
//! [`TenantKey::index`]: crate::tenant::TenantKey::index

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::{ConflictRecord, CustomField, FieldRules, HistoryEntry, Provider, TenantId};
use crate::error::StoreError;
use crate::ports::{
    ConflictLog, ContactIssue, ContactIssues, CrmHealth, Cursors, Dedupe, FieldKeys,
    FieldRulesStore, PersonalData, ProviderStats, SyncHistory, SyncNowLog, SyncNowProgress,
    WebhookHealth, WebhookWatch,
};
use crate::tenant::{TenantRecord, TenantRegistry};

/// The partition of the state that holds the tenant registry.
const REGISTRY: &str = "_registry";

/// A read-modify-write step: the new value from the current one (`None`: leave it as it is,
/// with no write).
pub type Update<'a> =
    &'a (dyn Fn(Option<&str>) -> Result<Option<String>, StoreError> + Send + Sync);

/// String values under `(partition, key)`, the key-value port of the state layout.
#[async_trait]
pub trait StateKv: Send + Sync {
    /// The value, unless absent or expired.
    async fn kv_get(&self, partition: &str, key: &str) -> Result<Option<String>, StoreError>;
    /// Stores a value without expiry (replacing any).
    async fn kv_put(&self, partition: &str, key: &str, value: &str) -> Result<(), StoreError>;
    /// Stores a value expiring after `ttl` unless a live one is there; true when stored.
    async fn kv_put_new(
        &self,
        partition: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// `kv_put_new` of several keys (in one transaction where the store has them); per key,
    /// true when stored.
    async fn kv_put_new_many(
        &self,
        partition: &str,
        keys: &[String],
        value: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.kv_put_new(partition, key, value, ttl).await?);
        }
        Ok(out)
    }
    /// Stores a value under a new key starting with `prefix`, expiring after `ttl`, keeping
    /// at most `keep` live keys under `prefix` where the store can drop the oldest in the same
    /// write (elsewhere expiry bounds them).
    async fn kv_append(
        &self,
        partition: &str,
        prefix: &str,
        key: &str,
        value: &str,
        ttl: Duration,
        keep: usize,
    ) -> Result<(), StoreError> {
        let _ = (prefix, keep);
        self.kv_put_new(partition, key, value, ttl)
            .await
            .map(|_| ())
    }
    async fn kv_delete(&self, partition: &str, key: &str) -> Result<(), StoreError>;
    /// The values of keys starting with `prefix`, in key order (reversed with `newest_first`),
    /// at most `limit`.
    async fn kv_scan(
        &self,
        partition: &str,
        prefix: &str,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<String>, StoreError>;
    /// Every key starting with `prefix`, with its value (expired ones too), in key order.
    async fn kv_entries(
        &self,
        partition: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Replaces the value with `update(current)`, with no update lost between writers (an
    /// update that answers `None` writes nothing).
    async fn kv_update(
        &self,
        partition: &str,
        key: &str,
        update: Update<'_>,
    ) -> Result<(), StoreError>;
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()))
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Backend(e.to_string()))
}

async fn get<T: DeserializeOwned>(
    kv: &(impl StateKv + ?Sized),
    partition: &str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    kv.kv_get(partition, key)
        .await?
        .map(|v| from_json(&v))
        .transpose()
}

async fn scan<T: DeserializeOwned>(
    kv: &(impl StateKv + ?Sized),
    partition: &str,
    prefix: &str,
    newest_first: bool,
    limit: Option<usize>,
) -> Result<Vec<T>, StoreError> {
    kv.kv_scan(partition, prefix, newest_first, limit)
        .await?
        .iter()
        .map(|v| from_json(v))
        .collect()
}

fn cursor_key(name: &str) -> String {
    format!("cursor#{name}")
}

fn stats_key(provider: Provider) -> String {
    format!("stats#{provider}")
}

fn field_key(provider: Provider, field: CustomField) -> String {
    format!("field#{provider}#{}", field.as_str())
}

fn issue_key(contact_id: &str, provider: Provider) -> String {
    format!("issue#{contact_id}#{provider}")
}

/// Sync Now's progress is kept like a cursor (where the last run stands), as JSON text.
const SYNC_NOW: &str = "sync_now";

#[async_trait]
impl<K: StateKv> Cursors for K {
    async fn cursor(&self, tenant: &TenantId, name: &str) -> Result<Option<String>, StoreError> {
        get(self, tenant.as_str(), &cursor_key(name)).await
    }

    async fn set_cursor(
        &self,
        tenant: &TenantId,
        name: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        self.kv_put(tenant.as_str(), &cursor_key(name), &to_json(&value)?)
            .await
    }
}

#[async_trait]
impl<K: StateKv> SyncNowLog for K {
    async fn sync_now_progress(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<SyncNowProgress>, StoreError> {
        Ok(self
            .cursor(tenant, SYNC_NOW)
            .await?
            .and_then(|s| serde_json::from_str(&s).ok()))
    }

    async fn save_sync_now_progress(
        &self,
        tenant: &TenantId,
        progress: &SyncNowProgress,
    ) -> Result<(), StoreError> {
        self.set_cursor(tenant, SYNC_NOW, &to_json(progress)?).await
    }
}

/// The read-modify-write of a CRM's stats.
async fn update_stats<K: StateKv + ?Sized>(
    kv: &K,
    tenant: &TenantId,
    provider: Provider,
    f: &(dyn Fn(&mut ProviderStats) + Send + Sync),
) -> Result<(), StoreError> {
    kv.kv_update(tenant.as_str(), &stats_key(provider), &|current| {
        let mut stats: ProviderStats = match current {
            Some(s) => from_json(s)?,
            None => ProviderStats::default(),
        };
        stats.provider = Some(provider);
        f(&mut stats);
        to_json(&stats).map(Some)
    })
    .await
}

#[async_trait]
impl<K: StateKv> CrmHealth for K {
    async fn record_outcome(
        &self,
        tenant: &TenantId,
        provider: Provider,
        outcome: Result<(), String>,
        conflicts: u64,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        update_stats(self, tenant, provider, &|st| {
            st.record(&outcome, conflicts, now)
        })
        .await
    }

    async fn set_paused_until(
        &self,
        tenant: &TenantId,
        provider: Provider,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        update_stats(self, tenant, provider, &|st| st.paused_until = until).await
    }

    async fn stats(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<ProviderStats, StoreError> {
        Ok(get(self, tenant.as_str(), &stats_key(provider))
            .await?
            .unwrap_or(ProviderStats {
                provider: Some(provider),
                ..Default::default()
            }))
    }
}

#[async_trait]
impl<K: StateKv> ConflictLog for K {
    async fn log_conflict(&self, record: &ConflictRecord) -> Result<(), StoreError> {
        let key = format!(
            "conflict#{}#{}",
            record.conflict.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            uuid::Uuid::new_v4()
        );
        self.kv_put(record.tenant.as_str(), &key, &to_json(record)?)
            .await
    }

    async fn conflicts(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>, StoreError> {
        scan(self, tenant.as_str(), "conflict#", true, Some(limit)).await
    }
}

/// What an erased person's email becomes where it is mentioned.
const ERASED: &str = "[erased]";

#[async_trait]
impl<K: StateKv> PersonalData for K {
    async fn erase_contact_state(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        email: Option<&str>,
    ) -> Result<(), StoreError> {
        let p = tenant.as_str();
        let mut gone: Vec<String> = Vec::new();
        // Its history and issues, whole.
        for prefix in [history_prefix(contact_id), format!("issue#{contact_id}#")] {
            gone.extend(
                self.kv_entries(p, &prefix)
                    .await?
                    .into_iter()
                    .map(|(k, _)| k),
            );
        }
        // Its conflicts (the values both sides held).
        for (k, v) in self.kv_entries(p, "conflict#").await? {
            if serde_json::from_str::<ConflictRecord>(&v).is_ok_and(|c| c.contact_id == contact_id)
            {
                gone.push(k);
            }
        }
        // The email listings kept between a Sync Now's rounds (a cache: listed again).
        gone.extend(
            self.kv_entries(p, "cursor#backfill-index#")
                .await?
                .into_iter()
                .map(|(k, _)| k),
        );
        for k in &gone {
            self.kv_delete(p, k).await?;
        }
        // Anywhere else the email is named (an error text, a Sync Now's errors): replaced.
        let Some(email) = email
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
        else {
            return Ok(());
        };
        for (k, v) in self.kv_entries(p, "").await? {
            if !v.to_ascii_lowercase().contains(&email) || gone.contains(&k) {
                continue;
            }
            let email = email.clone();
            self.kv_update(p, &k, &move |current| {
                Ok(current.map(|c| replace_ignoring_case(c, &email, ERASED)))
            })
            .await?;
        }
        Ok(())
    }
}

/// `text` with every occurrence of `needle` (ASCII case ignored) replaced.
fn replace_ignoring_case(text: &str, needle: &str, with: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(i) = lower[at..].find(&needle) {
        out.push_str(&text[at..at + i]);
        out.push_str(with);
        at += i + needle.len();
    }
    out.push_str(&text[at..]);
    out
}

fn webhooks_key(provider: Provider) -> String {
    format!("webhooks#{provider}")
}

async fn update_webhooks(
    kv: &(impl StateKv + ?Sized),
    tenant: &TenantId,
    provider: Provider,
    f: &(dyn Fn(&mut WebhookHealth) + Send + Sync),
) -> Result<(), StoreError> {
    kv.kv_update(tenant.as_str(), &webhooks_key(provider), &|current| {
        let mut health: WebhookHealth = match current {
            Some(s) => from_json(s)?,
            None => WebhookHealth::default(),
        };
        f(&mut health);
        Ok(Some(to_json(&health)?))
    })
    .await
}

#[async_trait]
impl<K: StateKv> WebhookWatch for K {
    async fn note_webhook(
        &self,
        tenant: &TenantId,
        provider: Provider,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        update_webhooks(self, tenant, provider, &|h| {
            h.last_webhook_at = h.last_webhook_at.max(Some(at));
        })
        .await
    }

    async fn note_poll(
        &self,
        tenant: &TenantId,
        provider: Provider,
        missed: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        update_webhooks(self, tenant, provider, &|h| {
            h.last_poll_at = Some(at);
            h.missed_by_last_poll = missed;
            if missed > 0 {
                h.last_missed_at = Some(at);
            }
        })
        .await
    }

    async fn webhook_health(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<WebhookHealth, StoreError> {
        Ok(get(self, tenant.as_str(), &webhooks_key(provider))
            .await?
            .unwrap_or_default())
    }
}

#[async_trait]
impl<K: StateKv> FieldRulesStore for K {
    async fn field_rules(&self, tenant: &TenantId) -> Result<FieldRules, StoreError> {
        Ok(get(self, tenant.as_str(), "settings#fields")
            .await?
            .unwrap_or_default())
    }

    async fn set_field_rules(
        &self,
        tenant: &TenantId,
        rules: &FieldRules,
    ) -> Result<(), StoreError> {
        self.kv_put(tenant.as_str(), "settings#fields", &to_json(rules)?)
            .await
    }
}

/// How long a history entry is kept, and how many of a contact's are.
const HISTORY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const HISTORY_KEEP: usize = 50;

fn history_prefix(contact_id: &str) -> String {
    format!("history#{contact_id}#")
}

#[async_trait]
impl<K: StateKv> SyncHistory for K {
    async fn record_history(&self, entry: &HistoryEntry) -> Result<(), StoreError> {
        let prefix = history_prefix(&entry.contact_id);
        let key = format!(
            "{prefix}{}#{}",
            entry.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            uuid::Uuid::new_v4()
        );
        self.kv_append(
            entry.tenant.as_str(),
            &prefix,
            &key,
            &to_json(entry)?,
            HISTORY_TTL,
            HISTORY_KEEP,
        )
        .await
    }

    async fn history(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        scan(
            self,
            tenant.as_str(),
            &history_prefix(contact_id),
            true,
            Some(limit),
        )
        .await
    }
}

#[async_trait]
impl<K: StateKv> Dedupe for K {
    async fn first_sighting(
        &self,
        tenant: &TenantId,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.kv_put_new(tenant.as_str(), &format!("seen#{key}"), "1", ttl)
            .await
    }

    async fn first_sightings(
        &self,
        tenant: &TenantId,
        keys: &[String],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        let keys: Vec<String> = keys.iter().map(|k| format!("seen#{k}")).collect();
        self.kv_put_new_many(tenant.as_str(), &keys, "1", ttl).await
    }

    async fn forget_sighting(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError> {
        self.kv_delete(tenant.as_str(), &format!("seen#{key}"))
            .await
    }
}

#[async_trait]
impl<K: StateKv> FieldKeys for K {
    async fn field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: CustomField,
    ) -> Result<Option<String>, StoreError> {
        get(self, tenant.as_str(), &field_key(provider, field)).await
    }

    async fn set_field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: CustomField,
        key: Option<&str>,
    ) -> Result<(), StoreError> {
        let k = field_key(provider, field);
        match key {
            Some(v) => self.kv_put(tenant.as_str(), &k, &to_json(&v)?).await,
            // Read first: a first sync clears an issue that is rarely there, and a read costs a
            // fraction of a delete in DynamoDB.
            None => match self.kv_get(tenant.as_str(), &k).await? {
                Some(_) => self.kv_delete(tenant.as_str(), &k).await,
                None => Ok(()),
            },
        }
    }

    async fn claim_field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: CustomField,
        key: &str,
    ) -> Result<String, StoreError> {
        let k = field_key(provider, field);
        let mine = to_json(&key)?;
        self.kv_update(tenant.as_str(), &k, &|current| {
            Ok(current.is_none().then(|| mine.clone()))
        })
        .await?;
        get(self, tenant.as_str(), &k)
            .await?
            .ok_or_else(|| StoreError::Backend(format!("{k} vanished after it was stored")))
    }
}

#[async_trait]
impl<K: StateKv> ContactIssues for K {
    async fn set_issue(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        let k = issue_key(contact_id, provider);
        match message {
            Some(m) => {
                let issue = ContactIssue {
                    contact_id: contact_id.to_string(),
                    provider,
                    message: m.to_string(),
                    at: Utc::now(),
                };
                self.kv_put(tenant.as_str(), &k, &to_json(&issue)?).await
            }
            // Read first: a first sync clears an issue that is rarely there, and a read costs a
            // fraction of a delete in DynamoDB.
            None => match self.kv_get(tenant.as_str(), &k).await? {
                Some(_) => self.kv_delete(tenant.as_str(), &k).await,
                None => Ok(()),
            },
        }
    }

    async fn issues(
        &self,
        tenant: &TenantId,
        contact_id: &str,
    ) -> Result<Vec<ContactIssue>, StoreError> {
        scan(
            self,
            tenant.as_str(),
            &format!("issue#{contact_id}#"),
            false,
            None,
        )
        .await
    }
}

#[async_trait]
impl<K: StateKv> TenantRegistry for K {
    async fn put_record(&self, record: &TenantRecord, index: &[String]) -> Result<(), StoreError> {
        let id = &record.config.id;
        // The record before its index entries: an entry never points to a tenant not there.
        self.kv_put(REGISTRY, &format!("tenant#{id}"), &to_json(record)?)
            .await?;
        for index in index {
            self.kv_put(REGISTRY, &format!("key#{index}"), id.as_str())
                .await?;
        }
        Ok(())
    }

    async fn registered_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        scan(self, REGISTRY, "tenant#", false, None).await
    }

    async fn registered_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        get(self, REGISTRY, &format!("tenant#{id}")).await
    }

    async fn tenant_by_index(&self, index: &str) -> Result<Option<TenantId>, StoreError> {
        Ok(self
            .kv_get(REGISTRY, &format!("key#{index}"))
            .await?
            .map(TenantId::new))
    }
}
