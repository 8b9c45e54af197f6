//! A record read with its fields' history, against both simulators over HTTP: what a check of
//! our writes sees (HubSpot's `propertiesWithHistory` in the read itself; Pipedrive's person
//! changelog, paged, beside the read).

use chrono::{DateTime, Utc};
use crm_sim::{SimConfig, SimServer};
use serde_json::json;
use shared::crm::hubspot::{HubSpotAuth, HubSpotClient, HubSpotClientConfig};
use shared::crm::pipedrive::{PipedriveAuth, PipedriveClient, PipedriveClientConfig};
use shared::domain::Reported;
use shared::ports::{CrmClient, CrmContext};
use shared::{ContactFields, Field, FieldPatch, TenantId};

async fn sim() -> SimServer {
    let mut config = SimConfig::default();
    config.pipedrive.search_index_lag_ms = 0;
    crm_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn ctx() -> CrmContext {
    CrmContext::new(TenantId::new("t"))
}

fn ann() -> ContactFields {
    ContactFields {
        email: Some("ann@x.io".into()),
        first_name: Some("Ann".into()),
        last_name: Some("Lee".into()),
        ..Default::default()
    }
}

fn first_name(value: &str) -> FieldPatch {
    let mut p = FieldPatch::default();
    p.insert(Field::FirstName, Some(value.into()));
    p
}

fn values(history: &[Reported], field: Field) -> Vec<Option<&str>> {
    history
        .iter()
        .filter(|r| r.field == field)
        .map(|r| r.value.as_deref())
        .collect()
}

fn in_order(history: &[Reported]) -> bool {
    history.windows(2).all(|w| w[0].at <= w[1].at)
}

#[tokio::test]
async fn hubspot_reads_a_record_with_its_property_history_in_one_request() {
    let s = sim().await;
    let c = HubSpotClient::new(
        HubSpotClientConfig::new(s.base_url(), HubSpotAuth::Token("sim-hubspot-token".into())),
        reqwest::Client::new(),
    );
    let created = c.create(&ctx(), &ann()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    s.hubspot
        .ui_update(&created.id, [("firstname", "Early")])
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let read = c.get(&ctx(), &created.id).await.unwrap().unwrap();
    let since: DateTime<Utc> = read.updated_at.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // A user's edit after our read, then our write over it.
    s.hubspot
        .ui_update(&created.id, [("firstname", "Annie")])
        .unwrap();
    c.update(&ctx(), &created.id, &first_name("Anna"))
        .await
        .unwrap();
    let requests = s.hubspot.stats().requests;
    let (record, history) = c
        .get_with_history(&ctx(), &created.id, &[Field::FirstName], since)
        .await
        .unwrap();
    assert_eq!(s.hubspot.stats().requests, requests + 1, "one request");
    assert_eq!(
        record.unwrap().fields.first_name.as_deref(),
        Some("Anna"),
        "the record as it is"
    );
    assert_eq!(
        values(&history, Field::FirstName),
        vec![Some("Early"), Some("Annie"), Some("Anna")],
        "from the value read on: {history:?}"
    );
    assert!(in_order(&history));
    assert!(history.iter().all(|r| r.at >= since));
    // Which were set through the API (ours) and which in the UI.
    let api: Vec<bool> = history.iter().map(|r| r.via_api).collect();
    assert_eq!(api, vec![false, false, true]);
    // Fields not asked for are not reported.
    assert!(values(&history, Field::LastName).is_empty());
    let (gone, none) = c
        .get_with_history(&ctx(), "999999", &[Field::FirstName], since)
        .await
        .unwrap();
    assert!(gone.is_none() && none.is_empty());
}

#[tokio::test]
async fn pipedrive_reads_a_person_with_its_changelog_paged_and_paid_for() {
    let s = sim().await;
    let c = PipedriveClient::new(
        PipedriveClientConfig::new(
            s.base_url(),
            PipedriveAuth::ApiToken("sim-pipedrive-token".into()),
        ),
        reqwest::Client::new(),
    );
    let created = c.create(&ctx(), &ann()).await.unwrap();
    let id: u64 = created.id.parse().unwrap();
    s.pipedrive.ui_update(id, json!({"first_name": "Early"}));
    // The changelog says when in whole seconds: later edits come seconds later.
    s.pipedrive.advance_clock(10);
    let since = s.pipedrive.now();
    // A busy person: more changes than one page holds (each name edit logs the half and the
    // whole name).
    for i in 0..60 {
        s.pipedrive
            .ui_update(id, json!({"last_name": format!("Lee{i}")}));
    }
    // Our read, then a user's edit, then our write over it.
    c.get(&ctx(), &created.id).await.unwrap();
    s.pipedrive.ui_update(id, json!({"first_name": "Annie"}));
    c.update(&ctx(), &created.id, &first_name("Anna"))
        .await
        .unwrap();
    let spent = c.stats().tokens_spent;
    let (record, history) = c
        .get_with_history(
            &ctx(),
            &created.id,
            &[Field::FirstName, Field::LastName],
            since,
        )
        .await
        .unwrap();
    assert_eq!(record.unwrap().fields.first_name.as_deref(), Some("Anna"));
    assert_eq!(
        values(&history, Field::FirstName),
        vec![Some("Annie"), Some("Anna")],
        "not the edit before `since`: {history:?}"
    );
    assert_eq!(values(&history, Field::LastName).len(), 60, "both pages");
    assert!(in_order(&history));
    let first: Vec<bool> = history
        .iter()
        .filter(|r| r.field == Field::FirstName)
        .map(|r| r.via_api)
        .collect();
    assert_eq!(
        first,
        vec![false, true],
        "the user's in the UI, ours through the API"
    );
    // One read (1 token) and two changelog pages (20 each).
    assert_eq!(c.stats().tokens_spent - spent, 41);
    let log = s.pipedrive.request_log();
    let pages: Vec<_> = log
        .iter()
        .filter(|r| r.operation_id.as_deref() == Some("getPersonChangelog"))
        .collect();
    assert_eq!(pages.len(), 2);
    assert!(pages[1].query.as_deref().unwrap_or("").contains("cursor="));
    let (gone, none) = c
        .get_with_history(&ctx(), "999999", &[Field::FirstName], since)
        .await
        .unwrap();
    assert!(gone.is_none() && none.is_empty());
}
