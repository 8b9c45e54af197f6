//! In-memory state of the simulated Pipedrive company and the operations on it.
//! Every write returns the webhook events it causes; the caller hands them to the dispatcher.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, SubsecRound, Utc};
use serde_json::{Value, json};

use super::changelog::{self, Change};
use super::model::{self, CustomField, FieldOption, Mode, Person};
use super::webhooks::PersonEvent;
use super::{PipedriveStats, RequestRecord, WebhookDeliveryRecord};

/// Who made a change: the API user (`change_source: api`) or a user in the web app (`app`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Actor {
    pub user_id: u64,
    pub source: &'static str,
}

/// A registered webhook (`POST /api/v1/webhooks`, or the one from the config).
#[derive(Clone, Debug)]
pub(crate) struct Webhook {
    pub id: u64,
    pub owner_id: u64,
    pub user_id: u64,
    pub event_action: String,
    pub event_object: String,
    pub subscription_url: String,
    pub version: String,
    pub add_time: DateTime<Utc>,
    pub kind: &'static str,
    pub http_auth_user: Option<String>,
    pub http_auth_password: Option<String>,
    pub name: String,
    pub last_delivery_time: Option<DateTime<Utc>>,
    pub last_http_status: Option<u16>,
}

impl Webhook {
    pub fn to_json(&self, company_id: u64) -> Value {
        json!({
            "id": self.id,
            "company_id": company_id,
            "owner_id": self.owner_id,
            "user_id": self.user_id,
            "event_action": self.event_action,
            "event_object": self.event_object,
            "subscription_url": self.subscription_url,
            "version": self.version,
            "is_active": 1,
            "add_time": self.add_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "remove_time": null,
            "type": self.kind,
            "http_auth_user": self.http_auth_user,
            "http_auth_password": self.http_auth_password,
            "remove_reason": null,
            "last_delivery_time": self.last_delivery_time
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "last_http_status": self.last_http_status,
            "admin_id": self.owner_id,
            "name": self.name,
        })
    }

    pub fn matches(&self, action: &str, object: &str) -> bool {
        (self.event_action == "*" || self.event_action == action)
            && (self.event_object == "*" || self.event_object == object)
    }
}

/// Rate-limit settings that can change at run time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub burst: Option<u32>,
    pub oauth_burst: Option<u32>,
    pub search_burst: Option<u32>,
    pub daily_budget: Option<u64>,
    /// Whether answers carry `x-daily-ratelimit-token-limit`/`-remaining` (not in Pipedrive's
    /// docs: third parties report them, and report them missing at times).
    pub token_headers: bool,
}

/// Days after which a soft-deleted person is purged.
const PURGE_AFTER_DAYS: i64 = 30;

pub(crate) struct State {
    pub persons: BTreeMap<u64, Person>,
    pub next_person_id: u64,
    pub customs: Vec<CustomField>,
    pub next_option_id: u64,
    pub webhooks: BTreeMap<u64, Webhook>,
    pub next_webhook_id: u64,
    pub clock_offset: Duration,
    /// Where the time comes from (the offset is added to it).
    pub clock: crate::SimClock,
    /// How long a person's write takes to show in search, in ms (0: at once).
    pub search_lag_ms: u64,
    /// What search sees of each person: its versions, each from when it is indexed; the
    /// last one due is current (none due: not found yet).
    pub search_index: BTreeMap<u64, VecDeque<(DateTime<Utc>, Person)>>,
    /// Writes indexed so far: varies each write's lag.
    pub index_writes: u64,
    /// Webhook payloads kept instead of delivered (`None`: delivered).
    pub captured_webhooks: Option<Vec<Value>>,
    pub outage: bool,
    /// API requests still to answer with a bare 429 (no rate-limit headers).
    pub bare_429s: u32,
    pub webhooks_enabled: bool,
    pub limits: Limits,
    pub windows: HashMap<String, VecDeque<Instant>>,
    pub search_windows: HashMap<String, VecDeque<Instant>>,
    pub day: NaiveDate,
    pub daily_tokens: u64,
    pub daily_writes: HashMap<String, u64>,
    pub stats: PipedriveStats,
    pub request_log: Vec<RequestRecord>,
    pub webhook_log: Vec<WebhookDeliveryRecord>,
    /// Each person's field changes, oldest first (`GET /api/v1/persons/{id}/changelog`).
    pub changelog: BTreeMap<u64, Vec<Change>>,
}

