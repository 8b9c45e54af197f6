//! Webhook delivery: builds v2 (or v1) payloads and POSTs them with HTTP Basic auth, retrying
//! after the configured delays on a non-2xx answer or a timeout.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::store::{Actor, Webhook};
use super::{Core, PipedriveConfig, WebhookDeliveryRecord};

/// A change to a person, as webhooks report it.
#[derive(Clone, Debug)]
pub(crate) struct PersonEvent {
    /// `create`, `change` or `delete`.
    pub action: &'static str,
    pub entity_id: u64,
    pub actor: Actor,
    /// Webhooks-v2 `data` (current state; `None` for delete).
    pub data: Option<Value>,
    /// Webhooks-v2 `previous` (changed fields for change, last state for delete).
    pub previous: Option<Value>,
    pub v1_current: Option<Value>,
    pub v1_previous: Option<Value>,
    pub merged_to_id: Option<u64>,
    pub merged_from_id: Option<u64>,
    pub permitted_user_ids: Vec<u64>,
    pub timestamp: DateTime<Utc>,
    pub id: uuid::Uuid,
    pub correlation_id: uuid::Uuid,
}

/// Where one event goes.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub webhook_id: u64,
    pub owner_id: u64,
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub version: String,
    pub kind: &'static str,
}

impl Target {
    pub fn from_webhook(w: &Webhook) -> Self {
        Self {
            webhook_id: w.id,
            owner_id: w.owner_id,
            url: w.subscription_url.clone(),
            user: w.http_auth_user.clone(),
            password: w.http_auth_password.clone(),
            version: w.version.clone(),
            kind: w.kind,
        }
    }
}

/// One event for one webhook.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub event: Arc<PersonEvent>,
    pub target: Target,
}

impl Target {
    /// The target of a captured payload: a general v2 webhook on everything.
    pub fn captured(owner_id: u64) -> Self {
        Self {
            webhook_id: 0,
            owner_id,
            url: String::new(),
            user: None,
            password: None,
            version: "2.0".into(),
            kind: "general",
        }
    }
}

pub(crate) type JobSender = mpsc::UnboundedSender<Job>;

/// Starts the dispatcher task: first attempts are made in event order; a failed job gets its
/// own retry task so one slow or failing receiver does not hold back later retries.
pub(crate) fn spawn_dispatcher(core: Arc<Core>, handle: &tokio::runtime::Handle) -> JobSender {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    handle.spawn(async move {
        while let Some(job) = rx.recv().await {
            if attempt(&core, &job, 1).await {
                core.lock().stats.webhook_jobs_pending -= 1;
                continue;
            }
            let core = core.clone();
            tokio::spawn(retry_chain(core, job));
        }
    });
    tx
}

async fn retry_chain(core: Arc<Core>, job: Job) {
    let delays = core.cfg.webhook_retry_delays_ms.clone();
    for (i, delay) in delays.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        if attempt(&core, &job, i as u32 + 2).await {
            core.lock().stats.webhook_jobs_pending -= 1;
            return;
        }
    }
    let mut st = core.lock();
    st.stats.webhook_gave_up += 1;
    st.stats.webhook_jobs_pending -= 1;
}

/// Makes one delivery attempt and records it. Returns whether it succeeded (2xx).
async fn attempt(core: &Core, job: &Job, attempt: u32) -> bool {
    let payload = build_payload(&core.cfg, job, attempt);
    let mut req = core
        .http
        .post(&job.target.url)
        .timeout(Duration::from_millis(core.cfg.webhook_timeout_ms))
        .json(&payload);
    if let Some(user) = &job.target.user {
        req = req.basic_auth(user, job.target.password.as_deref());
    }
    let (ok, status, error) = match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            (status.is_success(), Some(status.as_u16()), None)
        }
        Err(err) => {
            let msg = if err.is_timeout() {
                "timeout".to_string()
            } else {
                err.to_string()
            };
            (false, None, Some(msg))
        }
    };
    let mut st = core.lock();
    let now = st.now();
    st.stats.webhook_attempts += 1;
    if ok {
        st.stats.webhook_deliveries += 1;
    } else {
        st.stats.webhook_failures += 1;
    }
    if let Some(w) = st.webhooks.get_mut(&job.target.webhook_id) {
        w.last_delivery_time = Some(now);
        w.last_http_status = status;
    }
    let record = WebhookDeliveryRecord {
        webhook_id: job.target.webhook_id,
        url: job.target.url.clone(),
        event_id: job.event.id.to_string(),
        action: job.event.action.to_string(),
        entity_id: job.event.entity_id,
        attempt,
        ok,
        status,
        error,
        payload,
        time: now.to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    super::push_bounded(&mut st.webhook_log, record);
    if !ok {
        tracing::debug!(url = %job.target.url, attempt, ?status, "pipedrive sim webhook delivery failed");
    }
    ok
}

/// The body POSTed to the subscription URL for this attempt (1 = first attempt).
pub(crate) fn build_payload(cfg: &PipedriveConfig, job: &Job, attempt: u32) -> Value {
    if job.target.version == "1.0" {
        build_v1(cfg, job, attempt)
    } else {
        build_v2(cfg, job, attempt)
    }
}

