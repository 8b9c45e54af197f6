//! The tenants a service serves: fixed ones (the local runner's, an environment tenant) and,
//! in a deployment, registered ones loaded from the registry when a request or job first names
//! them and cached for a short time. A cold start reads no tenant it does not serve, and a
//! tenant onboarded meanwhile is served once its key is looked up, without a redeploy.
//!
//! Lookups that start work (a request's key, a webhook's account, a job's tenant) go through
//! the async `resolve*` methods; the service's inner lookups then find the tenant in memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::warn;

use super::{TenantConfig, TenantKey, TenantRecord};
use crate::domain::{Provider, TenantId};
use crate::error::StoreError;
use crate::ports::CrmClient;

/// How long a loaded tenant (or a key found to name no tenant) is served before it is read
/// again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Unknown keys remembered at most (random keys must not grow the cache without bound).
const MAX_REMEMBERED_KEYS: usize = 10_000;

/// Where registered tenants come from, and how their clients are opened.
#[async_trait]
pub trait TenantSource: Send + Sync {
    async fn record(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError>;
    async fn find(&self, index: &str) -> Result<Option<TenantId>, StoreError>;
    /// Every registered tenant (the schedule serves them all).
    async fn records(&self) -> Result<Vec<TenantRecord>, StoreError>;
    /// The CRM clients of a record, in sync order (no network).
    fn open(&self, record: &TenantRecord) -> Result<Vec<Arc<dyn CrmClient>>, StoreError>;
}

struct Served {
    config: TenantConfig,
    clients: Vec<Arc<dyn CrmClient>>,
    /// The record it was opened from (clients are kept while it is unchanged, and with them
    /// their pacing and tokens).
    fingerprint: String,
}

struct Loaded {
    at: Instant,
    served: Arc<Served>,
}

/// The tenants of a deployment and the CRM clients serving each.
#[derive(Default)]
pub struct Tenants {
    fixed: HashMap<TenantId, Arc<Served>>,
    source: Option<Arc<dyn TenantSource>>,
    ttl: Duration,
    loaded: RwLock<HashMap<TenantId, Loaded>>,
    /// Index entry → the tenant it named, and when that was read.
    keys: RwLock<HashMap<String, (Instant, Option<TenantId>)>>,
}

impl Tenants {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also serves the tenants of `source`, each loaded when first named and read again after
    /// `ttl`.
    pub fn with_source(mut self, source: Arc<dyn TenantSource>, ttl: Duration) -> Self {
        self.source = Some(source);
        self.ttl = ttl;
        self
    }

    /// Adds a fixed tenant with the CRM clients that serve it (in sync order).
    pub fn add(&mut self, config: TenantConfig, clients: Vec<Arc<dyn CrmClient>>) {
        let served = Served {
            config,
            clients,
            fingerprint: String::new(),
        };
        self.fixed
            .insert(served.config.id.clone(), Arc::new(served));
    }

    fn served(&self, id: &TenantId) -> Option<Arc<Served>> {
        if let Some(s) = self.fixed.get(id) {
            return Some(s.clone());
        }
        read(&self.loaded).get(id).map(|l| l.served.clone())
    }

    fn every(&self) -> Vec<Arc<Served>> {
        let mut all: Vec<_> = self.fixed.values().cloned().collect();
        all.extend(read(&self.loaded).values().map(|l| l.served.clone()));
        all
    }

    /// A tenant in memory (fixed, or loaded by a `resolve*` call).
    pub fn get(&self, id: &TenantId) -> Option<TenantConfig> {
        self.served(id).map(|s| s.config.clone())
    }

    /// The tenants in memory.
    pub fn all(&self) -> Vec<TenantConfig> {
        self.every().iter().map(|s| s.config.clone()).collect()
    }

    pub fn clients(&self, id: &TenantId) -> Vec<Arc<dyn CrmClient>> {
        self.served(id)
            .map(|s| s.clients.clone())
            .unwrap_or_default()
    }

