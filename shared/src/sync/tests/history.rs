//! The contact's history: an entry per sync that wrote, met a conflict or failed, with what
//! set it off; none for an echo or a replay that changes nothing.

use super::*;
use crate::domain::{DecisionAction, HistoryEntry};

async fn history(f: &Fixture, id: &str) -> Vec<HistoryEntry> {
    f.service.history(&tenant(), id).await.unwrap()
}

fn crm_event(provider: Provider, id: &str) -> ChangeEvent {
    ChangeEvent::new(tenant(), Origin::Crm(provider), id, ChangeKind::Upsert)
}

fn hubspot_part(e: &HistoryEntry) -> &crate::domain::CrmDecision {
    e.crms
        .iter()
        .find(|d| d.provider == Provider::HubSpot)
        .expect("a HubSpot part")
}

#[tokio::test]
async fn an_app_edit_and_a_crm_edit_each_leave_one_entry_and_echoes_none() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let h = history(&f, "c1").await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0].trigger, Trigger::App);
    let hs_link = link(&f, "c1", Provider::HubSpot).await;
    let created = hubspot_part(&h[0]);
    assert_eq!(created.action, DecisionAction::Created);
    assert_eq!(
        created.record_id.as_deref(),
        Some(hs_link.external_id.as_str())
    );
    let first = created
        .crm_writes
        .iter()
        .find(|c| c.field == Field::FirstName)
        .unwrap();
    assert_eq!(
        (first.old.as_deref(), first.new.as_deref()),
        (None, Some("Ann"))
    );
    assert_eq!(h[0].crms.len(), 2, "both CRMs created: {h:?}");

    // A HubSpot user's edit: written to the app and to Pipedrive, old → new.
    let mut patch = FieldPatch::default();
    patch.insert(Field::LastName, Some("Smith".into()));
    f.hubspot.user_edit(&hs_link.external_id, &patch);
    f.service
        .handle(&crm_event(Provider::HubSpot, &hs_link.external_id))
        .await
        .unwrap();
    let h = history(&f, "c1").await;
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0].trigger, Trigger::Webhook, "newest first");
    let from_hubspot = hubspot_part(&h[0]);
    assert_eq!(from_hubspot.action, DecisionAction::Updated);
    assert_eq!(from_hubspot.app_writes.len(), 1);
    assert_eq!(from_hubspot.app_writes[0].field, Field::LastName);
    assert_eq!(from_hubspot.app_writes[0].old, None);
    assert_eq!(from_hubspot.app_writes[0].new.as_deref(), Some("Smith"));
    let to_pipedrive = h[0]
        .crms
        .iter()
        .find(|d| d.provider == Provider::Pipedrive)
        .unwrap();
    assert_eq!(to_pipedrive.crm_writes[0].field, Field::LastName);

    // The echoes of our writes, and the same events again, add nothing.
    let pd_link = link(&f, "c1", Provider::Pipedrive).await;
    f.service
        .handle(&crm_event(Provider::Pipedrive, &pd_link.external_id))
        .await
        .unwrap();
    f.service.handle(&app_event("c1")).await.unwrap();
    assert_eq!(history(&f, "c1").await.len(), 2);
}

#[tokio::test]
async fn a_conflict_says_who_won_and_a_failure_says_why() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs_link = link(&f, "c1", Provider::HubSpot).await;
    // Both sides change the first name before either syncs: the CRM wins by default.
    let mut c = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    c.fields.first_name = Some("Annie".into());
    c.last_app_modified = Utc::now();
    f.store.update(&c).await.unwrap();
    let mut patch = FieldPatch::default();
    patch.insert(Field::FirstName, Some("Anna".into()));
    f.hubspot.user_edit(&hs_link.external_id, &patch);
    f.service
        .handle(&crm_event(Provider::HubSpot, &hs_link.external_id))
        .await
        .unwrap();
    let h = history(&f, "c1").await;
    let part = hubspot_part(&h[0]);
    assert_eq!(part.conflicts.len(), 1, "{h:?}");
    let conflict = &part.conflicts[0];
    assert_eq!(conflict.field, Field::FirstName);
    assert_eq!(conflict.app_value.as_deref(), Some("Annie"));
    assert_eq!(conflict.crm_value.as_deref(), Some("Anna"));
    assert_eq!(conflict.winner, Side::Crm);

    // Pipedrive down: the entry says so (and the job fails, to be retried).
    f.pipedrive.fail_with(Some(CrmError::Unavailable {
        provider: Provider::Pipedrive,
        message: "down for maintenance".into(),
    }));
    let mut c = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    c.fields.job_title = Some("Engineer".into());
    c.last_app_modified = Utc::now();
    f.store.update(&c).await.unwrap();
    assert!(f.service.handle(&app_event("c1")).await.is_err());
    let h = history(&f, "c1").await;
    let failed = h[0]
        .crms
        .iter()
        .find(|d| d.provider == Provider::Pipedrive)
        .unwrap();
    assert_eq!(failed.action, DecisionAction::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("down for maintenance"),
        "{failed:?}"
    );
    // HubSpot's part of the same sync went through and is there too.
    assert_eq!(hubspot_part(&h[0]).crm_writes[0].field, Field::JobTitle);
}

#[tokio::test]
async fn a_replayed_job_and_sync_nows_retry_say_so() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    let mut replayed = app_event("c1");
    replayed.replayed = true;
    f.service.handle(&replayed).await.unwrap();
    assert_eq!(history(&f, "c1").await[0].trigger, Trigger::Replay);
    let Job::Change(again) = Job::Change(app_event("c1")).replayed() else {
        unreachable!()
    };
    assert!(again.replayed);

    create_app_contact(&f, "c2", "bo@x.io", "Bo").await;
    let mut retry = app_event("c2");
    retry.provenance = Some("sync_now".into());
    f.service.handle(&retry).await.unwrap();
    assert_eq!(history(&f, "c2").await[0].trigger, Trigger::SyncNow);
}
