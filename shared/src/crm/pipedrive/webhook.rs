//! Pipedrive webhooks v2 payloads → ChangeEvents. Pure: Basic auth and I/O live in `http`.
//!
//! A payload is `{"meta": {...}, "data": <person or null>, "previous": <object or null>}`, one
//! event per request. Only `meta` matters here: events are triggers, the worker re-reads the
//! person. A merge arrives as two events, a `delete` with `merged_to_id` and a `change` with
//! `merged_from_id`; both map to the same [`ChangeKind::Merge`] on the survivor, so the link is
//! re-keyed whichever arrives first.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::mapping::{Person, STANDARD_JOB_TITLE, Slots, parse_id, parse_time, to_fields};
use crate::domain::{ChangeEvent, ChangeKind, Field, Origin, Provider, Reported, TenantId};

/// `meta` of a webhooks v2 payload. Ids are strings in v2 (numbers accepted too).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct Meta {
    pub action: String,
    pub entity: String,
    #[schema(value_type = CompanyId)]
    pub company_id: Value,
    pub entity_id: Value,
    /// Event id (UUID): the idempotency key; the same on every delivery attempt.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub user_id: Option<Value>,
    /// `app` (web app) or `api`.
    #[serde(default)]
    pub change_source: Option<String>,
    #[serde(default)]
    pub merged_to_id: Option<Value>,
    #[serde(default)]
    pub merged_from_id: Option<Value>,
    #[serde(default)]
    pub timestamp: Option<Value>,
    /// `2.0`: other versions are refused.
    #[serde(default)]
    #[schema(pattern = "^2")]
    pub version: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub webhook_id: Option<Value>,
    #[serde(default, deserialize_with = "crate::whole::opt_u32")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    pub attempt: Option<u32>,
}

/// `meta.company_id`: a string of digits (webhooks v2), or a number. It names the tenant, so
/// nothing looser is taken.
pub struct CompanyId;

impl CompanyId {
    /// The longest id a string may spell: 15 digits (every one below 2^53).
    const MAX_DIGITS: usize = 15;

    pub fn parse(v: &Value) -> Option<u64> {
        match v {
            Value::Number(n) => crate::whole::natural_of(n),
            Value::String(s)
                if (1..=Self::MAX_DIGITS).contains(&s.len())
                    && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                s.parse().ok()
            }
            _ => None,
        }
    }
}

impl utoipa::PartialSchema for CompanyId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(crate::whole::natural_schema())
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(format!("^[0-9]{{1,{}}}$", Self::MAX_DIGITS))),
            )
            .description(Some("A string of digits (webhooks v2), or a number"))
            .into()
    }
}

impl utoipa::ToSchema for CompanyId {}

/// One webhooks v2 delivery.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct PipedriveWebhook {
    pub meta: Meta,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub previous: Option<Value>,
}

/// Why a payload is not a webhooks v2 event we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("not a Pipedrive webhooks v2 payload: {0}")]
    Malformed(String),
    #[error("webhooks v{0} payloads are not supported; register webhooks with version 2.0")]
    Version(String),
    #[error("meta.company_id is not a company id")]
    Company,
}

