//! Erasure: the person removed from the app, both CRMs and the sync state, with only anonymous
//! tombstones left, which a late event of the record cannot bring back.

use super::*;
use crate::ports::PersonalData;

#[tokio::test]
async fn an_erased_contact_is_gone_everywhere_and_stays_gone() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "gone@x.io", "Gone").await;
    create_app_contact(&f, "c2", "stays@x.io", "Stays").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    f.service.handle(&app_event("c2")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    f.store
        .set_issue(
            &tenant(),
            "c1",
            Provider::HubSpot,
            Some("gone@x.io was refused"),
        )
        .await
        .unwrap();
    assert!(!f.service.history(&tenant(), "c1").await.unwrap().is_empty());

    let erase = ChangeEvent::new(tenant(), Origin::App, "c1", ChangeKind::Erase);
    f.service.handle(&erase).await.unwrap();

    assert!(
        f.hubspot.record(&hs.external_id).is_none(),
        "deleted for good in HubSpot"
    );
    assert!(
        f.pipedrive.record(&pd.external_id).is_none(),
        "and in Pipedrive"
    );
    assert!(f.store.get(&tenant(), "c1").await.unwrap().is_none());
    assert!(f.service.history(&tenant(), "c1").await.unwrap().is_empty());
    for l in f.store.links_for_contact(&tenant(), "c1").await.unwrap() {
        assert_eq!(l.status, LinkStatus::Deleted);
        assert_eq!(
            l.base,
            ContactFields::default(),
            "a tombstone holds no values"
        );
    }
    assert!(f.store.issues(&tenant(), "c1").await.unwrap().is_empty());
    // The other contact is untouched.
    assert!(f.store.get(&tenant(), "c2").await.unwrap().is_some());
    assert_eq!(f.service.history(&tenant(), "c2").await.unwrap().len(), 1);

    // A late event of the erased record imports nothing; erasing again does nothing more.
    let late = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        hs.external_id.clone(),
        ChangeKind::Upsert,
    );
    f.service.handle(&late).await.unwrap();
    f.service.handle(&erase).await.unwrap();
    let all = f.store.list(&tenant(), None, 10).await.unwrap().items;
    assert_eq!(
        all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c2"]
    );
}

#[tokio::test]
async fn a_crms_privacy_deletion_erases_the_person_everywhere() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "gdpr@x.io", "Gdpr").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    let privacy = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        hs.external_id.clone(),
        ChangeKind::Erase,
    );
    f.service.handle(&privacy).await.unwrap();
    assert!(f.pipedrive.record(&pd.external_id).is_none());
    assert!(f.store.get(&tenant(), "c1").await.unwrap().is_none());
    // A record never linked: nothing of ours to erase.
    let unknown = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        "424242",
        ChangeKind::Erase,
    );
    f.service.handle(&unknown).await.unwrap();
}

#[tokio::test]
async fn the_email_is_replaced_wherever_else_the_state_names_it() {
    let f = fixture(true).await;
    f.store
        .record_outcome(
            &tenant(),
            Provider::Pipedrive,
            Err("a person with email Gone@X.io exists".into()),
            0,
        )
        .await
        .unwrap();
    f.store
        .erase_contact_state(&tenant(), "c1", Some("gone@x.io"))
        .await
        .unwrap();
    let stats = f.store.stats(&tenant(), Provider::Pipedrive).await.unwrap();
    assert_eq!(
        stats.last_error.as_deref(),
        Some("a person with email [erased] exists")
    );
}
