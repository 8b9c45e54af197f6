//! Every sample event in `events/` runs through the handler of its Lambda function, with the
//! expected status or response. A new file without an expectation here fails the test.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use chrono::Utc;
use serde_json::Value;
use shared::adapters::embedded::EmbeddedStore;
use shared::crm::memory::MemoryCrm;
use shared::http::{AppState, HttpSettings};
use shared::ports::{ContactStore, JobQueue};
use shared::sync::SyncService;
use shared::tenant::{TenantConfig, Tenants};
use shared::{Contact, ContactFields, CrmAccount, Provider, TenantId, WebhookAuth};
use tower::ServiceExt;

struct Deps {
    store: EmbeddedStore,
    state: AppState,
}

fn deps() -> Deps {
    let store = EmbeddedStore::in_memory().unwrap();
    let mut tenant = TenantConfig::new("acme");
    tenant.api_key = Some("events-api-key".into());
    tenant.app_webhook_secret = Some("events-app-secret".into());
    tenant.accounts = vec![
        CrmAccount {
            provider: Provider::HubSpot,
            account_id: "62515".into(),
            our_writer: Some("1234567".into()),
            webhook_auth: Some(WebhookAuth::Signature {
                secret: "events-hubspot-secret".into(),
            }),
        },
        CrmAccount {
            provider: Provider::Pipedrive,
            account_id: "7001".into(),
            our_writer: Some("9001".into()),
            webhook_auth: Some(WebhookAuth::Basic {
                user: "pipedrive-hook".into(),
                password: "events-pipedrive-password".into(),
            }),
        },
    ];
    let mut tenants = Tenants::new();
    tenants.add(
        tenant,
        vec![
            Arc::new(MemoryCrm::new(Provider::HubSpot)),
            Arc::new(MemoryCrm::new(Provider::Pipedrive)),
        ],
    );
    let s = Arc::new(store.clone());
    let service = SyncService::new(s.clone(), s.clone(), s.clone(), Arc::new(tenants));
    Deps {
        state: AppState {
            service,
            queue: s,
            settings: Arc::new(HttpSettings::default()),
        },
        store,
    }
}

