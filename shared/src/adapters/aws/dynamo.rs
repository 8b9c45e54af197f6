//! DynamoDB adapters of the store ports. Three tables (see README, decision log):
//!
//! - **Contacts**: `tenant` (partition) + `sk`: `contact#<id>` items, and `email#<email>` items
//!   that make a live email unique per tenant (written in the same transaction as the contact).
//! - **ContactLinks**: `tenant` (partition) + `sk` = `provider#externalId`; GSI `by_contact`
//!   (`tenant`, `contact_id`) finds the links of one app contact.
//! - **SyncState**: `tenant` + `k`: cursors, stats, the conflict log, field keys, issues and
//!   webhook-dedupe markers (TTL attribute `expires_at`).
//!
//! Every write that can race is conditional on `version`; the caller re-reads and retries.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::sdk_message;
use crate::domain::{
    ConflictRecord, Contact, ContactLink, CustomField, Provider, TenantId, link_sort_key,
};
use crate::error::StoreError;
use crate::ports::{
    ContactIssue, ContactStore, LinkStore, Page, ProviderStats, SyncNowProgress, SyncState,
};
use crate::tenant::{TenantRecord, TenantRegistry};

type Item = HashMap<String, AttributeValue>;

/// Names of the three tables.
#[derive(Debug, Clone)]
pub struct TableNames {
    pub contacts: String,
    pub links: String,
    pub state: String,
}

impl TableNames {
    /// `CONTACTS_TABLE`, `LINKS_TABLE`, `STATE_TABLE`.
    pub fn from_env() -> Result<Self, StoreError> {
        let var =
            |n: &str| std::env::var(n).map_err(|_| StoreError::Backend(format!("{n} is not set")));
        Ok(Self {
            contacts: var("CONTACTS_TABLE")?,
            links: var("LINKS_TABLE")?,
            state: var("STATE_TABLE")?,
        })
    }

    /// Names with a common prefix (tests).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            contacts: format!("{prefix}-contacts"),
            links: format!("{prefix}-links"),
            state: format!("{prefix}-state"),
        }
    }
}

/// The DynamoDB store: implements [`ContactStore`], [`LinkStore`] and [`SyncState`].
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    tables: TableNames,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn to_item<T: Serialize>(v: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(v).map_err(backend)
}

fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(backend)
}

fn contact_sk(id: &str) -> String {
    format!("contact#{id}")
}

fn email_sk(email: &str) -> String {
    format!("email#{}", email.trim().to_lowercase())
}

/// True when the cancellation reason at `index` of a cancelled transaction is a failed condition.
fn cancelled_at(
    err: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
    >,
    index: usize,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match err.as_service_error() {
        Some(E::TransactionCanceledException(c)) => c
            .cancellation_reasons()
            .get(index)
            .and_then(|r| r.code())
            .is_some_and(|code| code == "ConditionalCheckFailed"),
        _ => false,
    }
}

