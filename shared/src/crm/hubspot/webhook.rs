//! HubSpot webhook payloads → ChangeEvents. Pure: signature checks and I/O live in `http`.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::mapping::standard_field;
use crate::domain::{ChangeEvent, ChangeKind, Origin, Provider, Reported, TenantId};

/// HubSpot sends at most 100 events per request.
pub const MAX_EVENTS: usize = 100;

/// An id HubSpot may send as a JSON number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Num(#[serde(deserialize_with = "crate::whole::natural")] u64),
    Str(String),
}

impl utoipa::PartialSchema for Id {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(crate::whole::natural_schema())
            .item(ObjectBuilder::new().schema_type(Type::String))
            .description(Some("An id, as a number or a string"))
            .into()
    }
}

impl utoipa::ToSchema for Id {}

impl Id {
    pub fn as_string(&self) -> String {
        match self {
            Id::Num(n) => n.to_string(),
            Id::Str(s) => s.clone(),
        }
    }
}

/// A delivery: 1 to [`MAX_EVENTS`] notifications, all of one portal.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[schema(min_items = 1, max_items = 100)]
pub struct HubSpotBatch(pub Vec<HubSpotEvent>);

/// One notification. Only `objectId`, `portalId`, `occurredAt` and the type are required.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HubSpotEvent {
    pub object_id: Id,
    #[serde(deserialize_with = "crate::whole::natural")]
    #[schema(maximum = 9_007_199_254_740_991_i64)]
    pub portal_id: u64,
    /// Milliseconds since the epoch.
    #[serde(deserialize_with = "crate::whole::int")]
    #[schema(minimum = -9_007_199_254_740_991_i64, maximum = 9_007_199_254_740_991_i64)]
    pub occurred_at: i64,
    #[serde(alias = "eventType")]
    pub subscription_type: String,
    #[serde(default)]
    pub event_id: Option<Value>,
    #[serde(default)]
    pub subscription_id: Option<Value>,
    #[serde(default, deserialize_with = "crate::whole::opt_natural")]
    #[schema(maximum = 9_007_199_254_740_991_i64)]
    pub app_id: Option<u64>,
    #[serde(default, deserialize_with = "crate::whole::opt_u32")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    pub attempt_number: Option<u32>,
    #[serde(default)]
    pub change_source: Option<String>,
    #[serde(default)]
    pub source_id: Option<String>,
    #[serde(default)]
    pub property_name: Option<String>,
    #[serde(default)]
    pub property_value: Option<String>,
    #[serde(default)]
    pub primary_object_id: Option<Id>,
    #[serde(default)]
    pub merged_object_ids: Vec<Id>,
    #[serde(default)]
    pub new_object_id: Option<Id>,
}

impl HubSpotEvent {
    /// Our own write (echo): `changeSource` INTEGRATION with our app id as `sourceId`.
    pub fn is_own_write(&self, our_app_id: Option<u64>) -> bool {
        let Some(app) = our_app_id else { return false };
        self.change_source.as_deref() == Some("INTEGRATION")
            && self.source_id.as_deref() == Some(app.to_string().as_str())
    }

    /// HubSpot's `eventId` is not unique: dedupe on the documented composite key.
    pub fn dedupe_key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.portal_id.to_string(),
            self.subscription_id
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
            self.object_id.as_string(),
            self.event_id
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
            self.occurred_at.to_string(),
            self.subscription_type.clone(),
            self.property_name.clone().unwrap_or_default(),
            self.property_value.clone().unwrap_or_default(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        format!("hubspot#{}", hex::encode(h.finalize()))
    }