impl PipedriveWebhook {
    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        let hook: PipedriveWebhook =
            serde_json::from_slice(body).map_err(|e| PayloadError::Malformed(e.to_string()))?;
        if let Some(v) = hook.meta.version.as_deref()
            && !v.starts_with('2')
        {
            return Err(PayloadError::Version(v.to_string()));
        }
        hook.company_id().ok_or(PayloadError::Company)?;
        Ok(hook)
    }

    pub fn company_id(&self) -> Option<u64> {
        CompanyId::parse(&self.meta.company_id)
    }

    fn user_id(&self) -> Option<u64> {
        self.meta.user_id.as_ref().and_then(parse_id)
    }

    /// Our own write (echo): made through the API by our integration user.
    pub fn is_own_write(&self, our_user_id: Option<u64>) -> bool {
        let Some(ours) = our_user_id else {
            return false;
        };
        self.meta.change_source.as_deref() == Some("api") && self.user_id() == Some(ours)
    }

    /// Dedupe key: the event id (`meta.id`), which retries repeat. Without one, a hash of what
    /// identifies the event.
    pub fn dedupe_key(&self) -> String {
        if let Some(id) = self.meta.id.as_deref().filter(|s| !s.trim().is_empty()) {
            return format!("pipedrive#{}", id.trim());
        }
        let mut h = Sha256::new();
        for part in [
            self.meta.company_id.to_string(),
            self.meta.entity.clone(),
            self.meta.entity_id.to_string(),
            self.meta.action.clone(),
            self.meta
                .timestamp
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
            self.meta.correlation_id.clone().unwrap_or_default(),
            self.meta
                .webhook_id
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        format!("pipedrive#{}", hex::encode(h.finalize()))
    }

    /// `meta.timestamp`: an ISO string, or epoch seconds (or milliseconds) as a number.
    fn occurred(&self) -> DateTime<Utc> {
        let t = match &self.meta.timestamp {
            Some(v @ Value::String(s)) => parse_time(v).or_else(|| epoch(s.trim().parse().ok())),
            Some(Value::Number(n)) => epoch(n.as_i64()),
            _ => None,
        };
        t.unwrap_or_else(Utc::now)
    }

    /// The trigger this event stands for; `None` for other entities or unknown actions.
    /// Reported values: the standard fields'.
    pub fn to_change(&self, tenant: &TenantId) -> Option<ChangeEvent> {
        self.to_change_with(tenant, Slots::default())
    }

    /// [`to_change`](Self::to_change), with the tenant's custom fields (`slots`) reported too:
    /// a job title or pronouns kept in a custom field.
    pub fn to_change_with(&self, tenant: &TenantId, slots: Slots<'_>) -> Option<ChangeEvent> {
        if self.meta.entity != "person" {
            return None;
        }
        let id = parse_id(&self.meta.entity_id)?.to_string();
        let merged_to = self.meta.merged_to_id.as_ref().and_then(parse_id);
        let merged_from = self.meta.merged_from_id.as_ref().and_then(parse_id);
        let (record, kind) = match (self.meta.action.as_str(), merged_to, merged_from) {
            // The merged-away person is deleted: re-key to the survivor.
            ("delete", Some(to), _) if to.to_string() != id => (
                to.to_string(),
                ChangeKind::Merge {
                    merged_ids: vec![id],
                },
            ),
            ("delete", _, _) => (id, ChangeKind::Delete),
            ("change", _, Some(from)) if from.to_string() != id => (
                id,
                ChangeKind::Merge {
                    merged_ids: vec![from.to_string()],
                },
            ),
            ("create" | "change", _, _) => (id, ChangeKind::Upsert),
            _ => return None,
        };
        Some(ChangeEvent {
            tenant: tenant.clone(),
            origin: Origin::Crm(Provider::Pipedrive),
            record_id: record,
            kind,
            occurred_at: self.occurred(),
            provenance: Some(format!(
                "{}:{}",
                self.meta.change_source.as_deref().unwrap_or("?"),
                self.user_id()
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "?".into())
            )),
            event_id: self.meta.id.clone(),
            reported: self.reported(slots),
            replayed: false,
        })
    }

    /// Our own write's echo as a trigger: [`ChangeKind::Echo`] with what the fields it changed
    /// held just before it (`previous`), at the time it landed (`data.update_time`). `None`
    /// for anything but a change of a person that names a field of ours.
    pub fn to_echo(&self, tenant: &TenantId, slots: Slots<'_>) -> Option<ChangeEvent> {
        if self.meta.entity != "person" || self.meta.action != "change" {
            return None;
        }
        let id = parse_id(&self.meta.entity_id)?.to_string();
        let (Some(Value::Object(data)), Some(Value::Object(previous))) =
            (&self.data, &self.previous)
        else {
            return None;
        };
        let landed = data.get("update_time").and_then(parse_time)?;
        // The person as it was: `data` with what `previous` says the changed keys held.
        let mut before = data.clone();
        for (key, value) in previous {
            match (key.as_str(), value, before.get_mut(key)) {
                ("custom_fields", Value::Object(old), Some(Value::Object(now))) => {
                    for (k, v) in old {
                        now.insert(k.clone(), v.clone());
                    }
                }
                _ => {
                    before.insert(key.clone(), value.clone());
                }
            }
        }
        let after = Self::named(&Value::Object(data.clone()), previous, slots, landed);
        let reported: Vec<Reported> = Self::named(&Value::Object(before), previous, slots, landed)
            .into_iter()
            .zip(after)
            .map(|(before, after)| {
                Reported::replaced(before.field, before.value, landed, after.value)
            })
            .collect();
        if reported.is_empty() {
            return None;
        }
        Some(ChangeEvent {
            tenant: tenant.clone(),
            origin: Origin::Crm(Provider::Pipedrive),
            record_id: id,
            kind: ChangeKind::Echo,
            occurred_at: landed,
            provenance: Some("echo".into()),
            event_id: self.meta.id.clone(),
            reported,
            replayed: false,
        })
    }

    /// What the ingest makes of a delivery: a user's change as a trigger with the values it
    /// set, our own write (`our_user` through the API) as its echo.
    pub fn trigger(
        &self,
        tenant: &TenantId,
        slots: Slots<'_>,
        our_user: Option<u64>,
    ) -> Option<ChangeEvent> {
        if self.is_own_write(our_user) {
            self.to_echo(tenant, slots)
        } else {
            self.to_change_with(tenant, slots)
        }
    }

    /// The values a change set: `data`'s, for the fields `previous` names.
    fn reported(&self, slots: Slots<'_>) -> Vec<Reported> {
        let (Some(data), Some(Value::Object(previous))) = (&self.data, &self.previous) else {
            return Vec::new();
        };
        Self::named(data, previous, slots, self.occurred())
    }

    /// The values `person` holds for the fields `previous` names — the standard ones, the
    /// standard `job_title` (present only where the account has it, and then it is ours), and
    /// the custom fields `slots` names (their keys only the tenant's settings know) — as of
    /// `at`.
    fn named(
        person: &Value,
        previous: &serde_json::Map<String, Value>,
        slots: Slots<'_>,
        at: DateTime<Utc>,
    ) -> Vec<Reported> {
        let Some(person) = Person::from_json(person) else {
            return Vec::new();
        };
        let custom = previous.get("custom_fields").and_then(Value::as_object);
        let in_custom =
            |key: Option<&str>| key.is_some_and(|k| custom.is_some_and(|c| c.contains_key(k)));
        let job_title = if previous.contains_key(STANDARD_JOB_TITLE) {
            Some(STANDARD_JOB_TITLE)
        } else {
            slots.job_title.filter(|k| in_custom(Some(k)))
        };
        let fields = to_fields(
            &person,
            Slots {
                pronouns: slots.pronouns,
                job_title,
            },
        );
        let mut named: Vec<Field> = [
            ("emails", Field::Email),
            ("first_name", Field::FirstName),
            ("last_name", Field::LastName),
            ("phones", Field::Phone),
        ]
        .into_iter()
        .filter(|(key, _)| previous.contains_key(*key))
        .map(|(_, field)| field)
        .collect();
        if job_title.is_some() {
            named.push(Field::JobTitle);
        }
        if in_custom(slots.pronouns) {
            named.push(Field::Pronouns);
        }
        named
            .into_iter()
            .map(|field| Reported::set(field, fields.get(field).map(str::to_owned), at))
            .collect()
    }
}

