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
//!
//! - `records.rs`: contacts and ContactLinks;
//! - `state.rs`: the key-value port of the state layout (`adapters::state`) on SyncState.

mod records;
mod state;

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, Put, ScalarAttributeType, TimeToLiveSpecification,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::sdk_message;
use crate::domain::{Contact, TenantId};
use crate::error::StoreError;

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
}