    fn occurred(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.occurred_at)
            .single()
            .unwrap_or_else(Utc::now)
    }

    /// The trigger this event stands for; `None` for types we do not sync (associations…).
    pub fn to_change(&self, tenant: &TenantId) -> Option<ChangeEvent> {
        let ty = self.subscription_type.as_str();
        let (record, kind) = match ty {
            "contact.creation" | "contact.propertyChange" | "contact.restore" => {
                (self.object_id.as_string(), ChangeKind::Upsert)
            }
            "contact.deletion" => (self.object_id.as_string(), ChangeKind::Delete),
            // A GDPR delete in HubSpot: the person is erased everywhere.
            "contact.privacyDeletion" => (self.object_id.as_string(), ChangeKind::Erase),
            "contact.merge" => {
                // Survivor: newObjectId → primaryObjectId → objectId.
                let survivor = self
                    .new_object_id
                    .as_ref()
                    .or(self.primary_object_id.as_ref())
                    .unwrap_or(&self.object_id)
                    .as_string();
                // The primary first: its link is the one that moves to a new survivor (the
                // survivor keeps the primary's values, email included); the others' links
                // become tombstones.
                let mut merged: Vec<String> = Vec::new();
                let ids = self
                    .primary_object_id
                    .iter()
                    .chain(std::iter::once(&self.object_id))
                    .chain(self.merged_object_ids.iter());
                for id in ids.map(Id::as_string) {
                    if id != survivor && !merged.contains(&id) {
                        merged.push(id);
                    }
                }
                (survivor, ChangeKind::Merge { merged_ids: merged })
            }
            _ => return None,
        };
        Some(ChangeEvent {
            tenant: tenant.clone(),
            origin: Origin::Crm(Provider::HubSpot),
            record_id: record,
            kind,
            occurred_at: self.occurred(),
            provenance: Some(format!(
                "{}:{}",
                self.change_source.as_deref().unwrap_or("?"),
                self.source_id.as_deref().unwrap_or("?")
            )),
            event_id: self.event_id.as_ref().map(Value::to_string),
            reported: self.reported().into_iter().collect(),
            replayed: false,
        })
    }

    /// The value a property change set, for a standard property.
    fn reported(&self) -> Option<Reported> {
        if self.subscription_type != "contact.propertyChange" {
            return None;
        }
        Some(Reported::set(
            standard_field(self.property_name.as_deref()?)?,
            self.property_value.clone(),
            self.occurred(),
        ))
    }
}

