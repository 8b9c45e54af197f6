//! The Pipedrive client against the stateful Pipedrive simulator over HTTP.

use std::collections::HashSet;

use crm_sim::{SimConfig, SimServer};
use serde_json::{Value, json};
use shared::adapters::embedded::EmbeddedStore;
use shared::crm::pipedrive::{PipedriveAuth, PipedriveClient, PipedriveClientConfig};
use shared::error::CrmError;
use shared::ports::{CrmClient, CrmContext, SharedLimits};
use shared::{ContactFields, CustomField, Field, FieldPatch, TenantId};

const TOKEN: &str = "sim-pipedrive-token";

async fn sim(mut config: SimConfig) -> SimServer {
    // These test the client's calls, not the search index's lag (the simulation covers that).
    config.pipedrive.search_index_lag_ms = 0;
    crm_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn config(s: &SimServer) -> PipedriveClientConfig {
    PipedriveClientConfig::new(s.base_url(), PipedriveAuth::ApiToken(TOKEN.into()))
}

fn client(s: &SimServer) -> PipedriveClient {
    PipedriveClient::new(config(s), reqwest::Client::new())
}

fn ctx(pronouns: Option<&str>) -> CrmContext {
    let c = CrmContext::new(TenantId::new("t"));
    match pronouns {
        Some(key) => c.with_field(CustomField::Pronouns, key),
        None => c,
    }
}

fn fields(email: &str, first: &str) -> ContactFields {
    ContactFields {
        email: Some(email.into()),
        first_name: Some(first.into()),
        last_name: Some("Tester".into()),
        phone: Some("+1 555 0100".into()),
        job_title: Some("Engineer".into()),
        pronouns: Some("they/them".into()),
    }
}

fn calls(s: &SimServer, endpoint: &str) -> u64 {
    s.pipedrive
        .stats()
        .calls_by_endpoint
        .get(endpoint)
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn crud_custom_fields_and_other_emails_survive_updates() {
    let s = sim(SimConfig::default()).await;
    let c = client(&s);
    assert_eq!(
        c.find_field(&ctx(None), CustomField::Pronouns)
            .await
            .unwrap(),
        None
    );
    let key = c
        .ensure_field(&ctx(None), CustomField::Pronouns)
        .await
        .unwrap();
    assert_eq!(key.len(), 40, "a 40-character field key: {key}");
    assert_eq!(
        s.pipedrive.field_key("pronouns").as_deref(),
        Some(key.as_str())
    );
    assert_eq!(
        c.ensure_field(&ctx(None), CustomField::Pronouns)
            .await
            .unwrap(),
        key,
        "idempotent"
    );
    assert_eq!(
        c.find_field(&ctx(None), CustomField::Pronouns)
            .await
            .unwrap()
            .as_deref(),
        Some(key.as_str())
    );
    assert_eq!(
        calls(&s, "POST /api/v2/personFields"),
        1,
        "one pronouns field"
    );
    let ctx = ctx(Some(&key));

    // Without contact sync there is no standard job_title: a custom field holds it.
    let created = c
        .create(&ctx, &fields("Ada@Example.com", "Ada"))
        .await
        .unwrap();
    let job_key = s
        .pipedrive
        .field_key("job_title")
        .expect("job_title custom field");
    let stored = s.pipedrive.person(created.id.parse().unwrap()).unwrap();
    assert_eq!(stored["custom_fields"][&key], "they/them");
    assert_eq!(stored["custom_fields"][&job_key], "Engineer");
    assert_eq!(stored["first_name"], "Ada");
    assert_eq!(created.fields, fields("ada@example.com", "Ada"));
    assert!(created.updated_at.is_some());

    let got = c.get(&ctx, &created.id).await.unwrap().unwrap();
    assert_eq!(got.fields, created.fields);
    assert!(c.get(&ctx, "999999").await.unwrap().is_none());
    assert!(c.get(&ctx, "not-a-number").await.unwrap().is_none());

    let found = c
        .find_by_email(&ctx, "ADA@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, created.id);
    assert!(
        c.find_by_email(&ctx, "nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );

    // A second email added in Pipedrive survives an update of the primary one.
    let id: u64 = created.id.parse().unwrap();
    s.pipedrive.ui_update(
        id,
        json!({"emails": [{"value": "ada@example.com", "primary": true, "label": "work"},
                          {"value": "ada@home.example", "primary": false, "label": "home"}]}),
    );
    let mut patch = FieldPatch::default();
    patch.insert(Field::Email, Some("lovelace@example.com".into()));
    patch.insert(Field::LastName, Some("Lovelace".into()));
    patch.insert(Field::Pronouns, None);
    patch.insert(Field::JobTitle, Some("Analyst".into()));
    let c2 = client(&s); // no cached read: the client reads before patching the arrays
    let updated = c2.update(&ctx, &created.id, &patch).await.unwrap();
    assert_eq!(
        updated.fields.email.as_deref(),
        Some("lovelace@example.com")
    );
    assert_eq!(updated.fields.first_name.as_deref(), Some("Ada"));
    assert_eq!(updated.fields.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(updated.fields.pronouns, None);
    assert_eq!(updated.fields.job_title.as_deref(), Some("Analyst"));
    let stored = s.pipedrive.person(id).unwrap();
    let emails: Vec<(&str, bool, &str)> = stored["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["value"].as_str().unwrap(),
                e["primary"].as_bool().unwrap(),
                e["label"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        emails,
        [
            ("lovelace@example.com", true, "work"),
            ("ada@home.example", false, "home")
        ]
    );
    assert_eq!(stored["custom_fields"][&key], Value::Null);

    c.archive(&ctx, &created.id).await.unwrap();
    c.archive(&ctx, &created.id).await.unwrap();
    assert!(c.get(&ctx, &created.id).await.unwrap().is_none());
    assert_eq!(s.pipedrive.person(id).unwrap()["is_deleted"], true);
}

#[tokio::test]
async fn standard_job_title_is_used_when_the_account_has_contact_sync() {
    let mut cfg = SimConfig::default();
    cfg.pipedrive.contact_sync_fields = true;
    let s = sim(cfg).await;
    let c = client(&s);
    let r = c
        .create(&ctx(None), &fields("grace@example.com", "Grace"))
        .await
        .unwrap();
    assert_eq!(r.fields.job_title.as_deref(), Some("Engineer"));
    assert_eq!(
        r.fields.pronouns, None,
        "no pronouns field: not sent, not read"
    );
    let stored = s.pipedrive.person(r.id.parse().unwrap()).unwrap();
    assert_eq!(stored["job_title"], "Engineer");
    assert!(
        s.pipedrive.field_key("job_title").is_none(),
        "no custom field created"
    );
    let mut patch = FieldPatch::default();
    patch.insert(Field::JobTitle, None);
    let u = c.update(&ctx(None), &r.id, &patch).await.unwrap();
    assert_eq!(u.fields.job_title, None);
    // A context that carries the key skips the field lookup.
    let before = calls(&s, "GET /api/v2/personFields");
    let with_key = ctx(None).with_field(CustomField::JobTitle, "job_title");
    client(&s).get(&with_key, &r.id).await.unwrap().unwrap();
    assert_eq!(calls(&s, "GET /api/v2/personFields"), before);
}

#[tokio::test]
async fn nameless_contacts_round_trip_without_inventing_a_name() {
    let s = sim(SimConfig::default()).await;
    let c = client(&s);
    let only_email = ContactFields {
        email: Some("x@example.com".into()),
        ..Default::default()
    };
    let r = c.create(&ctx(None), &only_email).await.unwrap();
    assert_eq!(r.fields, only_email);
    assert_eq!(
        s.pipedrive.person(r.id.parse().unwrap()).unwrap()["name"],
        "x@example.com"
    );
}

#[tokio::test]
async fn find_many_by_email_lists_instead_of_searching_and_create_many_makes_the_rest() {
    let s = sim(SimConfig::default()).await;
    let c = client(&s);
    let key = c
        .ensure_field(&ctx(None), CustomField::Pronouns)
        .await
        .unwrap();
    let ctx = ctx(Some(&key));
    let existing = s.pipedrive.ui_create(json!({"name": "Old Name",
        "emails": [{"value": "P3@x.io", "primary": true}]}));
    let emails: Vec<String> = (0..30).map(|i| format!("p{i}@x.io")).collect();
    let searches = calls(&s, "GET /api/v2/persons/search");
    let found = c.find_many_by_email(&ctx, &emails).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found["p3@x.io"].id,
        existing.to_string(),
        "matched case-insensitively"
    );
    assert_eq!(found["p3@x.io"].fields.first_name.as_deref(), Some("Old"));
    assert_eq!(
        calls(&s, "GET /api/v2/persons/search"),
        searches,
        "listing beat searching"
    );

    let inputs: Vec<_> = (0..30)
        .filter(|i| *i != 3)
        .map(|i| fields(&format!("p{i}@x.io"), &format!("P{i}")))
        .collect();
    let out = c.create_many(&ctx, &inputs).await.unwrap();
    assert_eq!(out.len(), 29);
    for (r, sent) in out.iter().zip(&inputs) {
        let r = r.as_ref().unwrap();
        assert_eq!(r.fields.email, sent.email);
        assert_eq!(r.fields.first_name, sent.first_name);
    }
    assert_eq!(calls(&s, "POST /api/v2/persons"), 29);
    let live = s
        .pipedrive
        .persons()
        .into_iter()
        .filter(|p| p["is_deleted"] == false)
        .count();
    assert_eq!(live, 30);
    // Now every email is found, still without a search and without a write.
    let writes = s.pipedrive.stats().write_calls;
    let again = c.find_many_by_email(&ctx, &emails).await.unwrap();
    assert_eq!(again.len(), 30);
    assert_eq!(s.pipedrive.stats().write_calls, writes);
    assert_eq!(calls(&s, "GET /api/v2/persons/search"), searches);
}

#[tokio::test]
async fn changed_since_pages_through_equal_timestamps_without_loops_or_gaps() {
    let s = sim(SimConfig::default()).await;
    let ids: Vec<u64> = (0..230)
        .map(|i| {
            s.pipedrive
                .ui_create(json!({"name": format!("Person {i}")}))
        })
        .collect();
    let mut cfg = config(&s);
    cfg.page_limit = 50;
    let c = PipedriveClient::new(cfg, reqwest::Client::new());
    let ctx = ctx(None);
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = c.changed_since(&ctx, cursor.as_deref()).await.unwrap();
        pages += 1;
        assert!(pages < 10, "the pass must end");
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        assert!(page.records.iter().all(|r| r.updated_at.is_some()));
        cursor = page.next_cursor;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pages, 5);
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 230, "every person once");
    assert_eq!(seen.len(), 230);

    // The next pass starts at the newest update_time (inclusive): only persons of that second.
    let mut boundary = Vec::new();
    loop {
        let page = c.changed_since(&ctx, cursor.as_deref()).await.unwrap();
        boundary.extend(page.records.iter().map(|r| r.updated_at));
        cursor = page.next_cursor;
        if !page.has_more {
            break;
        }
        assert!(boundary.len() <= 230, "the pass must end");
    }
    let newest = boundary.iter().flatten().max().copied().unwrap();
    assert!(boundary.iter().all(|t| *t == Some(newest)));

    // A later edit shows up in the next pass.
    s.pipedrive.advance_clock(5);
    s.pipedrive
        .ui_update(ids[7], json!({"name": "Edited Person"}));
    let edited = ids[7].to_string();
    let mut pass = Vec::new();
    loop {
        let page = c.changed_since(&ctx, cursor.as_deref()).await.unwrap();
        pass.extend(page.records.clone());
        cursor = page.next_cursor;
        if !page.has_more {
            break;
        }
    }
    let hit = pass
        .iter()
        .find(|r| r.id == edited)
        .expect("the edit is found");
    assert!(hit.updated_at.unwrap() > newest);
    assert_eq!(pass.last().unwrap().id, edited, "update_time order");
    // ...and the pass after that starts at the edit's second.
    let page = c.changed_since(&ctx, cursor.as_deref()).await.unwrap();
    assert_eq!(
        page.records
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [edited.as_str()]
    );
    assert!(!page.has_more);
    // Every poll asked in whole seconds, sorted by update_time.
    for r in s
        .pipedrive
        .request_log()
        .iter()
        .filter(|r| r.path == "/api/v2/persons")
    {
        let q = r.query.as_deref().unwrap_or_default();
        assert!(q.contains("sort_by=update_time"), "{q}");
        if let Some(since) = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("updated_since="))
        {
            assert!(!since.contains('.'), "no fractional seconds: {since}");
        }
    }
}

#[tokio::test]
async fn burst_429s_are_waited_out() {
    let mut cfg = SimConfig::default();
    cfg.pipedrive.burst_limit = Some(3);
    let s = sim(cfg).await;
    // The client thinks it may send 50 per 2 s: the simulator's 429s must pace it.
    // Concurrent calls outrun the rate-limit headers.
    let mut pcfg = config(&s);
    pcfg.burst_per_2s = 50;
    let c = std::sync::Arc::new(PipedriveClient::new(pcfg, reqwest::Client::new()));
    let ctx = job_ctx(&s);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (c, ctx) = (c.clone(), ctx.clone());
            tokio::spawn(async move { c.create(&ctx, &fields(&format!("b{i}@x.io"), "B")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(s.pipedrive.stats().rate_limited > 0);
    assert!(c.stats().rate_limited > 0);
    assert_eq!(calls(&s, "POST /api/v2/persons"), 8);
}

/// Two workers (two clients, as two Lambda instances would have), each allowed the account's
/// burst of 3 per 2 s: alone, together they send 6 and meet 429s; sharing their limits through
/// one store, the simulator sees no request over the limit.
#[tokio::test]
async fn workers_sharing_their_limits_stay_under_the_account_s_burst() {
    async fn run(shared: bool) -> u64 {
        let mut cfg = SimConfig::default();
        cfg.pipedrive.burst_limit = Some(3);
        let s = sim(cfg).await;
        let ctx = job_ctx(&s);
        let store = std::sync::Arc::new(EmbeddedStore::in_memory().unwrap());
        let mut tasks = Vec::new();
        for w in 0..2 {
            let mut pcfg = config(&s);
            pcfg.burst_per_2s = 3;
            let c = PipedriveClient::new(pcfg, reqwest::Client::new());
            if shared {
                c.share_limits(store.clone(), TenantId::new("t"));
            }
            let c = std::sync::Arc::new(c);
            for i in 0..4 {
                let (c, ctx) = (c.clone(), ctx.clone());
                tasks.push(tokio::spawn(async move {
                    c.create(&ctx, &fields(&format!("w{w}-{i}@x.io"), "W"))
                        .await
                }));
            }
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(calls(&s, "POST /api/v2/persons"), 8);
        s.pipedrive.stats().rate_limited
    }
    assert!(
        run(false).await > 0,
        "unshared, the two workers overrun the burst"
    );
    assert_eq!(run(true).await, 0, "shared, no request is over the limit");
}

/// Our own daily budget is kept in the store: a worker started later (a restart, another
/// instance) finds the day's spend of the one before, and sends nothing it cannot pay for.
#[tokio::test]
async fn our_daily_budget_survives_a_restart() {
    let s = sim(SimConfig::default()).await;
    let ctx = job_ctx(&s);
    let store = std::sync::Arc::new(EmbeddedStore::in_memory().unwrap());
    let worker = || {
        let mut pcfg = config(&s);
        pcfg.daily_token_budget = Some(12);
        let c = PipedriveClient::new(pcfg, reqwest::Client::new());
        c.share_limits(store.clone(), TenantId::new("t"));
        c
    };
    let before = worker();
    before.create(&ctx, &fields("r0@x.io", "R")).await.unwrap();
    before.create(&ctx, &fields("r1@x.io", "R")).await.unwrap();
    drop(before);
    let after = worker();
    let requests = s.pipedrive.stats().requests;
    let err = after
        .create(&ctx, &fields("r2@x.io", "R"))
        .await
        .unwrap_err();
    assert!(matches!(err, CrmError::QuotaExhausted { .. }), "{err:?}");
    assert_eq!(s.pipedrive.stats().requests, requests, "nothing sent");
    assert_eq!(
        store
            .spent_today(&TenantId::new("t"), shared::Provider::Pipedrive)
            .await
            .unwrap(),
        10
    );
}

/// A wait for the burst window that would cross the job's deadline is not slept: the call
/// fails at once with the time to resume, and nothing is sent.
#[tokio::test]
async fn a_wait_past_the_job_s_deadline_ends_the_call_with_a_time_to_resume() {
    let s = sim(SimConfig::default()).await;
    let ctx = job_ctx(&s);
    let mut pcfg = config(&s);
    pcfg.burst_per_2s = 1;
    let c = PipedriveClient::new(pcfg, reqwest::Client::new());
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1_500);
    let second = shared::deadline::within(deadline, async {
        c.get(&ctx, "1").await.unwrap();
        c.get(&ctx, "1").await
    })
    .await;
    let Err(CrmError::OutOfTime { resume_at, .. }) = second else {
        panic!("expected the deadline to end the call: {second:?}")
    };
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1_000),
        "no sleep"
    );
    assert!(resume_at > chrono::Utc::now() + chrono::Duration::milliseconds(1_000));
    assert_eq!(
        calls(&s, "GET /api/v2/persons/{id}"),
        1,
        "the second was not sent"
    );
}

/// Three more calls are refused as a spent quota, and none reaches the simulator.
async fn assert_paused(s: &SimServer, c: &PipedriveClient, ctx: &CrmContext, why: &str) {
    let requests = s.pipedrive.stats().requests;
    for _ in 0..3 {
        assert!(matches!(
            c.get(ctx, "1").await,
            Err(CrmError::QuotaExhausted { .. })
        ));
    }
    assert_eq!(s.pipedrive.stats().requests, requests, "{why}");
}

fn job_ctx(s: &SimServer) -> CrmContext {
    ctx(None).with_field(
        CustomField::JobTitle,
        s.pipedrive
            .create_field("job_title", "varchar", &[])
            .unwrap(),
    )
}

#[tokio::test]
async fn spent_daily_budget_stops_calls_until_reset() {
    let mut cfg = SimConfig::default();
    cfg.pipedrive.daily_token_budget = Some(12);
    let s = sim(cfg).await;
    let ctx = job_ctx(&s);
    // Another integration of the same company spends 10 of the 12 tokens.
    let other = client(&s);
    other.create(&ctx, &fields("d0@x.io", "D")).await.unwrap();
    other.create(&ctx, &fields("d1@x.io", "D")).await.unwrap();
    // Our create (5) is answered 429 (daily).
    let c = client(&s);
    let err = c.create(&ctx, &fields("d2@x.io", "D")).await.unwrap_err();
    assert!(matches!(err, CrmError::QuotaExhausted { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(s.pipedrive.stats().daily_limited, 1);
    assert_paused(&s, &c, &ctx, "no call while the budget is spent").await;
}

/// With only the documented headers (no `x-daily-ratelimit-token-*`), a 429 while the burst
/// window still has room is the daily budget: one 429, then no call until the reset.
#[tokio::test]
async fn a_daily_429_is_told_from_a_burst_by_the_documented_headers() {
    let mut cfg = SimConfig::default();
    cfg.pipedrive.daily_token_budget = Some(12);
    cfg.pipedrive.daily_token_headers = false;
    let s = sim(cfg).await;
    let ctx = job_ctx(&s);
    let c = client(&s);
    c.create(&ctx, &fields("e0@x.io", "E")).await.unwrap();
    c.create(&ctx, &fields("e1@x.io", "E")).await.unwrap();
    let err = c.create(&ctx, &fields("e2@x.io", "E")).await.unwrap_err();
    assert!(matches!(err, CrmError::QuotaExhausted { .. }), "{err:?}");
    assert_eq!(s.pipedrive.stats().rate_limited, 1, "one 429, no retries");
    assert_paused(&s, &c, &ctx, "paused, not probing").await;
}

/// 429s that carry no rate-limit header at all cannot be told apart: after two backed-off
/// retries the client pauses instead of storming, and sends nothing while paused.
#[tokio::test]
async fn unexplained_429s_that_keep_coming_pause_the_client() {
    let s = sim(SimConfig::default()).await;
    let ctx = job_ctx(&s);
    let c = client(&s);
    s.pipedrive.throttle_bare(1_000);
    let err = c.get(&ctx, "1").await.unwrap_err();
    assert!(matches!(err, CrmError::QuotaExhausted { .. }), "{err:?}");
    assert_eq!(
        s.pipedrive.stats().requests,
        3,
        "two retries, then the pause"
    );
    for _ in 0..5 {
        assert!(c.get(&ctx, "1").await.is_err());
    }
    assert_eq!(s.pipedrive.stats().requests, 3, "nothing sent while paused");
}

#[tokio::test]
async fn a_zero_remaining_header_or_our_own_budget_stops_before_the_429() {
    let mut cfg = SimConfig::default();
    cfg.pipedrive.daily_token_budget = Some(10);
    let s = sim(cfg).await;
    let c = client(&s);
    let ctx = job_ctx(&s);
    c.create(&ctx, &fields("h0@x.io", "H")).await.unwrap();
    c.create(&ctx, &fields("h1@x.io", "H")).await.unwrap();
    let requests = s.pipedrive.stats().requests;
    assert!(matches!(
        c.get(&ctx, "1").await,
        Err(CrmError::QuotaExhausted { .. })
    ));
    assert_eq!(
        s.pipedrive.stats().requests,
        requests,
        "the header said 0 left"
    );
    assert_eq!(s.pipedrive.stats().rate_limited, 0);

    // Our own cap (a reserve for the account's other users) counts the spec costs.
    let s = sim(SimConfig::default()).await;
    let mut pcfg = config(&s);
    pcfg.daily_token_budget = Some(7);
    let c = PipedriveClient::new(pcfg, reqwest::Client::new());
    let ctx = job_ctx(&s);
    c.create(&ctx, &fields("o0@x.io", "O")).await.unwrap();
    assert_eq!(c.stats().tokens_spent, 5);
    let requests = s.pipedrive.stats().requests;
    assert!(matches!(
        c.create(&ctx, &fields("o1@x.io", "O")).await,
        Err(CrmError::QuotaExhausted { .. })
    ));
    assert_eq!(s.pipedrive.stats().requests, requests);
}

#[tokio::test]
async fn webhook_registration_is_idempotent_and_replaces_stale_credentials() {
    let s = sim(SimConfig::default()).await;
    let c = client(&s);
    let url = "http://127.0.0.1:9/webhooks/pipedrive";
    let first = c.ensure_webhook(url, Some("u"), Some("p")).await.unwrap();
    assert!(first.created);
    let again = c.ensure_webhook(url, Some("u"), Some("p")).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.webhook_id, first.webhook_id);
    assert_eq!(calls(&s, "POST /api/v1/webhooks"), 1);
    // New credentials: the old subscription is replaced, not duplicated.
    let rotated = c.ensure_webhook(url, Some("u"), Some("p2")).await.unwrap();
    assert!(rotated.created);
    assert_eq!(rotated.removed, 1);
    let log = s.pipedrive.request_log();
    let post = log
        .iter()
        .rev()
        .find(|r| r.method == "POST" && r.path == "/api/v1/webhooks")
        .unwrap();
    let body = post.body.as_ref().unwrap();
    assert_eq!(body["event_object"], "person");
    assert_eq!(body["event_action"], "*");
    assert_eq!(body["version"], "2.0");
    assert_eq!(body["http_auth_password"], "p2");

    // A webhook an admin made for the same URL and credentials is reused.
    let mut cfg = SimConfig::default();
    cfg.pipedrive.webhook_url = Some(url.into());
    cfg.pipedrive.webhook_user = Some("u".into());
    cfg.pipedrive.webhook_password = Some("p".into());
    let s = sim(cfg).await;
    let r = client(&s)
        .ensure_webhook(url, Some("u"), Some("p"))
        .await
        .unwrap();
    assert!(!r.created);
    assert_eq!(calls(&s, "POST /api/v1/webhooks"), 0);
}

#[tokio::test]
async fn own_user_is_fetched_once() {
    let s = sim(SimConfig::default()).await;
    let c = client(&s);
    let me = c.own_user().await.unwrap();
    assert_eq!((me.id, me.company_id), (9001, 7001));
    assert_eq!(me.company_domain.as_deref(), Some("sim-company"));
    c.own_user().await.unwrap();
    assert_eq!(calls(&s, "GET /api/v1/users/me"), 1);
    let bad = PipedriveClient::new(
        PipedriveClientConfig::new(s.base_url(), PipedriveAuth::ApiToken("wrong".into())),
        reqwest::Client::new(),
    );
    assert!(matches!(bad.own_user().await, Err(CrmError::Auth { .. })));
}

#[tokio::test]
async fn oauth_refresh_sends_requests_to_the_api_domain() {
    let mut cfg = SimConfig::default();
    cfg.pipedrive.oauth_tokens = vec!["sim-access-1".into()];
    let s = sim(cfg).await;
    // A token endpoint like oauth.pipedrive.com's, answering with the simulator as api_domain.
    let api_domain = s.base_url();
    let app = axum::Router::new().route(
        "/oauth/token",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let api_domain = api_domain.clone();
            async move {
                let basic = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                assert!(
                    shared::signature::verify_basic_auth(Some(&basic), "cid", "secret").is_ok()
                );
                assert!(body.contains("grant_type=refresh_token"));
                assert!(body.contains("refresh_token=r1"));
                axum::Json(
                    json!({"access_token": "sim-access-1", "token_type": "Bearer",
                    "refresh_token": "r2", "scope": "contacts:full", "expires_in": 3599,
                    "api_domain": api_domain}),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = PipedriveClient::new(
        PipedriveClientConfig::new(
            // Unreachable on purpose: requests must go to the token's api_domain.
            "http://127.0.0.1:9",
            PipedriveAuth::OAuth {
                client_id: "cid".into(),
                client_secret: "secret".into(),
                refresh_token: "r1".into(),
                token_url,
            },
        ),
        reqwest::Client::new(),
    );
    assert_eq!(c.own_user().await.unwrap().id, 9001);
    c.find_field(&ctx(None), CustomField::Pronouns)
        .await
        .unwrap();
    assert_eq!(c.stats().token_refreshes, 1);
    assert_eq!(c.current_refresh_token().as_deref(), Some("r2"));
    assert!(
        s.pipedrive
            .request_log()
            .iter()
            .all(|r| r.auth.as_deref() == Some("oauth bearer"))
    );
}