/// Runs an API Gateway HTTP API (v2) event through a function's router.
async fn http(router: axum::Router, raw: &str) -> (u16, Value) {
    let request = lambda_http::request::from_str(raw).expect("an API Gateway v2 event");
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_sample_event_runs_through_its_handler() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "events/ holds the samples");
    let mut results = BTreeMap::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let raw = std::fs::read_to_string(&path).unwrap();
        let d = deps();
        let tenant = TenantId::new("acme");
        let depth_before = d.store.depth(&TenantId::new("acme")).await.unwrap().jobs;
        match name.as_str() {
            "apigw-v2-webhook-hubspot.json" => {
                let (status, body) =
                    http(shared::http::webhook_router(d.state.clone()), &raw).await;
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(
                    body["accepted"], 1,
                    "creation + change of one contact coalesce"
                );
                assert_eq!(body["dropped"], 1, "our own INTEGRATION write is dropped");
                assert_eq!(
                    d.store.depth(&TenantId::new("acme")).await.unwrap().jobs,
                    depth_before + 1
                );
            }
            "apigw-v2-webhook-pipedrive.json" => {
                let (status, body) =
                    http(shared::http::webhook_router(d.state.clone()), &raw).await;
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(body["accepted"], 1, "{body}");
                assert_eq!(
                    d.store.depth(&TenantId::new("acme")).await.unwrap().jobs,
                    depth_before + 1
                );
            }
            "apigw-v2-webhook-app.json" => {
                let (status, body) =
                    http(shared::http::webhook_router(d.state.clone()), &raw).await;
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(body["accepted"], 2);
                let ada = d.store.get(&tenant, "app-1001").await.unwrap().unwrap();
                assert_eq!(ada.fields.pronouns.as_deref(), Some("she/her"));
                assert!(
                    d.store
                        .find_by_email(&tenant, "alan@example.com")
                        .await
                        .unwrap()
                        .is_some()
                );
                assert_eq!(
                    d.store.depth(&TenantId::new("acme")).await.unwrap().jobs,
                    depth_before + 2
                );
            }
            "apigw-v2-api-create-contact.json" => {
                let (status, body) = http(shared::http::api_router(d.state.clone()), &raw).await;
                assert_eq!(status, 201, "{name}: {body}");
                assert_eq!(body["email"], "katherine@example.com");
                assert_eq!(body["sync"]["badge"], "local_only");
            }
            "apigw-v2-api-list-contacts.json" => {
                for i in 0..3 {
                    d.store
                        .insert(&contact(&format!("c{i}"), &format!("p{i}@example.com")))
                        .await
                        .unwrap();
                }
                let (status, body) = http(shared::http::api_router(d.state.clone()), &raw).await;
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(body["items"].as_array().unwrap().len(), 3);
            }
            "apigw-v2-api-sync-status.json" => {
                let (status, body) = http(shared::http::api_router(d.state.clone()), &raw).await;
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(body["tenant"], "acme");
                assert_eq!(body["crms"].as_array().unwrap().len(), 2);
            }
            "apigw-v2-api-sync-now.json" => {
                let (status, body) = http(shared::http::api_router(d.state.clone()), &raw).await;
                assert_eq!(status, 202, "{name}: {body}");
                assert_eq!(
                    d.store.depth(&TenantId::new("acme")).await.unwrap().jobs,
                    depth_before + 1
                );
            }
            "apigw-v2-api-unauthorized.json" => {
                let (status, body) = http(shared::http::api_router(d.state.clone()), &raw).await;
                assert_eq!(status, 401, "{name}: {body}");
                assert_eq!(body["error"]["code"], "unauthorized");
            }
            "sqs-sync-batch.json" => {
                d.store
                    .insert(&contact("app-2001", "edsger@example.com"))
                    .await
                    .unwrap();
                let event: SqsEvent = serde_json::from_str(&raw).unwrap();
                // The invocation has its usual 30 s.
                let deadline = (Utc::now() + chrono::Duration::seconds(30)).timestamp_millis();
                let response = shared::lambda::handle_sqs_batch(
                    &d.state.service,
                    d.state.queue.as_ref(),
                    event,
                    Some(shared::lambda::job_deadline(deadline as u64)),
                )
                .await;
                assert_eq!(
                    serde_json::to_value(&response).unwrap(),
                    only_the_unreadable_message_fails(),
                    "only the unreadable message fails"
                );
                let links = d
                    .state
                    .service
                    .links
                    .links_for_contact(&tenant, "app-2001")
                    .await
                    .unwrap();
                assert_eq!(
                    links.len(),
                    2,
                    "the good message synced the contact to both CRMs"
                );
            }
            "eventbridge-schedule.json" => {
                let event: EventBridgeEvent = serde_json::from_str(&raw).unwrap();
                let in_secs = |s: i64| {
                    let ms = (Utc::now() + chrono::Duration::seconds(s)).timestamp_millis();
                    Some(shared::lambda::job_deadline(ms as u64))
                };
                let report = shared::lambda::handle_schedule(
                    &d.state.service,
                    d.state.queue.as_ref(),
                    event.clone(),
                    in_secs(60),
                )
                .await;
                assert_eq!(report.tenants, 1);
                assert_eq!(report.polls, 2, "both CRMs are polled");
                assert!(report.errors.is_empty(), "{report:?}");
                // A run with no time left leaves its polls to the next one.
                let late = shared::lambda::handle_schedule(
                    &d.state.service,
                    d.state.queue.as_ref(),
                    event,
                    in_secs(2),
                )
                .await;
                assert_eq!((late.tenants, late.polls), (1, 0), "{late:?}");
                assert_eq!(late.errors.len(), 2, "{late:?}");
            }
            other => panic!("events/{other} has no expectation in this test"),
        }
        results.insert(name, "ok");
    }
    println!("{results:#?}");
}