fn epoch(n: Option<i64>) -> Option<DateTime<Utc>> {
    let n = n?;
    if n > 100_000_000_000 {
        Utc.timestamp_millis_opt(n).single()
    } else {
        Utc.timestamp_opt(n, 0).single()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(meta: Value) -> Vec<u8> {
        let mut m = json!({
            "action": "change", "entity": "person", "company_id": "8087566",
            "correlation_id": "43cb94f3-bbbd-406c-ae19-ddeec349d896", "entity_id": "8",
            "id": "7c812ffd-8f50-45ea-a597-b8fcba2da9c0", "is_bulk_edit": false,
            "timestamp": "2025-06-02T10:18:35.616Z", "type": "general", "user_id": "12415231",
            "version": "2.0", "webhook_id": "4710827", "webhook_owner_id": "12094821",
            "change_source": "api", "attempt": 1, "host": "acme.pipedrive.com",
            "permitted_user_ids": ["12415231"]
        });
        for (k, v) in meta.as_object().unwrap() {
            m[k] = v.clone();
        }
        json!({"meta": m, "data": {"id": 8, "emails": [], "custom_fields": {}}, "previous": {}})
            .to_string()
            .into_bytes()
    }

    fn t() -> TenantId {
        TenantId::new("t")
    }

    #[test]
    fn the_documented_change_maps_to_an_upsert() {
        let h = PipedriveWebhook::parse(&payload(json!({}))).unwrap();
        assert_eq!(h.company_id(), Some(8087566));
        let c = h.to_change(&t()).unwrap();
        assert_eq!(c.record_id, "8");
        assert_eq!(c.kind, ChangeKind::Upsert);
        assert_eq!(c.origin, Origin::Crm(Provider::Pipedrive));
        assert_eq!(c.occurred_at.timestamp_millis(), 1_748_859_515_616);
        assert_eq!(c.provenance.as_deref(), Some("api:12415231"));
        assert_eq!(
            h.dedupe_key(),
            "pipedrive#7c812ffd-8f50-45ea-a597-b8fcba2da9c0"
        );
    }

    #[test]
    fn a_change_reports_the_new_values_of_the_fields_previous_names() {
        let body = json!({
            "meta": {"action": "change", "entity": "person", "company_id": "8087566",
                     "entity_id": "8", "timestamp": "2025-06-02T10:18:35.616Z", "version": "2.0",
                     "change_source": "app", "user_id": "7"},
            "data": {"id": 8, "first_name": "Grace", "last_name": "Hopper",
                     "emails": [{"value": "grace@example.com", "primary": true, "label": "work"}],
                     "custom_fields": {}},
            "previous": {"last_name": "Brewster"}
        });
        let h = PipedriveWebhook::parse(body.to_string().as_bytes()).unwrap();
        let c = h.to_change(&t()).unwrap();
        assert_eq!(
            c.reported,
            vec![Reported::set(
                Field::LastName,
                Some("Hopper".into()),
                c.occurred_at
            )]
        );
        // A create (`previous` names no field): nothing reported.
        let created = PipedriveWebhook::parse(&payload(json!({"action": "create"}))).unwrap();
        assert!(created.to_change(&t()).unwrap().reported.is_empty());
    }

    /// Our custom fields' values are reported when the tenant's keys are given: a job title
    /// or pronouns edited in Pipedrive can be told from our write that overwrote it.
    #[test]
    fn a_change_of_our_custom_fields_is_reported_with_the_tenant_s_keys() {
        let body = json!({
            "meta": {"action": "change", "entity": "person", "company_id": "8087566",
                     "entity_id": "8", "timestamp": "2025-06-02T10:18:35.616Z", "version": "2.0",
                     "change_source": "app", "user_id": "7"},
            "data": {"id": 8, "first_name": "Grace", "last_name": "Hopper", "emails": [],
                     "custom_fields": {
                        "aaa": {"type": "varchar", "value": "Admiral"},
                        "ppp": {"type": "varchar", "value": "she/her"}}},
            "previous": {"custom_fields": {"aaa": {"type": "varchar", "value": "Captain"}}}
        });
        let h = PipedriveWebhook::parse(body.to_string().as_bytes()).unwrap();
        assert!(
            h.to_change(&t()).unwrap().reported.is_empty(),
            "keys unknown"
        );
        let slots = Slots {
            pronouns: Some("ppp"),
            job_title: Some("aaa"),
        };
        let c = h.to_change_with(&t(), slots).unwrap();
        assert_eq!(
            c.reported,
            vec![Reported::set(
                Field::JobTitle,
                Some("Admiral".into()),
                c.occurred_at
            )],
            "only what previous names"
        );
    }

    /// Our own write comes back as its echo: what the fields it changed held just before it
    /// (`data` with `previous` laid over it), when it landed (`data.update_time`).
    #[test]
    fn our_own_write_becomes_its_echo_with_the_values_it_replaced() {
        let body = json!({
            "meta": {"action": "change", "entity": "person", "entity_id": "8", "company_id": "5",
                     "change_source": "api", "user_id": "12415231", "version": "2.0",
                     "timestamp": "2026-01-05T09:00:02.400Z"},
            "data": {"id": 8, "first_name": "Anna", "last_name": "Lee", "name": "Anna Lee",
                     "update_time": "2026-01-05T09:00:02Z",
                     "emails": [{"value": "ann@x.io", "primary": true, "label": "work"}],
                     "custom_fields": {"aaa": {"type": "varchar", "value": "Captain"},
                                       "bbb": {"type": "varchar", "value": "she/her"}}},
            "previous": {"first_name": "Annie", "name": "Annie Lee",
                         "custom_fields": {"aaa": {"type": "varchar", "value": "Mate"}}}
        });
        let hook = PipedriveWebhook::parse(body.to_string().as_bytes()).unwrap();
        let slots = Slots {
            pronouns: Some("bbb"),
            job_title: Some("aaa"),
        };
        let echo = hook.trigger(&t(), slots, Some(12415231)).unwrap();
        assert_eq!(echo.kind, ChangeKind::Echo);
        assert_eq!(echo.record_id, "8");
        let landed = "2026-01-05T09:00:02Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(echo.occurred_at, landed);
        let mut reported: Vec<(Field, Option<&str>)> = echo
            .reported
            .iter()
            .map(|r| (r.field, r.value.as_deref()))
            .collect();
        reported.sort();
        assert_eq!(
            reported,
            vec![
                (Field::FirstName, Some("Annie")),
                (Field::JobTitle, Some("Mate"))
            ]
        );
        assert!(
            echo.reported
                .iter()
                .all(|r| r.at == landed
                    && r.replaced_by.as_ref().is_some_and(|b| b.landed == landed))
        );
        let first = echo
            .reported
            .iter()
            .find(|r| r.field == Field::FirstName)
            .unwrap();
        assert_eq!(
            first.replaced_by.as_ref().unwrap().written.as_deref(),
            Some("Anna")
        );
        // A user's change is a trigger with the values it set, as before.
        let user = hook.trigger(&t(), slots, Some(1)).unwrap();
        assert_eq!(user.kind, ChangeKind::Upsert);
        // An echo that names none of our fields, or a create of ours, is nothing to check.
        let mut other = body.clone();
        other["previous"] = json!({"label_ids": [1]});
        let other = PipedriveWebhook::parse(other.to_string().as_bytes()).unwrap();
        assert!(other.trigger(&t(), slots, Some(12415231)).is_none());
        let mut created = body;
        created["meta"]["action"] = json!("create");
        created["previous"] = Value::Null;
        let created = PipedriveWebhook::parse(created.to_string().as_bytes()).unwrap();
        assert!(created.trigger(&t(), slots, Some(12415231)).is_none());
    }

    #[test]
    fn own_writes_are_api_changes_by_our_user() {
        let h = PipedriveWebhook::parse(&payload(json!({}))).unwrap();
        assert!(h.is_own_write(Some(12415231)));
        assert!(!h.is_own_write(Some(1)));
        assert!(!h.is_own_write(None));
        let ui = PipedriveWebhook::parse(&payload(json!({"change_source": "app"}))).unwrap();
        assert!(!ui.is_own_write(Some(12415231)));
    }

    #[test]
    fn merge_pair_maps_to_one_rekey_whatever_the_order() {
        let gone = PipedriveWebhook::parse(&payload(
            json!({"action": "delete", "entity_id": "9", "merged_to_id": "8"}),
        ))
        .unwrap();
        let survivor = PipedriveWebhook::parse(&payload(
            json!({"action": "change", "entity_id": "8", "merged_from_id": "9"}),
        ))
        .unwrap();
        let expected = ChangeKind::Merge {
            merged_ids: vec!["9".into()],
        };
        for h in [gone, survivor] {
            let c = h.to_change(&t()).unwrap();
            assert_eq!(c.record_id, "8");
            assert_eq!(c.kind, expected);
        }
    }

    #[test]
    fn deletes_creates_and_other_entities() {
        let del = PipedriveWebhook::parse(&payload(json!({"action": "delete", "entity_id": 12})))
            .unwrap();
        assert_eq!(del.to_change(&t()).unwrap().kind, ChangeKind::Delete);
        let create = PipedriveWebhook::parse(&payload(
            json!({"action": "create", "timestamp": 1669304389}),
        ))
        .unwrap();
        let c = create.to_change(&t()).unwrap();
        assert_eq!(c.kind, ChangeKind::Upsert);
        assert_eq!(c.occurred_at.timestamp(), 1669304389);
        let deal = PipedriveWebhook::parse(&payload(json!({"entity": "deal"}))).unwrap();
        assert!(deal.to_change(&t()).is_none());
        let odd = PipedriveWebhook::parse(&payload(json!({"entity_id": "x"}))).unwrap();
        assert!(odd.to_change(&t()).is_none());
    }

    #[test]
    fn malformed_and_unsupported_payloads_are_rejected() {
        assert!(matches!(
            PipedriveWebhook::parse(b"{\"meta\": "),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(
            PipedriveWebhook::parse(br#"{"meta": {"action": "change"}}"#),
            Err(PayloadError::Malformed(_))
        ));
        assert_eq!(
            PipedriveWebhook::parse(&payload(json!({"version": "1.0"}))).unwrap_err(),
            PayloadError::Version("1.0".into())
        );
        assert_eq!(
            PipedriveWebhook::parse(&payload(json!({"company_id": "acme"}))).unwrap_err(),
            PayloadError::Company
        );
    }

    #[test]
    fn events_without_id_still_get_a_stable_key() {
        let a = PipedriveWebhook::parse(&payload(json!({"id": null}))).unwrap();
        let b = PipedriveWebhook::parse(&payload(json!({"id": null, "attempt": 2}))).unwrap();
        assert_eq!(a.dedupe_key(), b.dedupe_key(), "retries share the key");
        let c = PipedriveWebhook::parse(&payload(json!({"id": null, "entity_id": "9"}))).unwrap();
        assert_ne!(a.dedupe_key(), c.dedupe_key());
    }
}
