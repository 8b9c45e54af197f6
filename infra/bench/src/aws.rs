//! DynamoDB and SQS requests per contact change, counted on the real adapters against moto
//! server (started from the test venv, as the tests do), with both CRMs simulated in process
//! (limits off: the counts, not the pacing, are measured). The service runs as deployed: the
//! API and webhook routes in one router, the worker draining SQS, the CRM limits shared in
//! DynamoDB. Every HTTP request the two SDK clients send is counted by operation.

#[path = "../../test-support/moto.rs"]
#[allow(dead_code)]
mod moto;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use reqwest::Method;
use serde_json::{Value, json};
use shared::adapters::aws::dynamo::{DynamoStore, TableNames};
use shared::adapters::aws::sqs::SqsQueue;
use shared::crm::CrmSettings;
use shared::crm::hubspot::settings::HubSpotSettings;
use shared::crm::pipedrive::settings::PipedriveSettings;
use shared::http::{AppState, HttpSettings};
use shared::ports::JobQueue;
use shared::provision::{self, ClientKit, Preparation};
use shared::sync::SyncService;
use shared::tenant::{TenantConfig, Tenants};

use crate::{Figure, cost};

const KEY: &str = "bench-aws-key";
const PIPEDRIVE_TOKEN: &str = "bench-pipedrive-oauth";
/// The goal: DynamoDB writes per contact change.
const WRITES_GOAL: f64 = 3.0;

/// Requests per AWS operation (`PutItem`, `SendMessageBatch`, ...), as sent. Two kinds are
/// left out as the bench's own: the depth checks it settles by (`GetQueueAttributes`) and the
/// worker loop's empty receives (in Lambda, the event source mapping's long polls: a fixed cost
/// per queue, not per change); a receive that brings messages is counted by the worker loop.
#[derive(Debug, Clone, Default)]
struct Counter(Arc<Mutex<BTreeMap<String, u64>>>);

/// Worker time spent on batches (µs), in the same map.
const BUSY: &str = "worker µs";
/// Items written by `TransactWriteItems` requests (each costs two write units), in the same map.
const TX_ITEMS: &str = "items in transactions";

impl Counter {
    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn add_busy(&self, d: Duration) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(BUSY.into())
            .or_default() += d.as_micros() as u64;
    }
}

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "BenchRequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // DynamoDB and SQS (JSON protocol) name the operation in `x-amz-target`.
        let mut op = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("unknown")
            .to_string();
        if op == "TransactWriteItems"
            && let Some(body) = context.request().body().bytes()
            && let Ok(v) = serde_json::from_slice::<Value>(body)
        {
            let items = v["TransactItems"].as_array().map_or(0, Vec::len);
            *self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(TX_ITEMS.to_string())
                .or_default() += items as u64;
        }
        // With BENCH_AWS_DETAIL set: which item (table, key prefix) each call touches.
        if std::env::var_os("BENCH_AWS_DETAIL").is_some()
            && let Some(body) = context.request().body().bytes()
            && let Ok(v) = serde_json::from_slice::<Value>(body)
        {
            let table = v["TableName"].as_str().unwrap_or("");
            let item = if v["Item"].is_object() {
                &v["Item"]
            } else {
                &v["Key"]
            };
            let sk = item
                .as_object()
                .and_then(|o| {
                    o.values()
                        .filter_map(|a| a["S"].as_str())
                        .find(|s| s.contains('#'))
                })
                .unwrap_or("");
            let prefix: String = sk.split('#').take(1).collect();
            let table = table.rsplit('-').next().unwrap_or(table);
            if std::env::var_os("BENCH_AWS_TRACE").is_some() {
                let cond = if v["ConditionExpression"].is_string() {
                    " (conditional)"
                } else {
                    ""
                };
                eprintln!("trace: {op} {table} {sk}{cond}");
            }
            op = format!("{op} {table} {prefix}");
        }
        if !(op.starts_with("ReceiveMessage") || op.starts_with("GetQueueAttributes")) {
            self.count(op);
        }
        Ok(())
    }
}

impl Counter {
    fn count(&self, op: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(op)
            .or_default() += 1;
    }
}