fn host(cfg: &PipedriveConfig) -> String {
    format!("{}.pipedrive.com", cfg.company_domain)
}

fn build_v2(cfg: &PipedriveConfig, job: &Job, attempt: u32) -> Value {
    let ev = &job.event;
    let mut meta = json!({
        "action": ev.action,
        "entity": "person",
        "company_id": cfg.company_id.to_string(),
        "correlation_id": ev.correlation_id.to_string(),
        "entity_id": ev.entity_id.to_string(),
        "id": ev.id.to_string(),
        "is_bulk_edit": false,
        "timestamp": ev.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
        "type": job.target.kind,
        "user_id": ev.actor.user_id.to_string(),
        "version": "2.0",
        "webhook_id": job.target.webhook_id.to_string(),
        "webhook_owner_id": job.target.owner_id.to_string(),
        "change_source": ev.actor.source,
        "attempt": attempt,
        "host": host(cfg),
        "permitted_user_ids": ev.permitted_user_ids.iter().map(u64::to_string).collect::<Vec<_>>(),
    });
    if let Some(id) = ev.merged_to_id {
        meta["merged_to_id"] = json!(id.to_string());
    }
    if let Some(id) = ev.merged_from_id {
        meta["merged_from_id"] = json!(id.to_string());
    }
    json!({
        "meta": meta,
        "data": ev.data,
        "previous": ev.previous,
    })
}

fn build_v1(cfg: &PipedriveConfig, job: &Job, attempt: u32) -> Value {
    let ev = &job.event;
    let action = match (ev.action, ev.merged_from_id) {
        ("create", _) => "added",
        ("change", Some(_)) => "merged",
        ("change", None) => "updated",
        _ => "deleted",
    };
    let filters = json!({"current": [], "previous": []});
    json!({
        "v": 1,
        "matches_filters": filters,
        "meta": {
            "v": 1,
            "action": action,
            "object": "person",
            "change_source": ev.actor.source,
            "id": ev.entity_id,
            "company_id": cfg.company_id,
            "user_id": ev.actor.user_id,
            "host": host(cfg),
            "timestamp": ev.timestamp.timestamp(),
            "timestamp_micro": ev.timestamp.timestamp_micros(),
            "permitted_user_ids": ev.permitted_user_ids,
            "trans_pending": false,
            "is_bulk_update": false,
            "pipedrive_service_name": false,
            "matches_filters": filters,
            "webhook_id": job.target.webhook_id,
        },
        "retry": attempt.saturating_sub(1),
        "current": ev.v1_current,
        "previous": ev.v1_previous,
        "event": format!("{action}.person"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(version: &str, merged_from: Option<u64>) -> Job {
        Job {
            event: Arc::new(PersonEvent {
                action: "change",
                entity_id: 8,
                actor: Actor {
                    user_id: 9002,
                    source: "app",
                },
                data: Some(json!({"id": 8})),
                previous: Some(json!({"name": "Old"})),
                v1_current: Some(json!({"id": 8})),
                v1_previous: Some(json!({"id": 8, "name": "Old"})),
                merged_to_id: None,
                merged_from_id: merged_from,
                permitted_user_ids: vec![9001, 9002],
                timestamp: Utc::now(),
                id: uuid::Uuid::new_v4(),
                correlation_id: uuid::Uuid::new_v4(),
            }),
            target: Target {
                webhook_id: 3,
                owner_id: 9001,
                url: "http://127.0.0.1:1/hook".into(),
                user: None,
                password: None,
                version: version.into(),
                kind: "general",
            },
        }
    }

    #[test]
    fn v2_meta_uses_string_ids() {
        let cfg = PipedriveConfig::default();
        let p = build_payload(&cfg, &job("2.0", Some(9)), 2);
        let meta = &p["meta"];
        assert_eq!(meta["entity_id"], json!("8"));
        assert_eq!(meta["company_id"], json!(cfg.company_id.to_string()));
        assert_eq!(meta["user_id"], json!("9002"));
        assert_eq!(meta["change_source"], json!("app"));
        assert_eq!(meta["attempt"], json!(2));
        assert_eq!(meta["version"], json!("2.0"));
        assert_eq!(meta["merged_from_id"], json!("9"));
        assert!(meta.get("merged_to_id").is_none());
        assert_eq!(meta["permitted_user_ids"], json!(["9001", "9002"]));
        assert_eq!(p["previous"], json!({"name": "Old"}));
    }

    #[test]
    fn v1_payload_uses_v1_names() {
        let cfg = PipedriveConfig::default();
        let p = build_payload(&cfg, &job("1.0", None), 1);
        assert_eq!(p["event"], json!("updated.person"));
        assert_eq!(p["meta"]["id"], json!(8));
        assert_eq!(p["retry"], json!(0));
        let p = build_payload(&cfg, &job("1.0", Some(9)), 1);
        assert_eq!(p["event"], json!("merged.person"));
    }
}
