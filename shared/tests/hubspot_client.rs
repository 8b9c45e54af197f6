//! The HubSpot client against the stateful HubSpot simulator over HTTP.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_sim::{SimConfig, SimServer};
use shared::crm::hubspot::{HubSpotAuth, HubSpotClient, HubSpotClientConfig};
use shared::error::CrmError;
use shared::ports::{CrmClient, CrmContext};
use shared::{ContactFields, CustomField, Field, FieldPatch, TenantId};

async fn sim(config: SimConfig) -> SimServer {
    crm_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client(sim: &SimServer, auth: HubSpotAuth) -> HubSpotClient {
    HubSpotClient::new(
        HubSpotClientConfig::new(sim.base_url(), auth),
        reqwest::Client::new(),
    )
}

fn token() -> HubSpotAuth {
    HubSpotAuth::Token("sim-hubspot-token".into())
}

fn ctx(pronouns: bool) -> CrmContext {
    let c = CrmContext::new(TenantId::new("t"));
    if pronouns {
        c.with_field(CustomField::Pronouns, "pronouns")
    } else {
        c
    }
}

fn fields(email: &str, first: &str) -> ContactFields {
    ContactFields {
        email: Some(email.into()),
        first_name: Some(first.into()),
        pronouns: Some("they/them".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn crud_pronouns_and_conflicts() {
    let s = sim(SimConfig::default()).await;
    let c = client(&s, token());
    // Without the property, pronouns are not sent (HubSpot would reject an unknown property).
    let r = c
        .create(&ctx(false), &fields("a@x.io", "Ann"))
        .await
        .unwrap();
    assert_eq!(r.fields.first_name.as_deref(), Some("Ann"));
    assert_eq!(r.fields.pronouns, None);

    assert_eq!(
        c.find_field(&ctx(false), CustomField::Pronouns)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        c.ensure_field(&ctx(false), CustomField::Pronouns)
            .await
            .unwrap(),
        "pronouns"
    );
    assert!(s.hubspot.property_exists("pronouns"));
    assert_eq!(
        c.ensure_field(&ctx(true), CustomField::Pronouns)
            .await
            .unwrap(),
        "pronouns",
        "idempotent"
    );

    let mut patch = FieldPatch::default();
    patch.insert(Field::Pronouns, Some("she/her".into()));
    patch.insert(Field::FirstName, None);
    let u = c.update(&ctx(true), &r.id, &patch).await.unwrap();
    assert_eq!(u.fields.pronouns.as_deref(), Some("she/her"));
    assert_eq!(u.fields.first_name, None, "cleared with an empty string");

    let by_email = c
        .find_by_email(&ctx(true), "A@X.io")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email.id, r.id);
    assert!(
        c.find_by_email(&ctx(true), "nobody@x.io")
            .await
            .unwrap()
            .is_none()
    );

    let dup = c
        .create(&ctx(true), &fields("a@x.io", "Again"))
        .await
        .unwrap_err();
    assert_eq!(
        dup,
        CrmError::AlreadyExists {
            provider: shared::Provider::HubSpot,
            existing_id: r.id.clone()
        }
    );

    c.archive(&ctx(true), &r.id).await.unwrap();
    assert!(c.get(&ctx(true), &r.id).await.unwrap().is_none());
    assert!(s.hubspot.contact(&r.id).unwrap().archived);
}

#[tokio::test]
async fn batch_upsert_takes_100_per_call_and_maps_results_by_email() {
    let s = sim(SimConfig::default()).await;
    let c = client(&s, token());
    c.ensure_field(&ctx(false), CustomField::Pronouns)
        .await
        .unwrap();
    // One contact exists already (a create whose answer was lost): the batch create, an
    // upsert by email, updates it instead of duplicating.
    let existing = c
        .create(&ctx(true), &fields("p7@x.io", "Old"))
        .await
        .unwrap();
    let inputs: Vec<_> = (0..250)
        .map(|i| fields(&format!("p{i}@x.io"), &format!("P{i}")))
        .collect();
    let emails: Vec<String> = inputs.iter().filter_map(|f| f.email.clone()).collect();
    let before = s.hubspot.stats().batch_calls;
    let found = c.find_many_by_email(&ctx(true), &emails).await.unwrap();
    assert_eq!(
        s.hubspot.stats().batch_calls - before,
        3,
        "batch reads of 100"
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found["p7@x.io"].id, existing.id);
    let before = s.hubspot.stats().batch_calls;
    let out = c.create_many(&ctx(true), &inputs).await.unwrap();
    assert_eq!(s.hubspot.stats().batch_calls - before, 3);
    assert_eq!(out.len(), 250);
    for (i, r) in out.iter().enumerate() {
        let r = r.as_ref().unwrap();
        assert_eq!(
            r.fields.email.as_deref(),
            Some(format!("p{i}@x.io").as_str())
        );
    }
    assert_eq!(out[7].as_ref().unwrap().id, existing.id);
    assert_eq!(s.hubspot.contacts().len(), 250);
}

/// HubSpot rejects a whole batch upsert for one value it does not accept (400). The batch is
/// split until the bad input stands alone: the 99 others are written, the bad one gets
/// HubSpot's message as its result, in a handful of extra calls.
#[tokio::test]
async fn one_rejected_email_in_a_batch_of_100_fails_alone() {
    let s = sim(SimConfig::default()).await;
    let c = client(&s, token());
    let mut inputs: Vec<_> = (0..100)
        .map(|i| fields(&format!("q{i}@x.io"), &format!("Q{i}")))
        .collect();
    inputs[42].email = Some("q42@x..io".into());
    let before = s.hubspot.stats().batch_calls;
    let out = c.create_many(&ctx(false), &inputs).await.unwrap();
    let calls = s.hubspot.stats().batch_calls - before;
    assert_eq!(out.len(), 100);
    for (i, r) in out.iter().enumerate() {
        match (i, r) {
            (
                42,
                Err(CrmError::Rejected {
                    status, message, ..
                }),
            ) => {
                assert_eq!(*status, 400);
                assert!(message.contains("q42@x..io"), "{message}");
            }
            (42, other) => panic!("the bad input: {other:?}"),
            (_, r) => assert_eq!(
                r.as_ref().unwrap().fields.email.as_deref(),
                Some(format!("q{i}@x.io").as_str())
            ),
        }
    }
    assert_eq!(s.hubspot.contacts().len(), 99);
    // 1 + 2 per halving down to one input: 15 calls for a batch of 100, not 100.
    assert!(calls <= 15, "{calls} calls");
}

#[tokio::test]
async fn ten_secondly_429s_are_waited_out_and_nothing_fails() {
    let mut cfg = SimConfig::default();
    cfg.hubspot.burst_limit = Some(4);
    let s = sim(cfg).await;
    // The client thinks the account allows 100 per 10 s: the simulator's 429s must pace it.
    let c = client(&s, token());
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            c.create(&ctx(false), &fields(&format!("r{i}@x.io"), "R"))
                .await
                .unwrap()
                .id,
        );
    }
    let stats = s.hubspot.stats();
    assert!(
        stats.rate_limited > 0,
        "the simulator answered 429: {stats:?}"
    );
    assert_eq!(ids.len(), 7);
    assert_eq!(s.hubspot.contacts().len(), 7);
    assert!(c.stats().rate_limited > 0);
    println!("7 creates under a 4/10s limit took {:?}", started.elapsed());
}

#[tokio::test]
async fn daily_remaining_zero_stops_calls_before_any_429() {
    let mut cfg = SimConfig::default();
    // One request reads the portal's time zone, three create.
    cfg.hubspot.daily_limit = Some(4);
    let s = sim(cfg).await;
    let c = client(&s, token());
    for i in 0..3 {
        c.create(&ctx(false), &fields(&format!("d{i}@x.io"), "D"))
            .await
            .unwrap();
    }
    // The third answer said 0 left: the client stops without asking.
    let requests = s.hubspot.stats().requests;
    let err = c
        .create(&ctx(false), &fields("d3@x.io", "D"))
        .await
        .unwrap_err();
    assert!(matches!(err, CrmError::QuotaExhausted { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(s.hubspot.stats().requests, requests);
    assert_eq!(s.hubspot.stats().rate_limited, 0, "no 429 was needed");
}

/// The daily quota is shared with every other app of the portal: it can run out while our last
/// answer still said quota was left. The DAILY 429 latches the tenant until the reset (the next
/// midnight in the portal's time zone, read once from the account details), and no request is
/// sent meanwhile.
#[tokio::test]
async fn a_daily_429_latches_until_the_reset_with_no_request_meanwhile() {
    let mut cfg = SimConfig::default();
    cfg.hubspot.daily_limit = Some(100);
    cfg.hubspot.portal_time_zone = "America/Los_Angeles".into();
    let s = sim(cfg).await;
    let c = client(&s, token());
    for i in 0..2 {
        c.create(&ctx(false), &fields(&format!("d{i}@x.io"), "D"))
            .await
            .unwrap();
    }
    // Other apps spend the rest of today's quota.
    let r = reqwest::Client::new()
        .put(format!("{}/_sim/hubspot/config/rate-limit", s.base_url()))
        .json(&serde_json::json!({"daily_limit": 2}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let before = chrono::Utc::now();
    let err = c
        .create(&ctx(false), &fields("d2@x.io", "D"))
        .await
        .unwrap_err();
    let CrmError::QuotaExhausted { until, .. } = err else {
        panic!("expected the daily quota to be spent: {err:?}")
    };
    assert_eq!(s.hubspot.stats().rate_limited, 1, "one DAILY 429, no retry");
    let la = chrono_tz::Tz::America__Los_Angeles;
    assert_eq!(until, shared::crm::pacer::next_midnight_in(before, la));
    assert_ne!(until, shared::crm::pacer::next_midnight_utc(before));
    assert_eq!(c.portal_time_zone().await, Some(la));
    assert_eq!(
        s.hubspot.stats().by_endpoint["GET /account-info/v3/details"],
        1,
        "the zone is asked once"
    );
    let requests = s.hubspot.stats().requests;
    for _ in 0..5 {
        let err = c.get(&ctx(false), "100001").await.unwrap_err();
        assert!(matches!(err, CrmError::QuotaExhausted { until: u, .. } if u == until));
    }
    assert_eq!(
        s.hubspot.stats().requests,
        requests,
        "no request while the quota is spent"
    );
}

/// The simulated HubSpot app's OAuth credentials with `refresh_token`.
fn oauth(refresh_token: &str) -> HubSpotAuth {
    HubSpotAuth::OAuth {
        client_id: "sim-hubspot-client-id".into(),
        client_secret: "sim-hubspot-secret".into(),
        refresh_token: refresh_token.into(),
    }
}

#[tokio::test]
async fn oauth_refresh_is_coalesced_across_concurrent_calls() {
    let s = sim(SimConfig::default()).await;
    let c = Arc::new(client(&s, oauth("sim-hubspot-refresh-token")));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.find_by_email(&ctx(false), &format!("nobody{i}@x.io"))
                .await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_none());
    }
    assert_eq!(s.hubspot.stats().refreshes, 1);
    assert_eq!(c.stats().token_refreshes, 1);

    let bad = client(&s, oauth("revoked"));
    assert!(matches!(
        bad.get(&ctx(false), "1").await,
        Err(CrmError::Auth { .. })
    ));
}

#[tokio::test]
async fn changed_since_windows_by_id_past_the_search_cap_without_gaps_or_loops() {
    // A search pages through at most 300 results here (HubSpot: 10,000), so 450 matches lie past
    // the cap: only windows by id (never `after` offsets) read them all.
    let mut cfg = SimConfig::default();
    cfg.hubspot.search_max_results = 300;
    let s = sim(cfg).await;
    // 450 contacts sharing one lastmodifieddate (an import): timestamp windows alone would loop.
    s.hubspot
        .seed_contacts((0..450).map(|i| vec![("email".to_string(), format!("s{i}@x.io"))]))
        .unwrap();
    let c = client(&s, token());
    let mut cursor = None;
    let mut seen = HashSet::new();
    let mut pages = 0;
    loop {
        let page = c
            .changed_since(&ctx(false), cursor.as_deref())
            .await
            .unwrap();
        pages += 1;
        for r in &page.records {
            seen.insert(r.id.clone());
        }
        cursor = page.next_cursor.clone();
        if !page.has_more {
            break;
        }
        assert!(pages < 10, "no loop");
    }
    assert_eq!(seen.len(), 450);
    assert_eq!(pages, 3, "200 + 200 + 50");
    // The cap is real: paging past it with `after` is refused.
    let past = reqwest::Client::new()
        .post(format!("{}/crm/v3/objects/contacts/search", s.base_url()))
        .bearer_auth("sim-hubspot-token")
        .json(&serde_json::json!({"limit": 200, "after": "300"}))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 400);

    // A later change is found by the next pass; records changed within the lag margin before
    // the pass began (here, the whole import) are returned again: triggers, harmless.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let changed = s.hubspot.contacts()[10].id.clone();
    s.hubspot
        .ui_update(&changed, [("firstname", "Changed")])
        .unwrap();
    let page = c
        .changed_since(&ctx(false), cursor.as_deref())
        .await
        .unwrap();
    assert!(page.records.iter().any(|r| r.id == changed));
    assert!(
        page.has_more,
        "the import, inside the margin, is read again"
    );
}

/// Reads whole passes of `changed_since` from `cursor`: every record's first name as returned.
async fn one_pass(
    c: &HubSpotClient,
    cursor: &mut Option<String>,
    between_pages: impl AsyncFn(usize),
) -> Vec<(String, Option<String>)> {
    let mut seen = Vec::new();
    for page_no in 0.. {
        let page = c
            .changed_since(&ctx(false), cursor.as_deref())
            .await
            .unwrap();
        seen.extend(page.records.iter().map(|r| {
            (
                r.id.clone(),
                r.fields.as_ref().and_then(|f| f.first_name.clone()),
            )
        }));
        *cursor = page.next_cursor.clone();
        if !page.has_more {
            break;
        }
        between_pages(page_no).await;
        assert!(page_no < 10, "no loop");
    }
    seen
}

/// A pass goes by id: a low-id record modified while it reads higher ids, and a record whose
/// write the search index shows late (it still shows the old values when the pass gets there),
/// both have modification times below the newest the pass saw. The next pass still returns
/// each with its new values.
#[tokio::test]
async fn a_pass_misses_no_low_id_or_late_indexed_change() {
    let mut cfg = SimConfig::default();
    cfg.hubspot.search_index_lag_ms = 100;
    let s = sim(cfg).await;
    s.hubspot
        .seed_contacts((0..450).map(|i| vec![("email".to_string(), format!("p{i}@x.io"))]))
        .unwrap();
    let c = client(&s, token());
    let mut cursor = None;
    assert_eq!(one_pass(&c, &mut cursor, async |_| {}).await.len(), 450);

    let ids: Vec<String> = s.hubspot.contacts().iter().map(|r| r.id.clone()).collect();
    let (low, late, high) = (ids[5].clone(), ids[300].clone(), ids[440].clone());
    let sim = &s.hubspot;
    let during = async |page_no: usize| {
        if page_no == 0 {
            // The pass has read ids[0..200]; now the low one changes, then one the index
            // shows late, then a high one the pass reads on its last page.
            sim.ui_update(&low, [("firstname", "Low")]).unwrap();
            sim.ui_update(&late, [("firstname", "Late")]).unwrap();
            sim.index_late(&late, Duration::from_millis(800)).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            sim.ui_update(&high, [("firstname", "High")]).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let second = one_pass(&c, &mut cursor, during).await;
    let got = |seen: &[(String, Option<String>)], id: &str| {
        seen.iter()
            .filter(|(i, _)| i == id)
            .filter_map(|(_, n)| n.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(got(&second, &high), ["High"]);
    assert!(
        got(&second, &low).is_empty(),
        "already read by id when it changed"
    );
    assert!(
        !got(&second, &late).contains(&"Late".to_string()),
        "not indexed yet"
    );

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let third = one_pass(&c, &mut cursor, async |_| {}).await;
    assert_eq!(got(&third, &low), ["Low"]);
    assert_eq!(got(&third, &late), ["Late"]);
}

#[tokio::test]
async fn batch_read_takes_100_ids_per_call_and_skips_missing_ones() {
    let s = sim(SimConfig::default()).await;
    let ids = s
        .hubspot
        .seed_contacts((0..150).map(|i| vec![("email".to_string(), format!("b{i}@x.io"))]))
        .unwrap();
    let c = client(&s, token());
    let mut wanted = ids.clone();
    wanted.push("999999999".into());
    let before = s.hubspot.stats().batch_calls;
    let found = c.get_many(&ctx(false), &wanted).await.unwrap();
    assert_eq!(s.hubspot.stats().batch_calls - before, 2);
    assert_eq!(found.len(), 150);
    assert_eq!(found[&ids[3]].fields.email.as_deref(), Some("b3@x.io"));
    assert!(!found.contains_key("999999999"));
}

/// A queue batch of HubSpot webhook triggers costs one batch read, not one read per record.
#[tokio::test]
async fn worker_batches_reads_of_a_queue_batch() {
    use shared::adapters::embedded::EmbeddedStore;
    use shared::ports::JobQueue;
    use shared::sync::SyncService;
    use shared::tenant::{TenantConfig, Tenants};
    use shared::{ChangeEvent, ChangeKind, Origin};

    let s = sim(SimConfig::default()).await;
    let ids = s
        .hubspot
        .seed_contacts((0..10).map(|i| {
            vec![
                ("email".to_string(), format!("w{i}@x.io")),
                ("firstname".to_string(), format!("W{i}")),
            ]
        }))
        .unwrap();
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let mut tenants = Tenants::new();
    tenants.add(TenantConfig::new("t"), vec![Arc::new(client(&s, token()))]);
    let service = SyncService::new(
        store.clone(),
        store.clone(),
        store.clone(),
        Arc::new(tenants),
    );
    let events: Vec<_> = ids
        .iter()
        .map(|id| {
            ChangeEvent::new(
                TenantId::new("t"),
                Origin::Crm(shared::Provider::HubSpot),
                id.clone(),
                ChangeKind::Upsert,
            )
        })
        .collect();
    store.enqueue_changes(&events).await.unwrap();
    s.hubspot.reset_stats();
    assert_eq!(
        shared::sync::worker::run_once(&service, store.as_ref(), 10)
            .await
            .unwrap(),
        10
    );
    let stats = s.hubspot.stats();
    let single_reads = stats
        .by_endpoint
        .iter()
        .filter(|(k, _)| k.starts_with("GET /crm/v3/objects/contacts/"))
        .map(|(_, v)| *v)
        .sum::<u64>();
    assert_eq!(stats.batch_calls, 1, "{stats:?}");
    assert_eq!(single_reads, 0, "{stats:?}");
    assert_eq!(store.depth(&TenantId::new("t")).await.unwrap().jobs, 0);
    let page = shared::ports::ContactStore::list(store.as_ref(), &TenantId::new("t"), None, 100)
        .await
        .unwrap();
    assert_eq!(
        page.items.len(),
        10,
        "every HubSpot contact imported into the app"
    );
}

/// Searches are paced to HubSpot's 5 per second across concurrent callers: the simulator,
/// which enforces that limit, never has to answer 429.
#[tokio::test]
async fn searches_are_paced_to_five_per_second() {
    let s = sim(SimConfig::default()).await;
    let c = Arc::new(client(&s, token()));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.changed_since(&ctx(false), None).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = s.hubspot.stats();
    assert_eq!(stats.search_calls, 12, "{stats:?}");
    assert_eq!(stats.rate_limited, 0, "no 429: {stats:?}");
    assert_eq!(c.stats().rate_limited, 0);
}

/// An access token HubSpot stops taking before the time its response gave (revoked, or
/// expired early) is refreshed at the first 401 and the call retried once, not used until then.
#[tokio::test]
async fn an_oauth_token_refused_before_its_expiry_is_refreshed_and_the_call_retried() {
    let s = sim(SimConfig::default()).await;
    let c = client(&s, oauth("sim-hubspot-refresh-token"));
    let created = c
        .create(&ctx(false), &fields("early@x.io", "Early"))
        .await
        .unwrap();
    assert_eq!(s.hubspot.stats().refreshes, 1);
    s.hubspot.expire_oauth_tokens();
    let read = c.get(&ctx(false), &created.id).await.unwrap();
    assert_eq!(read.map(|r| r.id), Some(created.id));
    assert_eq!(
        s.hubspot.stats().refreshes,
        2,
        "one refresh after the 401, then the token is used again"
    );
    assert_eq!(c.stats().token_refreshes, 2);
}

/// An OAuth access token is refreshed before it expires (60 s ahead), not after a 401.
#[tokio::test]
async fn oauth_tokens_are_refreshed_before_they_expire() {
    let mut cfg = SimConfig::default();
    // Every token the simulator issues is within the client's 60-second margin at once.
    cfg.hubspot.access_token_ttl_secs = 60;
    let s = sim(cfg).await;
    let c = client(&s, oauth("sim-hubspot-refresh-token"));
    for i in 0..2 {
        c.create(&ctx(false), &fields(&format!("o{i}@x.io"), "O"))
            .await
            .unwrap();
    }
    let stats = s.hubspot.stats();
    // Three requests: the account details (the portal's time zone, read once) and two creates.
    assert_eq!(
        stats.refreshes, 3,
        "one refresh before each request: {stats:?}"
    );
    assert_eq!(c.stats().token_refreshes, 3);
    assert_eq!(
        stats.by_endpoint.get("POST /crm/v3/objects/contacts"),
        Some(&2),
        "each create sent once: no 401 and retry ({stats:?})"
    );
}

/// A batch upsert where HubSpot refuses one input (here: a value of a unique property that
/// another contact holds) answers 207; the client reports that input's error and the others'
/// records, and a backfill links the others and shows the error on the refused contact.
#[tokio::test]
async fn a_207_fails_only_its_record_and_the_backfill_links_the_rest() {
    use shared::adapters::embedded::EmbeddedStore;
    use shared::ports::{ContactIssues, ContactStore, CrmHealth, FieldKeys, LinkStore};
    use shared::sync::SyncService;
    use shared::tenant::{TenantConfig, Tenants};
    use shared::{Contact, Provider};

    let s = sim(SimConfig::default()).await;
    // An admin created the pronouns property with unique values before our setup found it.
    let r = reqwest::Client::new()
        .post(format!("{}/crm/v3/properties/contacts", s.base_url()))
        .bearer_auth("sim-hubspot-token")
        .json(
            &serde_json::json!({"name": "pronouns", "label": "Pronouns", "type": "string",
               "fieldType": "text", "groupName": "contactinformation", "hasUniqueValue": true}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    s.hubspot
        .seed_contacts([vec![
            ("email".to_string(), "holder@x.io".to_string()),
            ("pronouns".to_string(), "xe/xem".to_string()),
        ]])
        .unwrap();
    // Distinct pronouns except for the one input that repeats the holder's.
    let own = |email: &str, pronouns: &str| ContactFields {
        pronouns: Some(pronouns.into()),
        ..fields(email, "P")
    };
    let c = client(&s, token());
    let mut taken = fields("taken@x.io", "T");
    taken.pronouns = Some("xe/xem".into());
    let results = c
        .create_many(
            &ctx(true),
            &[
                own("ok1@x.io", "she/her"),
                taken.clone(),
                own("ok2@x.io", "he/him"),
            ],
        )
        .await
        .unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let err = results[1].as_ref().unwrap_err();
    assert!(
        matches!(err, CrmError::Rejected { status: 207, .. }),
        "{err:?}"
    );

    // The same through Sync Now's backfill.
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let t = TenantId::new("t");
    store
        .set_field_key(
            &t,
            Provider::HubSpot,
            shared::CustomField::Pronouns,
            Some("pronouns"),
        )
        .await
        .unwrap();
    for (i, f) in [own("b1@x.io", "ze/zir"), taken, own("b2@x.io", "fae/faer")]
        .into_iter()
        .enumerate()
    {
        store
            .insert(&Contact::new(
                t.clone(),
                format!("c{i}"),
                f,
                chrono::Utc::now(),
            ))
            .await
            .unwrap();
    }
    let mut tenants = Tenants::new();
    tenants.add(TenantConfig::new("t"), vec![Arc::new(client(&s, token()))]);
    let service = SyncService::new(
        store.clone(),
        store.clone(),
        store.clone(),
        Arc::new(tenants),
    );
    let (linked, more) = service.backfill(&t, Provider::HubSpot, None).await.unwrap();
    assert_eq!((linked, more), (2, false));
    assert_eq!(store.links_for_contact(&t, "c0").await.unwrap().len(), 1);
    assert_eq!(store.links_for_contact(&t, "c2").await.unwrap().len(), 1);
    assert!(store.links_for_contact(&t, "c1").await.unwrap().is_empty());
    let issues = store.issues(&t, "c1").await.unwrap();
    assert_eq!(issues.len(), 1, "the refused contact shows why");
    assert_eq!(store.stats(&t, Provider::HubSpot).await.unwrap().errors, 1);
}