pub(crate) type OpResult<T> = Result<(T, Vec<PersonEvent>), OpError>;

/// Why an operation on the store failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OpError {
    NotFound,
    Invalid(String),
}

impl State {
    pub fn new(limits: Limits) -> Self {
        let mut s = Self {
            persons: BTreeMap::new(),
            next_person_id: 1,
            customs: Vec::new(),
            next_option_id: 1,
            webhooks: BTreeMap::new(),
            next_webhook_id: 1,
            clock_offset: Duration::zero(),
            clock: crate::SimClock::default(),
            search_lag_ms: 0,
            search_index: BTreeMap::new(),
            index_writes: 0,
            captured_webhooks: None,
            outage: false,
            bare_429s: 0,
            webhooks_enabled: true,
            limits,
            windows: HashMap::new(),
            search_windows: HashMap::new(),
            day: Utc::now().date_naive(),
            daily_tokens: 0,
            daily_writes: HashMap::new(),
            stats: PipedriveStats::default(),
            request_log: Vec::new(),
            webhook_log: Vec::new(),
            changelog: BTreeMap::new(),
        };
        s.day = s.now().date_naive();
        s
    }

    /// Simulated wall clock (real time plus the offset set through `advance_clock`).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now() + self.clock_offset
    }

    /// Person `id` was written: search shows this version once the index lag has passed.
    pub fn reindex(&mut self, id: u64) {
        if self.search_lag_ms == 0 {
            return;
        }
        let Some(p) = self.persons.get(&id).cloned() else {
            return;
        };
        self.index_writes += 1;
        let quarters = 1 + (self.index_writes % 7) as i64;
        let now = self.now();
        let due = now + Duration::milliseconds(self.search_lag_ms as i64 * quarters / 4);
        let versions = self.search_index.entry(id).or_default();
        // Versions older than the newest one already due are never shown again.
        while versions.len() > 1 && versions[1].0 <= now {
            versions.pop_front();
        }
        versions.push_back((due, p));
    }

    /// Person `p` as search sees it now: its latest indexed version (`None`: not indexed yet).
    pub fn searchable<'a>(&'a self, p: &'a Person) -> Option<&'a Person> {
        if self.search_lag_ms == 0 {
            return Some(p);
        }
        let now = self.now();
        let Some(versions) = self.search_index.get(&p.id) else {
            // Written before the lag was switched on.
            return Some(p);
        };
        // The version written last among those indexed (a later write may be indexed sooner).
        versions
            .iter()
            .rev()
            .find(|(due, _)| *due <= now)
            .map(|(_, v)| v)
    }

    /// The simulated clock truncated to whole seconds (v2 timestamps have no fractions).
    pub fn now_secs(&self) -> DateTime<Utc> {
        self.now().trunc_subsecs(0)
    }

    /// Resets the daily counters when the simulated UTC date changed.
    pub fn roll_day(&mut self) {
        let today = self.now().date_naive();
        if today != self.day {
            self.reset_day();
        }
    }

    pub fn reset_day(&mut self) {
        self.day = self.now().date_naive();
        self.daily_tokens = 0;
        self.daily_writes.clear();
    }

    /// Drops soft-deleted persons older than 30 days.
    pub fn purge(&mut self) {
        let cutoff = self.now() - Duration::days(PURGE_AFTER_DAYS);
        self.persons
            .retain(|_, p| p.deleted_at.is_none_or(|d| d > cutoff));
    }

    /// A write changed person `old` into `new`: its changelog grows.
    fn note_changes(&mut self, old: &Person, new: &Person, actor: Actor) {
        let changes = changelog::diff(old, new, actor, self.now());
        if !changes.is_empty() {
            self.changelog.entry(new.id).or_default().extend(changes);
        }
    }

    pub fn live(&self, id: u64) -> Option<&Person> {
        self.persons.get(&id).filter(|p| !p.is_deleted())
    }

    fn permitted(&self, p: &Person, actor: Actor) -> Vec<u64> {
        let mut ids = vec![p.owner_id, actor.user_id];
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn event(
        &self,
        action: &'static str,
        p: &Person,
        actor: Actor,
        data: Option<Value>,
        previous: Option<Value>,
        v1: (Option<Value>, Option<Value>),
    ) -> PersonEvent {
        PersonEvent {
            action,
            entity_id: p.id,
            actor,
            data,
            previous,
            v1_current: v1.0,
            v1_previous: v1.1,
            merged_to_id: None,
            merged_from_id: None,
            permitted_user_ids: self.permitted(p, actor),
            timestamp: self.now(),
            id: uuid::Uuid::new_v4(),
            correlation_id: uuid::Uuid::new_v4(),
        }
    }

    pub fn create_person(
        &mut self,
        body: &Value,
        actor: Actor,
        contact_sync: bool,
        company_id: u64,
    ) -> OpResult<Person> {
        let input = model::parse_person_input(body, Mode::Create, &self.customs, contact_sync)
            .map_err(OpError::Invalid)?;
        let id = self.next_person_id;
        let person = model::new_person(id, input, actor.user_id, self.now_secs())
            .map_err(OpError::Invalid)?;
        self.next_person_id += 1;
        self.persons.insert(id, person.clone());
        let data = model::render_webhook_v2(&person, &self.customs);
        let v1 = model::render_v1(&person, &self.customs, company_id);
        let ev = self.event("create", &person, actor, Some(data), None, (Some(v1), None));
        Ok((person, vec![ev]))
    }

    pub fn update_person(
        &mut self,
        id: u64,
        body: &Value,
        actor: Actor,
        contact_sync: bool,
        company_id: u64,
    ) -> OpResult<Person> {
        let input = model::parse_person_input(body, Mode::Update, &self.customs, contact_sync)
            .map_err(OpError::Invalid)?;
        let now = self.now_secs();
        let old = self.live(id).cloned().ok_or(OpError::NotFound)?;
        let mut p = old.clone();
        let changed = model::apply_update(&mut p, input).map_err(OpError::Invalid)?;
        if !changed {
            // Nothing changed: no new update_time and no webhook.
            return Ok((p, Vec::new()));
        }
        p.update_time = now;
        self.persons.insert(id, p.clone());
        self.note_changes(&old, &p, actor);
        let before = model::render_webhook_v2(&old, &self.customs);
        let after = model::render_webhook_v2(&p, &self.customs);
        let previous = model::diff_previous(&before, &after);
        let v1 = (
            Some(model::render_v1(&p, &self.customs, company_id)),
            Some(model::render_v1(&old, &self.customs, company_id)),
        );
        let ev = self.event("change", &p, actor, Some(after), Some(previous), v1);
        Ok((p, vec![ev]))
    }

    pub fn delete_person(&mut self, id: u64, actor: Actor, company_id: u64) -> OpResult<u64> {
        let now = self.now_secs();
        let p = self
            .persons
            .get_mut(&id)
            .filter(|p| !p.is_deleted())
            .ok_or(OpError::NotFound)?;
        let old = p.clone();
        p.deleted_at = Some(now);
        // "If the person has is_deleted: true, update_time is the delete_time."
        p.update_time = now;
        let previous = model::render_webhook_v2(&old, &self.customs);
        let v1 = (
            None,
            Some(model::render_v1(&old, &self.customs, company_id)),
        );
        let ev = self.event("delete", &old, actor, None, Some(previous), v1);
        Ok((id, vec![ev]))
    }

    /// Merges person `id` into `merge_with_id` (the survivor). Returns the survivor.
    pub fn merge_persons(
        &mut self,
        id: u64,
        merge_with_id: u64,
        actor: Actor,
        company_id: u64,
    ) -> OpResult<Person> {
        if id == merge_with_id {
            return Err(OpError::Invalid(
                "Validation failed: merge_with_id: a person can not be merged with itself".into(),
            ));
        }
        let merged = self.live(id).cloned().ok_or(OpError::NotFound)?;
        let survivor_old = self.live(merge_with_id).cloned().ok_or(OpError::NotFound)?;
        let now = self.now_secs();
        let mut survivor = survivor_old.clone();
        model::merge_into(&mut survivor, &merged);
        survivor.update_time = now;
        self.persons.insert(merge_with_id, survivor.clone());
        self.note_changes(&survivor_old, &survivor, actor);
        if let Some(m) = self.persons.get_mut(&id) {
            m.deleted_at = Some(now);
            m.update_time = now;
            m.merged_into = Some(merge_with_id);
        }

        let gone_prev = model::render_webhook_v2(&merged, &self.customs);
        let v1_gone = (
            None,
            Some(model::render_v1(&merged, &self.customs, company_id)),
        );
        let mut delete_ev = self.event("delete", &merged, actor, None, Some(gone_prev), v1_gone);
        delete_ev.merged_to_id = Some(merge_with_id);

        let before = model::render_webhook_v2(&survivor_old, &self.customs);
        let after = model::render_webhook_v2(&survivor, &self.customs);
        let previous = model::diff_previous(&before, &after);
        let v1 = (
            Some(model::render_v1(&survivor, &self.customs, company_id)),
            Some(model::render_v1(&survivor_old, &self.customs, company_id)),
        );
        let mut change_ev = self.event("change", &survivor, actor, Some(after), Some(previous), v1);
        change_ev.merged_from_id = Some(id);
        Ok((survivor, vec![delete_ev, change_ev]))
    }

    /// Creates a custom person field from a `POST /api/v2/personFields` body.
    pub fn create_field(&mut self, body: &Value) -> Result<CustomField, String> {
        let obj = body
            .as_object()
            .ok_or("Validation failed: request body must be a JSON object")?;
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "field_name"
                    | "field_type"
                    | "options"
                    | "ui_visibility"
                    | "important_fields"
                    | "required_fields"
            ) {
                return Err(format!("Validation failed: '{k}' is not a valid property"));
            }
        }
        let name = match obj.get("field_name") {
            Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 255 => s.clone(),
            Some(Value::String(_)) => {
                return Err("Validation failed: field_name: must be 1-255 characters".into());
            }
            Some(_) => return Err("Validation failed: field_name: expected string".into()),
            None => return Err("Validation failed: field_name: required".into()),
        };
        let field_type = match obj.get("field_type") {
            Some(Value::String(s)) if model::CUSTOM_FIELD_TYPES.contains(&s.as_str()) => s.clone(),
            Some(_) => {
                return Err(format!(
                    "Validation failed: field_type: must be one of {}",
                    model::CUSTOM_FIELD_TYPES.join(", ")
                ));
            }
            None => return Err("Validation failed: field_type: required".into()),
        };
        let needs_options = field_type == "enum" || field_type == "set";
        let mut options = Vec::new();
        match obj.get("options") {
            None | Some(Value::Null) if needs_options => {
                return Err(
                    "Validation failed: options: required for enum and set field types".into(),
                );
            }
            None | Some(Value::Null) => {}
            Some(_) if !needs_options => {
                return Err(
                    "Validation failed: options: only allowed for enum and set field types".into(),
                );
            }
            Some(Value::Array(arr)) if !arr.is_empty() => {
                let now = self.now_secs();
                for (i, o) in arr.iter().enumerate() {
                    let label = o
                        .get("label")
                        .and_then(Value::as_str)
                        .filter(|l| !l.trim().is_empty())
                        .ok_or_else(|| {
                            format!("Validation failed: options[{i}].label: required")
                        })?;
                    options.push(FieldOption {
                        id: self.next_option_id,
                        label: label.to_string(),
                        add_time: now,
                    });
                    self.next_option_id += 1;
                }
            }
            Some(_) => {
                return Err("Validation failed: options: expected a non-empty array".into());
            }
        }
        let ui = json!({
            "add_visible_flag": false,
            "details_visible_flag": true,
            "show_in_add_deal_dialog": {"show": false, "order": null},
        });
        let ui_visibility = merge_obj(ui, obj.get("ui_visibility"), "ui_visibility")?;
        let important_fields = merge_obj(
            json!({"enabled": false, "stage_ids": []}),
            obj.get("important_fields"),
            "important_fields",
        )?;
        let required_fields = merge_obj(
            json!({"enabled": false}),
            obj.get("required_fields"),
            "required_fields",
        )?;
        let field = CustomField {
            key: random_field_key(),
            name,
            field_type,
            options,
            ui_visibility,
            important_fields,
            required_fields,
        };
        self.customs.push(field.clone());
        Ok(field)
    }

    /// Deletes a custom field and its values.
    pub fn delete_field(&mut self, key: &str) -> Option<CustomField> {
        let pos = self.customs.iter().position(|f| f.key == key)?;
        let f = self.customs.remove(pos);
        for p in self.persons.values_mut() {
            p.custom_fields.remove(key);
        }
        Some(f)
    }
}