/// DynamoDB writes, DynamoDB reads, SQS requests in `counts`.
fn classify(counts: &BTreeMap<String, u64>) -> (u64, u64, u64) {
    // An operation, or (with BENCH_AWS_DETAIL) an operation followed by the item it touched.
    let sum = |ops: &[&str]| -> u64 {
        counts
            .iter()
            .filter(|(op, _)| ops.contains(&op.split(' ').next().unwrap_or("")))
            .map(|(_, k)| k)
            .sum()
    };
    (
        sum(&[
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "BatchWriteItem",
            "TransactWriteItems",
        ]),
        sum(&[
            "GetItem",
            "Query",
            "Scan",
            "BatchGetItem",
            "TransactGetItems",
        ]),
        sum(&[
            "SendMessage",
            "SendMessageBatch",
            "ReceiveMessage",
            "DeleteMessage",
            "DeleteMessageBatch",
            "ChangeMessageVisibility",
            "ChangeMessageVisibilityBatch",
        ]),
    )
}

/// Write units beyond one a write request: a transaction costs two units an item.
fn transaction_surplus(counts: &BTreeMap<String, u64>) -> u64 {
    let requests: u64 = counts
        .iter()
        .filter(|(op, _)| op.starts_with("TransactWriteItems"))
        .map(|(_, k)| k)
        .sum();
    (2 * counts.get(TX_ITEMS).copied().unwrap_or(0)).saturating_sub(requests)
}

/// One phase's counts: AWS requests by operation (and the worker's busy time), CRM requests
/// and webhook deliveries to us.
struct Phase {
    aws: BTreeMap<String, u64>,
    crm_requests: u64,
    webhooks: u64,
}

