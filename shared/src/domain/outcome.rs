//! Sync outcomes an app or an on-call person reacts to, published as events (EventBridge in
//! AWS; a webhook URL or the log locally). They name records and fields, never values: no
//! person's data leaves in them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DecisionAction, Field, Provider, Side, TenantId};

/// The `source` of every event on the bus.
pub const EVENT_SOURCE: &str = "contact-sync";

/// One outcome. Its `type` is the event's detail type on EventBridge (in PascalCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SyncOutcome {
    /// A contact was synced with a CRM: what was done and which fields were written where.
    ContactSynced {
        tenant: TenantId,
        contact_id: String,
        provider: Provider,
        record_id: Option<String>,
        action: DecisionAction,
        /// Fields written to the CRM record.
        crm_fields: Vec<Field>,
        /// Fields written to the app contact.
        app_fields: Vec<Field>,
        at: DateTime<Utc>,
    },
    /// A field changed on both sides; `winner`'s value was kept.
    ConflictResolved {
        tenant: TenantId,
        contact_id: String,
        provider: Provider,
        field: Field,
        winner: Side,
        at: DateTime<Utc>,
    },
    /// A sync failed (it is retried), or failed for the last time (`dead_lettered`: it waits in
    /// the DLQ for a replay).
    SyncFailed {
        tenant: TenantId,
        contact_id: Option<String>,
        provider: Option<Provider>,
        error: String,
        dead_lettered: bool,
        at: DateTime<Utc>,
    },
    /// A CRM's webhooks look broken for the tenant: changes arrive only with the poll.
    WebhooksBroken {
        tenant: TenantId,
        provider: Provider,
        at: DateTime<Utc>,
    },
    /// A CRM's daily quota is spent: no calls to it until `until`.
    QuotaPaused {
        tenant: TenantId,
        provider: Provider,
        until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

impl SyncOutcome {
    /// The event's detail type: `ContactSynced`, `SyncFailed`, ...
    pub fn detail_type(&self) -> &'static str {
        match self {
            SyncOutcome::ContactSynced { .. } => "ContactSynced",
            SyncOutcome::ConflictResolved { .. } => "ConflictResolved",
            SyncOutcome::SyncFailed { .. } => "SyncFailed",
            SyncOutcome::WebhooksBroken { .. } => "WebhooksBroken",
            SyncOutcome::QuotaPaused { .. } => "QuotaPaused",
        }
    }

    pub fn tenant(&self) -> &TenantId {
        match self {
            SyncOutcome::ContactSynced { tenant, .. }
            | SyncOutcome::ConflictResolved { tenant, .. }
            | SyncOutcome::SyncFailed { tenant, .. }
            | SyncOutcome::WebhooksBroken { tenant, .. }
            | SyncOutcome::QuotaPaused { tenant, .. } => tenant,
        }
    }
}

/// The JSON Schema (2020-12) of the outcomes, as `docs/events.schema.json` holds it: an event's
/// `detail` on EventBridge, an item of the array POSTed to `OUTCOMES_WEBHOOK_URL`.
pub fn json_schema() -> serde_json::Value {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(components(schemas(SyncOutcome)))]
    struct Outcomes;
    let components = Outcomes::openapi().components.unwrap_or_default();
    let defs = serde_json::to_string(&components.schemas)
        .unwrap_or_default()
        .replace("#/components/schemas/", "#/$defs/");
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "contact-sync sync outcomes",
        "description": "One sync outcome: the `detail` of an EventBridge event (source `contact-sync`, detail type the `type` in PascalCase), or an item of the JSON array POSTed to OUTCOMES_WEBHOOK_URL. Ids and field names only, never a person's values.",
        "$ref": "#/$defs/SyncOutcome",
        "$defs": serde_json::from_str::<serde_json::Value>(&defs).unwrap_or_default(),
    })
}