/// Coalesces a batch to one trigger per record: merges first, then deletes, then upserts (the
/// worker re-reads the record anyway, so one trigger per record is enough).
pub fn coalesce(mut changes: Vec<ChangeEvent>) -> Vec<ChangeEvent> {
    fn rank(k: &ChangeKind) -> u8 {
        match k {
            // An erasure outranks everything else about the record.
            ChangeKind::Erase => 0,
            ChangeKind::Merge { .. } => 1,
            ChangeKind::Delete => 2,
            ChangeKind::Upsert => 3,
            // HubSpot has no echo event of ours (its events carry no values before).
            ChangeKind::Echo => 4,
        }
    }
    changes.sort_by(|a, b| {
        (
            a.record_id.as_str(),
            rank(&a.kind),
            std::cmp::Reverse(a.occurred_at),
        )
            .cmp(&(
                b.record_id.as_str(),
                rank(&b.kind),
                std::cmp::Reverse(b.occurred_at),
            ))
    });
    let mut out: Vec<ChangeEvent> = Vec::new();
    for c in changes {
        match out.last_mut() {
            // The values the dropped events reported stay with the record's trigger.
            Some(last)
                if last.record_id == c.record_id && !matches!(c.kind, ChangeKind::Merge { .. }) =>
            {
                last.reported.extend(c.reported);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"[
      {"eventId": 4103827551, "subscriptionId": 2461201, "portalId": 48213377, "appId": 3120988,
       "occurredAt": 1767225600123, "subscriptionType": "contact.creation", "attemptNumber": 0,
       "objectId": 120004567801, "changeFlag": "CREATED", "changeSource": "CRM_UI", "sourceId": "userId:7765123"},
      {"eventId": 4103827552, "subscriptionId": 2461205, "portalId": 48213377, "appId": 3120988,
       "occurredAt": 1767225601450, "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
       "objectId": 120004567801, "propertyName": "email", "propertyValue": "jane.doe@example.com",
       "changeSource": "CRM_UI", "sourceId": "userId:7765123"},
      {"eventId": 4103827553, "subscriptionId": 2461205, "portalId": 48213377, "appId": 3120988,
       "occurredAt": 1767225602000, "subscriptionType": "contact.propertyChange", "attemptNumber": 2,
       "objectId": 120004560002, "propertyName": "firstname", "propertyValue": "Sam",
       "changeSource": "INTEGRATION", "sourceId": "3120988"},
      {"eventId": 4103827554, "subscriptionId": 2461207, "portalId": 48213377, "appId": 3120988,
       "occurredAt": 1767225603000, "subscriptionType": "contact.merge", "attemptNumber": 0,
       "objectId": 120004567801, "primaryObjectId": 120004567801, "mergedObjectIds": [120004500001],
       "newObjectId": 120004567899, "numberOfPropertiesMoved": 12, "changeSource": "CRM_UI",
       "sourceId": "userId:7765123"},
      {"eventId": 4103827555, "subscriptionId": 2461202, "portalId": 48213377, "appId": 3120988,
       "occurredAt": 1767225604000, "subscriptionType": "contact.deletion", "attemptNumber": 0,
       "objectId": 120004599999, "changeFlag": "DELETED", "changeSource": "CRM_UI", "sourceId": "userId:7765123"},
      {"eventId": 4103827557, "portalId": 48213377, "occurredAt": 1767225606000,
       "eventType": "contact.associationChange", "objectId": 1}
    ]"#;

    #[test]
    fn parses_the_documented_shapes_and_maps_kinds() {
        let events: Vec<HubSpotEvent> = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(events.len(), 6);
        let t = TenantId::new("t");
        let changes: Vec<_> = events.iter().filter_map(|e| e.to_change(&t)).collect();
        assert_eq!(changes.len(), 5, "association events are ignored");
        assert_eq!(changes[0].kind, ChangeKind::Upsert);
        assert_eq!(changes[0].record_id, "120004567801");
        let merge = &changes[3];
        assert_eq!(merge.record_id, "120004567899");
        assert_eq!(
            merge.kind,
            ChangeKind::Merge {
                merged_ids: vec!["120004567801".into(), "120004500001".into()]
            },
            "the primary first"
        );
        assert_eq!(changes[4].kind, ChangeKind::Delete);
    }

    #[test]
    fn own_writes_are_recognised() {
        let events: Vec<HubSpotEvent> = serde_json::from_str(SAMPLE).unwrap();
        assert!(!events[0].is_own_write(Some(3120988)));
        assert!(events[2].is_own_write(Some(3120988)));
        assert!(!events[2].is_own_write(Some(1)));
        assert!(!events[2].is_own_write(None));
    }

    #[test]
    fn dedupe_key_covers_the_composite() {
        let events: Vec<HubSpotEvent> = serde_json::from_str(SAMPLE).unwrap();
        let keys: std::collections::HashSet<_> =
            events.iter().map(HubSpotEvent::dedupe_key).collect();
        assert_eq!(keys.len(), events.len());
        assert_eq!(events[0].dedupe_key(), events[0].clone().dedupe_key());
    }

    #[test]
    fn coalesces_one_trigger_per_record() {
        let events: Vec<HubSpotEvent> = serde_json::from_str(SAMPLE).unwrap();
        let t = TenantId::new("t");
        let changes: Vec<_> = events.iter().filter_map(|e| e.to_change(&t)).collect();
        let out = coalesce(changes);
        // The email the property change reported stays with the record's one trigger.
        let jane = out.iter().find(|c| c.record_id == "120004567801").unwrap();
        assert_eq!(
            jane.reported,
            vec![Reported::set(
                crate::domain::Field::Email,
                Some("jane.doe@example.com".into()),
                Utc.timestamp_millis_opt(1767225601450).unwrap()
            )]
        );
        let ids: Vec<_> = out.iter().map(|c| c.record_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "120004560002",
                "120004567801",
                "120004567899",
                "120004599999"
            ]
        );
    }

    #[test]
    fn missing_required_fields_are_rejected() {
        assert!(serde_json::from_str::<Vec<HubSpotEvent>>(r#"[{"portalId":1}]"#).is_err());
        assert!(serde_json::from_str::<Vec<HubSpotEvent>>(r#"{"objectId":1}"#).is_err());
    }
}