    pub fn client(&self, id: &TenantId, provider: Provider) -> Option<Arc<dyn CrmClient>> {
        self.served(id)?
            .clients
            .iter()
            .find(|c| c.provider() == provider)
            .cloned()
    }

    pub fn providers(&self, id: &TenantId) -> Vec<Provider> {
        self.clients(id).iter().map(|c| c.provider()).collect()
    }

    /// The tenant, loaded from the source when it is not in memory or its copy is older than
    /// the TTL. A source that fails while a copy is in memory is answered from the copy.
    pub async fn resolve(&self, id: &TenantId) -> Result<Option<TenantConfig>, StoreError> {
        if let Some(s) = self.fixed.get(id) {
            return Ok(Some(s.config.clone()));
        }
        let Some(source) = &self.source else {
            return Ok(None);
        };
        let held = read(&self.loaded)
            .get(id)
            .map(|l| (l.at.elapsed() < self.ttl, l.served.clone()));
        if let Some((true, served)) = &held {
            return Ok(Some(served.config.clone()));
        }
        let record = match source.record(id).await {
            Ok(r) => r,
            Err(e) => {
                if let Some((_, served)) = held {
                    warn!(tenant = %id, error = %e, "tenant registry unreachable; serving the copy in memory");
                    return Ok(Some(served.config.clone()));
                }
                return Err(e);
            }
        };
        let Some(record) = record else {
            write(&self.loaded).remove(id);
            return Ok(None);
        };
        Ok(Some(self.install(
            source.as_ref(),
            record,
            held.map(|(_, s)| s),
        )?))
    }

    /// Serves `record` from now on, with the clients of `held` when it was opened from the
    /// same record (they keep their pacing and tokens).
    fn install(
        &self,
        source: &dyn TenantSource,
        record: TenantRecord,
        held: Option<Arc<Served>>,
    ) -> Result<TenantConfig, StoreError> {
        let fingerprint = serde_json::to_string(&record).unwrap_or_default();
        let served = match held {
            Some(s) if s.fingerprint == fingerprint => s,
            _ => Arc::new(Served {
                clients: source.open(&record)?,
                config: record.config,
                fingerprint,
            }),
        };
        let config = served.config.clone();
        write(&self.loaded).insert(
            config.id.clone(),
            Loaded {
                at: Instant::now(),
                served,
            },
        );
        Ok(config)
    }

    /// The tenant `key` names: a fixed one, else the one the source's index points to (the
    /// answer, found or not, remembered for the TTL), loaded and checked against the key.
    pub async fn resolve_key(
        &self,
        key: &TenantKey<'_>,
    ) -> Result<Option<TenantConfig>, StoreError> {
        if let Some(t) = self
            .fixed
            .values()
            .find(|s| key.matches(&s.config))
            .map(|s| s.config.clone())
        {
            return Ok(Some(t));
        }
        let Some(source) = &self.source else {
            return Ok(None);
        };
        let index = key.index();
        let remembered = read(&self.keys)
            .get(&index)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, id)| id.clone());
        let id = match remembered {
            Some(id) => id,
            None => {
                let id = source.find(&index).await?;
                let mut keys = write(&self.keys);
                if keys.len() >= MAX_REMEMBERED_KEYS {
                    keys.clear();
                }
                keys.insert(index, (Instant::now(), id.clone()));
                id
            }
        };
        let Some(id) = id else {
            return Ok(None);
        };
        Ok(self.resolve(&id).await?.filter(|t| key.matches(t)))
    }

    /// Every tenant served: the fixed ones and every registered one, each loaded from the one
    /// listing.
    pub async fn resolve_all(&self) -> Result<Vec<TenantId>, StoreError> {
        let mut ids: Vec<TenantId> = self.fixed.keys().cloned().collect();
        if let Some(source) = &self.source {
            for record in source.records().await? {
                let id = record.config.id.clone();
                if ids.contains(&id) {
                    continue;
                }
                let held = read(&self.loaded).get(&id).map(|l| l.served.clone());
                self.install(source.as_ref(), record, held)?;
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