impl DynamoStore {
    pub fn new(client: Client, tables: TableNames) -> Self {
        Self { client, tables }
    }

    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    /// Creates the three tables (tests and first deployments outside CloudFormation).
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        let key = |name: &str, kt: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kt)
                .build()
                .map_err(backend)
        };
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(backend)
        };
        for (table, sort) in [
            (&self.tables.contacts, "sk"),
            (&self.tables.links, "sk"),
            (&self.tables.state, "k"),
        ] {
            let mut req = self
                .client
                .create_table()
                .table_name(table)
                .billing_mode(BillingMode::PayPerRequest)
                .key_schema(key("tenant", KeyType::Hash)?)
                .key_schema(key(sort, KeyType::Range)?)
                .attribute_definitions(attr("tenant")?)
                .attribute_definitions(attr(sort)?);
            if table == &self.tables.links {
                req = req
                    .attribute_definitions(attr("contact_id")?)
                    .global_secondary_indexes(
                        GlobalSecondaryIndex::builder()
                            .index_name("by_contact")
                            .key_schema(key("tenant", KeyType::Hash)?)
                            .key_schema(key("contact_id", KeyType::Range)?)
                            .projection(
                                Projection::builder()
                                    .projection_type(ProjectionType::All)
                                    .build(),
                            )
                            .build()
                            .map_err(backend)?,
                    );
            }
            req.send().await.map_err(|e| backend(sdk_message(&e)))?;
        }
        self.client
            .update_time_to_live()
            .table_name(&self.tables.state)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("expires_at")
                    .build()
                    .map_err(backend)?,
            )
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        Ok(())
    }

    async fn get_item(
        &self,
        table: &str,
        tenant: &TenantId,
        sort_name: &str,
        sort: &str,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("tenant", s(tenant.as_str()))
            .key(sort_name, s(sort))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        Ok(out.item().cloned())
    }

    /// All items of a query, following `LastEvaluatedKey`.
    async fn query_all(
        &self,
        req: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut page = req.clone();
            if let Some(k) = start.take() {
                page = page.set_exclusive_start_key(Some(k));
            }
            let out = page.send().await.map_err(|e| backend(sdk_message(&e)))?;
            items.extend(out.items().iter().cloned());
            if limit.is_some_and(|l| items.len() >= l) {
                break;
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    fn contact_put(
        &self,
        contact: &Contact,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Put, StoreError> {
        let mut item = to_item(contact)?;
        item.insert("sk".into(), s(contact_sk(&contact.id)));
        let mut put = Put::builder()
            .table_name(&self.tables.contacts)
            .set_item(Some(item))
            .condition_expression(condition);
        for (k, v) in values {
            put = put.expression_attribute_values(k, v);
        }
        put.build().map_err(backend)
    }

    fn email_lock_put(&self, contact: &Contact, email: &str) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.tables.contacts)
            .item("tenant", s(contact.tenant.as_str()))
            .item("sk", s(email_sk(email)))
            .item("contact_id", s(&contact.id))
            .condition_expression("attribute_not_exists(sk) OR contact_id = :id")
            .expression_attribute_values(":id", s(&contact.id))
            .build()
            .map_err(backend)
    }

    async fn state_get<T: DeserializeOwned>(
        &self,
        tenant: &TenantId,
        k: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.get_item(&self.tables.state, tenant, "k", k).await? {
            Some(item) => match item.get("v") {
                Some(AttributeValue::S(json)) => {
                    serde_json::from_str(json).map(Some).map_err(backend)
                }
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }

    async fn state_put<T: Serialize>(
        &self,
        tenant: &TenantId,
        k: &str,
        v: &T,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.tables.state)
            .item("tenant", s(tenant.as_str()))
            .item("k", s(k))
            .item("v", s(serde_json::to_string(v).map_err(backend)?))
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        Ok(())
    }

    /// The JSON values of a tenant's state items whose key starts with `prefix`, in key order
    /// (or newest first), at most `limit`.
    async fn state_query<T: DeserializeOwned>(
        &self,
        tenant: &str,
        prefix: &str,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<T>, StoreError> {
        let mut req = self
            .client
            .query()
            .table_name(&self.tables.state)
            .key_condition_expression("tenant = :t AND begins_with(k, :p)")
            .expression_attribute_values(":t", s(tenant))
            .expression_attribute_values(":p", s(prefix))
            .scan_index_forward(!newest_first)
            .consistent_read(true);
        if let Some(l) = limit {
            req = req.limit(l.clamp(1, 1000) as i32);
        }
        let items = self.query_all(req, limit).await?;
        items
            .into_iter()
            .take(limit.unwrap_or(usize::MAX))
            .filter_map(|i| match i.get("v") {
                Some(AttributeValue::S(json)) => Some(serde_json::from_str(json).map_err(backend)),
                _ => None,
            })
            .collect()
    }

    async fn state_delete(&self, tenant: &TenantId, k: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.tables.state)
            .key("tenant", s(tenant.as_str()))
            .key("k", s(k))
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        Ok(())
    }

    /// Read-modify-write of a provider's stats, conditional on the item's version.
    async fn update_stats(
        &self,
        tenant: &TenantId,
        provider: Provider,
        f: impl Fn(&mut ProviderStats),
    ) -> Result<(), StoreError> {
        let k = format!("stats#{provider}");
        for _ in 0..10 {
            let item = self.get_item(&self.tables.state, tenant, "k", &k).await?;
            let (mut stats, version): (ProviderStats, u64) = match &item {
                Some(i) => (
                    match i.get("v") {
                        Some(AttributeValue::S(json)) => {
                            serde_json::from_str(json).map_err(backend)?
                        }
                        _ => ProviderStats::default(),
                    },
                    match i.get("version") {
                        Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
                        _ => 0,
                    },
                ),
                None => (ProviderStats::default(), 0),
            };
            stats.provider = Some(provider);
            f(&mut stats);
            let mut req = self
                .client
                .put_item()
                .table_name(&self.tables.state)
                .item("tenant", s(tenant.as_str()))
                .item("k", s(&k))
                .item("v", s(serde_json::to_string(&stats).map_err(backend)?))
                .item("version", n(version + 1));
            req = if version == 0 {
                req.condition_expression("attribute_not_exists(k)")
            } else {
                req.condition_expression("version = :v")
                    .expression_attribute_values(":v", n(version))
            };
            match req.send().await {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                {
                    continue;
                }
                Err(e) => return Err(backend(sdk_message(&e))),
            }
        }
        Err(StoreError::Conflict(format!(
            "stats of {provider} kept changing"
        )))
    }
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
        let mut tx = self.client.transact_write_items().transact_items(
            TransactWriteItem::builder()
                .put(self.contact_put(&stored, "version = :v", vec![(":v", n(contact.version))])?)
                .build(),
        );
        let mut lock_index = None;
        if old_email != new_email {
            if let Some(old) = &old_email {
                tx = tx.transact_items(
                    TransactWriteItem::builder()
                        .delete(
                            Delete::builder()
                                .table_name(&self.tables.contacts)
                                .key("tenant", s(stored.tenant.as_str()))
                                .key("sk", s(email_sk(old)))
                                .condition_expression(
                                    "attribute_not_exists(sk) OR contact_id = :id",
                                )
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
        items.into_iter().map(from_item).collect()
    }

    async fn put_link(&self, link: &ContactLink) -> Result<ContactLink, StoreError> {
        let mut stored = link.clone();
        stored.version = link.version + 1;
        let mut item = to_item(&stored)?;
        item.insert("sk".into(), s(stored.sort_key()));
        let mut req = self
            .client
            .put_item()
            .table_name(&self.tables.links)
            .set_item(Some(item));
        req = if link.version == 0 {
            req.condition_expression("attribute_not_exists(sk)")
        } else {
            req.condition_expression("version = :v")
                .expression_attribute_values(":v", n(link.version))
        };
        match req.send().await {
            Ok(_) => Ok(stored),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict(format!(
                    "link {} changed meanwhile",
                    link.sort_key()
                )))
            }
            Err(e) => Err(backend(sdk_message(&e))),
        }
    }

    async fn delete_link(
        &self,
        tenant: &TenantId,
        provider: Provider,
        external_id: &str,
        version: u64,
    ) -> Result<(), StoreError> {
        let sk = link_sort_key(provider, external_id);
        match self
            .client
            .delete_item()
            .table_name(&self.tables.links)
            .key("tenant", s(tenant.as_str()))
            .key("sk", s(&sk))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(version))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict(format!("link {sk} changed meanwhile")))
            }
            Err(e) => Err(backend(sdk_message(&e))),
        }
    }
}