/// `events/sqs-sync-batch.json`: readable jobs and one unreadable message.
fn sqs_sync_batch() -> SqsEvent {
    let raw = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/sqs-sync-batch.json"),
    )
    .unwrap();
    serde_json::from_str(&raw).unwrap()
}

/// The batch response failing only the sample batch's unreadable message.
fn only_the_unreadable_message_fails() -> serde_json::Value {
    serde_json::json!({"batchItemFailures": [{"itemIdentifier": "059f36b4-87a3-44ab-83d2-661975830a7d"}]})
}

fn contact(id: &str, email: &str) -> Contact {
    let now = Utc::now();
    Contact {
        tenant: TenantId::new("acme"),
        id: id.into(),
        fields: ContactFields {
            email: Some(email.into()),
            ..Default::default()
        },
        version: 0,
        created_at: now,
        last_app_modified: now,
        deleted: false,
        synced: Default::default(),
    }
}

/// A job that meets a spent quota in the Lambda worker is re-queued with a delay, counts as
/// handled (not a batch item failure), and writes nothing.
#[tokio::test]
async fn a_spent_quota_defers_the_job_in_the_lambda_worker() {
    let d = deps();
    let tenant = TenantId::new("acme");
    d.store
        .insert(&contact("app-2001", "edsger@example.com"))
        .await
        .unwrap();
    let until = Utc::now() + chrono::Duration::hours(3);
    d.state
        .service
        .state
        .set_paused_until(&tenant, Provider::HubSpot, Some(until))
        .await
        .unwrap();
    let event = sqs_sync_batch();
    let before = d.store.depth(&tenant).await.unwrap().jobs;
    let response =
        shared::lambda::handle_sqs_batch(&d.state.service, d.state.queue.as_ref(), event, None)
            .await;
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        only_the_unreadable_message_fails(),
        "the deferred job is not a failure"
    );
    assert_eq!(
        d.store.depth(&tenant).await.unwrap().jobs,
        before + 1,
        "re-queued with a delay"
    );
    assert!(
        d.store.receive(10).await.unwrap().is_empty(),
        "not due before the quota resets"
    );
    let links = d
        .state
        .service
        .links
        .links_for_contact(&tenant, "app-2001")
        .await
        .unwrap();
    assert!(
        links.iter().all(|l| l.provider != Provider::HubSpot),
        "nothing written to the paused CRM: {links:?}"
    );
}

/// An invocation with almost no time left starts no job: each readable one is back on the
/// queue, due at once and not counted as a failure, and nothing is synced.
#[tokio::test]
async fn jobs_there_is_no_time_for_are_re_queued_not_failed() {
    let d = deps();
    let tenant = TenantId::new("acme");
    d.store
        .insert(&contact("app-2001", "edsger@example.com"))
        .await
        .unwrap();
    let event = sqs_sync_batch();
    let readable = event.records.len() - 1;
    let before = d.store.depth(&tenant).await.unwrap().jobs;
    // Two seconds left, of which the margin takes two.
    let deadline = (Utc::now() + chrono::Duration::seconds(2)).timestamp_millis() as u64;
    let response = shared::lambda::handle_sqs_batch(
        &d.state.service,
        d.state.queue.as_ref(),
        event,
        Some(shared::lambda::job_deadline(deadline)),
    )
    .await;
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        only_the_unreadable_message_fails(),
        "only the unreadable message fails"
    );
    assert_eq!(
        d.store.depth(&tenant).await.unwrap().jobs,
        before + readable,
        "re-queued"
    );
    assert_eq!(
        d.store.receive(10).await.unwrap().len(),
        readable,
        "due at once"
    );
    let links = d
        .state
        .service
        .links
        .links_for_contact(&tenant, "app-2001")
        .await
        .unwrap();
    assert!(links.is_empty(), "nothing synced: {links:?}");
}