fn merge_obj(mut base: Value, patch: Option<&Value>, name: &str) -> Result<Value, String> {
    match patch {
        None | Some(Value::Null) => Ok(base),
        Some(Value::Object(o)) => {
            for (k, v) in o {
                base[k.as_str()] = v.clone();
            }
            Ok(base)
        }
        Some(_) => Err(format!("Validation failed: {name}: expected object")),
    }
}

/// A random 40-hex-character custom field key, like Pipedrive's.
pub(crate) fn random_field_key() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{}", &b[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: Actor = Actor {
        user_id: 9001,
        source: "api",
    };

    fn state() -> State {
        State::new(Limits {
            burst: None,
            oauth_burst: None,
            search_burst: None,
            daily_budget: None,
            token_headers: true,
        })
    }

    #[test]
    fn field_keys_are_40_hex() {
        let k = random_field_key();
        assert_eq!(k.len(), 40);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(k, random_field_key());
    }

    #[test]
    fn create_field_validates_body() {
        let mut s = state();
        assert!(s.create_field(&json!({"field_type": "varchar"})).is_err());
        assert!(
            s.create_field(&json!({"field_name": "X", "field_type": "bogus"}))
                .is_err()
        );
        assert!(
            s.create_field(&json!({"field_name": "X", "field_type": "enum"}))
                .is_err()
        );
        assert!(
            s.create_field(&json!({"name": "X", "field_type": "varchar"}))
                .is_err()
        );
        let f = s
            .create_field(&json!({"field_name": "Tier", "field_type": "enum",
                                  "options": [{"label": "Gold"}, {"label": "Silver"}]}))
            .unwrap();
        assert_eq!(f.options.len(), 2);
        assert_ne!(f.options[0].id, f.options[1].id);
    }

    #[test]
    fn update_without_change_emits_nothing() {
        let mut s = state();
        let (p, evs) = s
            .create_person(&json!({"name": "A B"}), API, false, 1)
            .unwrap();
        assert_eq!(evs.len(), 1);
        let (_, evs) = s
            .update_person(p.id, &json!({"name": "A B"}), API, false, 1)
            .unwrap();
        assert!(evs.is_empty());
        let (_, evs) = s
            .update_person(p.id, &json!({"name": "A C"}), API, false, 1)
            .unwrap();
        assert_eq!(
            evs[0].previous,
            Some(json!({"name": "A B", "last_name": "B"}))
        );
    }

    #[test]
    fn deleted_persons_are_purged_after_30_days() {
        let mut s = state();
        let (p, _) = s
            .create_person(&json!({"name": "A"}), API, false, 1)
            .unwrap();
        s.delete_person(p.id, API, 1).unwrap();
        assert!(s.live(p.id).is_none());
        assert_eq!(
            s.delete_person(p.id, API, 1).unwrap_err(),
            OpError::NotFound
        );
        s.clock_offset = Duration::days(29);
        s.purge();
        assert!(s.persons.contains_key(&p.id));
        s.clock_offset = Duration::days(31);
        s.purge();
        assert!(!s.persons.contains_key(&p.id));
    }

    #[test]
    fn merge_emits_delete_then_change() {
        let mut s = state();
        let (a, _) = s
            .create_person(&json!({"name": "A"}), API, false, 1)
            .unwrap();
        let (b, _) = s
            .create_person(
                &json!({"name": "B", "emails": [{"value": "b@x.io"}]}),
                API,
                false,
                1,
            )
            .unwrap();
        let (surv, evs) = s.merge_persons(b.id, a.id, API, 1).unwrap();
        assert_eq!(surv.id, a.id);
        assert_eq!(surv.emails[0].value, "b@x.io");
        assert_eq!(evs[0].action, "delete");
        assert_eq!(evs[0].merged_to_id, Some(a.id));
        assert_eq!(evs[1].action, "change");
        assert_eq!(evs[1].merged_from_id, Some(b.id));
        assert!(s.live(b.id).is_none());
        assert_eq!(s.persons[&b.id].merged_into, Some(a.id));
        assert!(s.merge_persons(a.id, a.id, API, 1).is_err());
        assert_eq!(
            s.merge_persons(b.id, a.id, API, 1).unwrap_err(),
            OpError::NotFound
        );
    }
}