#[async_trait]
impl SyncState for DynamoStore {
    async fn cursor(&self, tenant: &TenantId, name: &str) -> Result<Option<String>, StoreError> {
        self.state_get(tenant, &format!("cursor#{name}")).await
    }

    async fn set_cursor(
        &self,
        tenant: &TenantId,
        name: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        self.state_put(tenant, &format!("cursor#{name}"), &value)
            .await
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
            .await
    }

    async fn set_paused_until(
        &self,
        tenant: &TenantId,
        provider: Provider,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.update_stats(tenant, provider, |st| st.paused_until = until)
            .await
    }

    async fn stats(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<ProviderStats, StoreError> {
        Ok(self
            .state_get::<ProviderStats>(tenant, &format!("stats#{provider}"))
            .await?
            .unwrap_or(ProviderStats {
                provider: Some(provider),
                ..Default::default()
            }))
    }

    async fn log_conflict(&self, record: &ConflictRecord) -> Result<(), StoreError> {
        let k = format!(
            "conflict#{}#{}",
            record.conflict.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            uuid::Uuid::new_v4()
        );
        self.state_put(&record.tenant, &k, record).await
    }

    async fn conflicts(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>, StoreError> {
        self.state_query(tenant.as_str(), "conflict#", true, Some(limit))
            .await
    }

    async fn first_sighting(
        &self,
        tenant: &TenantId,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Utc::now().timestamp();
        let expires = now + ttl.as_secs().max(1) as i64;
        match self
            .client
            .put_item()
            .table_name(&self.tables.state)
            .item("tenant", s(tenant.as_str()))
            .item("k", s(format!("seen#{key}")))
            .item("expires_at", n(expires))
            .condition_expression("attribute_not_exists(k) OR expires_at <= :now")
            .expression_attribute_values(":now", n(now))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(backend(sdk_message(&e))),
        }
    }

    async fn forget_sighting(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError> {
        self.state_delete(tenant, &format!("seen#{key}")).await
    }

    async fn field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: CustomField,
    ) -> Result<Option<String>, StoreError> {
        self.state_get(tenant, &format!("field#{provider}#{}", field.as_str()))
            .await
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
            Some(v) => self.state_put(tenant, &k, &v).await,
            None => self.state_delete(tenant, &k).await,
        }
    }

    async fn set_issue(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        let k = format!("issue#{contact_id}#{provider}");
        match message {
            Some(m) => {
                let issue = ContactIssue {
                    contact_id: contact_id.to_string(),
                    provider,
                    message: m.to_string(),
                    at: Utc::now(),
                };
                self.state_put(tenant, &k, &issue).await
            }
            None => self.state_delete(tenant, &k).await,
        }
    }

    async fn issues(
        &self,
        tenant: &TenantId,
        contact_id: &str,
    ) -> Result<Vec<ContactIssue>, StoreError> {
        self.state_query(
            tenant.as_str(),
            &format!("issue#{contact_id}#"),
            false,
            None,
        )
        .await
    }
}

/// The partition of the state table that holds the tenant registry.
const REGISTRY: &str = "_registry";

#[async_trait]
impl TenantRegistry for DynamoStore {
    async fn put_tenant(&self, record: &TenantRecord) -> Result<(), StoreError> {
        self.state_put(
            &TenantId::new(REGISTRY),
            &format!("tenant#{}", record.config.id),
            record,
        )
        .await
    }

    async fn registered_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.state_query(REGISTRY, "tenant#", false, None).await
    }
}
