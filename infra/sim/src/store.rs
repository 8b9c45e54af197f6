//! The stores behind the service's ports, with DynamoDB's semantics and faults: the embedded
//! store (conditional writes, transactions, consistent reads by key — the same contract the
//! DynamoDB adapter proves on moto) behind a boundary, where a call can fail before its effect
//! or lose its answer after it, and where the by-contact index (a GSI) answers from a view up
//! to `gsi_lag_ms` old.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use shared::adapters::embedded::EmbeddedStore;
use shared::domain::{Contact, ContactLink, Provider, TenantId};
use shared::error::StoreError;
use shared::ports::{ContactStore, LinkStore, Page};

use crate::sched::{Fault, Sched};
use crate::seen::Seen;

/// The contact and link stores as the workers see them.
pub struct SimStore {
    pub inner: EmbeddedStore,
    sched: Sched,
    gsi_lag_ms: i64,
    blind: bool,
    /// The by-contact index's last answers, by contact, with when they were read.
    gsi_views: Mutex<BTreeMap<String, (i64, Vec<ContactLink>)>>,
    /// The values the workers stored: seen by a sync.
    seen: Arc<Seen>,
}

impl SimStore {
    pub fn new(
        inner: EmbeddedStore,
        sched: Sched,
        gsi_lag_ms: i64,
        blind: bool,
        seen: Arc<Seen>,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner,
            sched,
            gsi_lag_ms,
            blind,
            gsi_views: Mutex::new(BTreeMap::new()),
            seen,
        })
    }

    /// A write's effect happened (whatever became of its answer): the values it stored are
    /// seen by a sync.
    fn saw<T>(&self, result: &Result<T, StoreError>, fields: &shared::domain::ContactFields) {
        if result.is_ok() {
            self.seen.fields(fields, self.sched.now());
        }
    }

    /// The boundary before a call, and its fault: an error, or `Ok(lose)` where `lose` says the
    /// answer of a write is to be lost after its effect.
    async fn enter(&self, write: bool) -> Result<bool, StoreError> {
        self.sched.boundary().await;
        match self.sched.roll(write) {
            Fault::Before => Err(StoreError::Backend("simulated: service unavailable".into())),
            Fault::AnswerLost => Ok(true),
            Fault::None => Ok(false),
        }
    }

    fn settle<T>(lose: bool, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match result {
            Ok(_) if lose => Err(StoreError::Backend(
                "simulated: connection reset after the write".into(),
            )),
            other => other,
        }
    }
}

#[async_trait]
impl ContactStore for SimStore {
    async fn get(&self, t: &TenantId, id: &str) -> Result<Option<Contact>, StoreError> {
        self.enter(false).await?;
        self.inner.get(t, id).await
    }
    async fn find_by_email(&self, t: &TenantId, e: &str) -> Result<Option<Contact>, StoreError> {
        self.enter(false).await?;
        self.inner.find_by_email(t, e).await
    }
    async fn list(
        &self,
        t: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Contact>, StoreError> {
        self.enter(false).await?;
        self.inner.list(t, after, limit).await
    }
    async fn insert(&self, c: &Contact) -> Result<Contact, StoreError> {
        let lose = self.enter(true).await?;
        let done = self.inner.insert(c).await;
        self.saw(&done, &c.fields);
        Self::settle(lose, done)
    }
    async fn update(&self, c: &Contact) -> Result<Contact, StoreError> {
        let lose = self.enter(true).await?;
        let done = self.inner.update(c).await;
        self.saw(&done, &c.fields);
        Self::settle(lose, done)
    }
    async fn erase(&self, t: &TenantId, id: &str) -> Result<(), StoreError> {
        let lose = self.enter(true).await?;
        let done = self.inner.erase(t, id).await;
        Self::settle(lose, done)
    }
}

#[async_trait]
impl LinkStore for SimStore {
    async fn get_link(
        &self,
        t: &TenantId,
        p: Provider,
        id: &str,
    ) -> Result<Option<ContactLink>, StoreError> {
        self.enter(false).await?;
        self.inner.get_link(t, p, id).await
    }
    async fn link_for_contact(
        &self,
        t: &TenantId,
        contact: &str,
        p: Provider,
    ) -> Result<Option<ContactLink>, StoreError> {
        self.enter(false).await?;
        self.inner.link_for_contact(t, contact, p).await
    }
    /// The GSI: eventually consistent, so it may answer what it answered a moment ago.
    async fn links_for_contact(
        &self,
        t: &TenantId,
        contact: &str,
    ) -> Result<Vec<ContactLink>, StoreError> {
        self.enter(false).await?;
        let now = self.sched.now_ms();
        let old = self
            .gsi_views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(contact)
            .cloned();
        if let Some((at, view)) = old
            && now - at <= self.gsi_lag_ms
            && self.sched.chance(0.5)
        {
            return Ok(view);
        }
        let fresh = self.inner.links_for_contact(t, contact).await?;
        self.gsi_views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(contact.to_string(), (now, fresh.clone()));
        Ok(fresh)
    }
    async fn links_for_tenant(&self, t: &TenantId) -> Result<Vec<ContactLink>, StoreError> {
        self.enter(false).await?;
        self.inner.links_for_tenant(t).await
    }
    async fn put_link(&self, l: &ContactLink) -> Result<ContactLink, StoreError> {
        let lose = self.enter(true).await?;
        if self.blind
            && l.version > 0
            && let Some(current) = self
                .inner
                .get_link(&l.tenant, l.provider, &l.external_id)
                .await?
        {
            let blind = ContactLink {
                version: current.version,
                ..l.clone()
            };
            return Self::settle(lose, self.inner.put_link(&blind).await);
        }
        let done = self.inner.put_link(l).await;
        if !l.is_intent() {
            self.saw(&done, &l.base);
        }
        Self::settle(lose, done)
    }
    async fn rekey_link(&self, l: &ContactLink, id: &str) -> Result<ContactLink, StoreError> {
        let lose = self.enter(true).await?;
        Self::settle(lose, self.inner.rekey_link(l, id).await)
    }
    async fn delete_link(&self, l: &ContactLink) -> Result<(), StoreError> {
        let lose = self.enter(true).await?;
        Self::settle(lose, self.inner.delete_link(l).await)
    }
}