struct Stack {
    app: String,
    sim: String,
    http: reqwest::Client,
    queue: Arc<SqsQueue>,
    service: SyncService,
    counter: Counter,
    _sim: crm_sim::SimServer,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn stack() -> anyhow::Result<Stack> {
    let cfg = moto::sdk_config().await;
    let counter = Counter::default();
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&cfg)
            .interceptor(counter.clone())
            .build(),
    );
    let prefix = format!("bench{}", uuid::Uuid::new_v4().simple());
    let store = Arc::new(DynamoStore::new(ddb, TableNames::with_prefix(&prefix)));
    store.create_tables().await.context("creating the tables")?;
    let (_, url, dlq) = moto::sync_queues(30).await;
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&cfg)
            .interceptor(counter.clone())
            .build(),
    );
    let queue = Arc::new(SqsQueue::new(sqs, url, dlq));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = format!("http://{}", listener.local_addr()?);
    let mut sim_cfg = crm_sim::SimConfig::default();
    sim_cfg.hubspot.webhook_url = Some(format!("{app}/webhooks/hubspot"));
    sim_cfg.hubspot.burst_limit = None;
    sim_cfg.hubspot.daily_limit = None;
    sim_cfg.hubspot.search_per_second = 0;
    sim_cfg.pipedrive.webhook_url = Some(format!("{app}/webhooks/pipedrive"));
    sim_cfg.pipedrive.webhook_user = Some("bench".into());
    sim_cfg.pipedrive.webhook_password = Some("bench-password".into());
    sim_cfg.pipedrive.oauth_tokens = vec![PIPEDRIVE_TOKEN.into()];
    sim_cfg.pipedrive.oauth_burst_limit = None;
    sim_cfg.pipedrive.search_burst_limit = None;
    sim_cfg.pipedrive.daily_token_budget = None;
    let sim = crm_sim::start(sim_cfg.clone(), "127.0.0.1:0".parse()?).await?;
    let crms = vec![
        CrmSettings::HubSpot(HubSpotSettings {
            api_base: sim.base_url(),
            access_token: sim_cfg.hubspot.access_tokens.first().cloned(),
            client_id: None,
            refresh_token: None,
            client_secret: Some(sim_cfg.hubspot.client_secret.clone()),
            app_id: Some(sim_cfg.hubspot.app_id),
            portal_id: sim_cfg.hubspot.portal_id,
            burst_limit: 100_000,
        }),
        CrmSettings::Pipedrive(PipedriveSettings {
            api_base: sim.base_url(),
            api_token: None,
            access_token: Some(PIPEDRIVE_TOKEN.into()),
            client_id: None,
            client_secret: None,
            refresh_token: None,
            oauth_token_url: shared::crm::pipedrive::DEFAULT_OAUTH_TOKEN_URL.into(),
            company_id: Some(sim_cfg.pipedrive.company_id),
            webhook_user: sim_cfg.pipedrive.webhook_user.clone(),
            webhook_password: sim_cfg.pipedrive.webhook_password.clone(),
            burst_limit: Some(100_000),
            // Our own daily budget as deployed by default: each request pays from it, in the
            // shared limits (it is never leased).
            daily_token_budget: Some(shared::crm::pipedrive::DEFAULT_DAILY_TOKEN_BUDGET),
        }),
    ];
    let kit = ClientKit::shared(provision::http_client(), store.clone());
    let mut tenant = TenantConfig::new("bench");
    tenant.api_key = Some(KEY.into());
    let provisioned = provision::connect(tenant, crms, &kit).await?;
    let mut tenants = Tenants::new();
    provisioned.add_to(&mut tenants);
    let service = SyncService::new(
        store.clone(),
        store.clone(),
        store.clone(),
        Arc::new(tenants),
    );
    provisioned.prepare(&service, Preparation::Fresh).await?;
    provisioned.register_webhooks(&app).await;
    let router = shared::http::router(AppState {
        service: service.clone(),
        queue: queue.clone(),
        settings: Arc::new(HttpSettings {
            public_base_url: Some(app.clone()),
        }),
    });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    // The sync-worker: SQS batches of ten, as the event source mapping hands them over.
    let (s, q, c) = (service.clone(), queue.clone(), counter.clone());
    let worker = tokio::spawn(async move {
        loop {
            let started = std::time::Instant::now();
            match shared::sync::worker::run_once(&s, q.as_ref(), 10).await {
                // One receive brought these messages; the time they took is an invocation's.
                Ok(n) if n > 0 => {
                    c.count("ReceiveMessage".into());
                    c.add_busy(started.elapsed());
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    Ok(Stack {
        app,
        sim: sim.base_url(),
        http: reqwest::Client::new(),
        queue,
        service,
        counter,
        _sim: sim,
        tasks: vec![server, worker],
    })
}

impl Stack {
    async fn api(&self, method: Method, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.app);
        crate::runner::send(&self.http, method, &url, Some(KEY), body).await
    }

    async fn sim(&self, method: Method, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.sim);
        crate::runner::send(&self.http, method, &url, None, body).await
    }

    /// CRM requests and webhook deliveries so far (both simulators).
    async fn crm_counts(&self) -> anyhow::Result<(u64, u64)> {
        let hs = self
            .sim(Method::GET, "/_sim/hubspot/stats", &Value::Null)
            .await?;
        let pd = self
            .sim(Method::GET, "/_sim/pipedrive/stats", &Value::Null)
            .await?;
        let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        Ok((
            n(&hs, "requests") + n(&pd, "requests"),
            n(&hs, "webhook_deliveries") + n(&pd, "webhook_deliveries"),
        ))
    }

    /// What the phase since `since` cost; `since` moves to now.
    async fn phase(&self, since: &mut (u64, u64)) -> anyhow::Result<Phase> {
        let now = self.crm_counts().await?;
        let phase = Phase {
            aws: self.counter.take(),
            crm_requests: now.0 - since.0,
            webhooks: now.1 - since.1,
        };
        *since = now;
        Ok(phase)
    }

    /// The queue empty and no webhook on its way, several times in a row.
    async fn settled(&self) -> anyhow::Result<()> {
        let tenant = shared::TenantId::new("bench");
        let started = std::time::Instant::now();
        let mut quiet = 0;
        while quiet < 5 {
            ensure!(
                started.elapsed() < Duration::from_secs(120),
                "the service did not settle"
            );
            let hs = self
                .sim(Method::GET, "/_sim/hubspot/stats", &Value::Null)
                .await?;
            let pd = self
                .sim(Method::GET, "/_sim/pipedrive/stats", &Value::Null)
                .await?;
            let idle = self.queue.depth(&tenant).await?.jobs == 0
                && hs["webhook_events_pending"] == 0
                && pd["webhook_jobs_pending"] == 0;
            quiet = if idle { quiet + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

fn trace_mark(phase: &str) {
    if std::env::var_os("BENCH_AWS_TRACE").is_some() {
        eprintln!("trace: --- {phase}");
    }
}

pub async fn run(n: usize) -> anyhow::Result<(Vec<Figure>, Vec<String>)> {
    let s = stack().await?;
    let mut ids = Vec::new();
    let mut counts: Vec<(&str, Phase)> = Vec::new();
    s.counter.take();
    let mut crm = s.crm_counts().await?;
    for i in 0..n {
        let c = s
            .api(
                Method::POST,
                "/contacts",
                &json!({"email": format!("aws{i}@example.com"), "first_name": "Aws",
                        "last_name": "Bench"}),
            )
            .await?;
        ids.push(c["id"].as_str().context("no id")?.to_string());
        s.settled().await?;
    }
    counts.push(("new contact", s.phase(&mut crm).await?));
    trace_mark("app edit");
    let mut links = Vec::new();
    for id in &ids {
        let c = s
            .api(Method::GET, &format!("/contacts/{id}"), &Value::Null)
            .await?;
        let crm = |name: &str| {
            c["sync"]["crms"][name]["external_id"]
                .as_str()
                .map(str::to_owned)
        };
        links.push((
            crm("hubspot").context("not in HubSpot")?,
            crm("pipedrive").context("not in Pipedrive")?,
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        s.api(
            Method::PUT,
            &format!("/contacts/{id}"),
            &json!({"email": format!("aws{i}@example.com"), "first_name": "Aws",
                    "last_name": format!("App{i}")}),
        )
        .await?;
        s.settled().await?;
    }
    counts.push(("app edit", s.phase(&mut crm).await?));
    trace_mark("HubSpot edit");
    for (i, (hs, _)) in links.iter().enumerate() {
        s.sim(
            Method::PATCH,
            &format!("/_sim/hubspot/contacts/{hs}"),
            &json!({"properties": {"lastname": format!("Hs{i}")}}),
        )
        .await?;
        s.settled().await?;
    }
    counts.push(("HubSpot edit", s.phase(&mut crm).await?));
    trace_mark("Pipedrive edit");
    for (i, (_, pd)) in links.iter().enumerate() {
        s.sim(
            Method::PATCH,
            &format!("/_sim/pipedrive/persons/{pd}"),
            &json!({"last_name": format!("Pd{i}")}),
        )
        .await?;
        s.settled().await?;
    }
    counts.push(("Pipedrive edit", s.phase(&mut crm).await?));
    let last = s
        .api(
            Method::GET,
            &format!("/contacts/{}", ids[n - 1]),
            &Value::Null,
        )
        .await?;
    ensure!(
        last["last_name"] == format!("Pd{}", n - 1),
        "the last Pipedrive edit did not reach the app: {last}"
    );
    let _ = &s.service;

    let mut figures = Vec::new();
    let mut notes = Vec::new();
    for (kind, phase) in counts {
        let c = &phase.aws;
        let (writes, reads, sqs) = classify(c);
        let per = |x: u64| x as f64 / n as f64;
        // A change made in the app comes in through its API (API Gateway); a CRM edit comes in
        // as the CRM's webhook only.
        let api_calls = if kind.ends_with("Pipedrive edit") || kind.ends_with("HubSpot edit") {
            0.0
        } else {
            1.0
        };
        figures.push(Figure::lower(
            format!("aws: {kind}: DynamoDB writes per change"),
            per(writes),
            "",
            WRITES_GOAL,
        ));
        figures.push(Figure::lower(
            format!("aws: {kind}: SQS requests per change"),
            per(sqs),
            "",
            3.0,
        ));
        let cost = cost::per_million(&cost::Counts {
            wru: per(writes) + per(transaction_surplus(c)),
            rru: per(reads),
            sqs: per(sqs),
            invocations: per(c
                .iter()
                .filter(|(op, _)| op.starts_with("ReceiveMessage"))
                .map(|(_, k)| k)
                .sum())
                + api_calls
                + per(phase.webhooks),
            // The webhooks come in through the function URL, free of API Gateway's charge.
            http_requests: api_calls,
            worker_ms: per(c.get(BUSY).copied().unwrap_or(0)) / 1000.0,
            crm_requests: per(phase.crm_requests),
        });
        figures.push(Figure::lower(
            format!("cost: {kind}: AWS $ per 1,000,000 changes"),
            cost.total(),
            "$",
            2.0,
        ));
        notes.push(format!(
            "aws {kind} (n={n}, echoes and CRM pacing included): DynamoDB {:.1} writes, {:.1} \
             reads; SQS {:.1} requests; {:.1} CRM requests, {:.1} webhooks to us; worker {:.1} ms \
             on moto; by operation per change: {}",
            per(writes),
            per(reads),
            per(sqs),
            per(phase.crm_requests),
            per(phase.webhooks),
            per(c.get(BUSY).copied().unwrap_or(0)) / 1000.0,
            c.iter()
                .filter(|(op, _)| op.as_str() != BUSY)
                .map(|(op, k)| format!("{op} {:.1}", per(*k)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        notes.push(format!("cost {kind}: {cost}"));
    }
    Ok((figures, notes))
}
