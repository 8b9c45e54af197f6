//! A custom field deleted in a CRM's settings reads as empty there: it must not count as a
//! user clearing the value (which would clear it in the app and in the other CRM).

use super::*;

fn hubspot_event(id: &str) -> ChangeEvent {
    ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        id,
        ChangeKind::Upsert,
    )
}

/// HubSpot's pronouns property is deleted, then a user edits the first name there: the edit
/// flows, pronouns stay in the app and in Pipedrive, and HubSpot's pronouns are left out with
/// a warning until the field is set up again.
#[tokio::test]
async fn a_deleted_field_is_not_read_as_cleared() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let pd = link(&f, "c1", Provider::Pipedrive).await;

    f.hubspot.user_set_pronouns_field(None);
    let mut patch = FieldPatch::default();
    patch.insert(Field::FirstName, Some("Anne".into()));
    f.hubspot.user_edit(&hs.external_id, &patch);
    f.service
        .handle(&hubspot_event(&hs.external_id))
        .await
        .unwrap();

    let c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c1.fields.first_name.as_deref(), Some("Anne"));
    assert_eq!(
        c1.fields.pronouns.as_deref(),
        Some("they/them"),
        "not cleared"
    );
    let pd_record = f.pipedrive.record(&pd.external_id).unwrap();
    assert_eq!(pd_record.fields.first_name.as_deref(), Some("Anne"));
    assert_eq!(pd_record.fields.pronouns.as_deref(), Some("they/them"));
    assert_eq!(
        f.store
            .field_key(&tenant(), Provider::HubSpot, CustomField::Pronouns)
            .await
            .unwrap(),
        None,
        "the stale key is forgotten"
    );
    let hs = link(&f, "c1", Provider::HubSpot).await;
    assert_eq!(
        hs.warnings,
        vec![engine::pronouns_warning(Provider::HubSpot)]
    );
    assert_eq!(
        hs.base.pronouns, None,
        "HubSpot's pronouns are unknown, not empty"
    );
    assert!(f.store.conflicts(&tenant(), 10).await.unwrap().is_empty());

    // Set up again: the app's pronouns reach HubSpot.
    f.service.setup_pronouns(&tenant()).await.unwrap();
    f.service.handle(&app_event("c1")).await.unwrap();
    let record = f.hubspot.record(&hs.external_id).unwrap();
    assert_eq!(record.fields.pronouns.as_deref(), Some("they/them"));
}

/// A user clearing pronouns in HubSpot (the field still there) is a real clear: it flows.
#[tokio::test]
async fn a_real_clear_still_flows() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let mut patch = FieldPatch::default();
    patch.insert(Field::Pronouns, None);
    f.hubspot.user_edit(&hs.external_id, &patch);
    f.service
        .handle(&hubspot_event(&hs.external_id))
        .await
        .unwrap();
    let c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c1.fields.pronouns, None);
    assert!(link(&f, "c1", Provider::HubSpot).await.warnings.is_empty());
}

/// The app's pronouns change after HubSpot's field was deleted: the write HubSpot refuses (a
/// 400 for a property it does not have) finds the field gone, and the rest still syncs.
#[tokio::test]
async fn a_write_to_a_deleted_field_syncs_the_rest() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    f.hubspot.user_set_pronouns_field(None);
    let mut c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    c1.fields.pronouns = Some("she/her".into());
    c1.fields.last_name = Some("Lee".into());
    f.store.update(&c1).await.unwrap();
    f.service.handle(&app_event("c1")).await.unwrap();
    let record = f.hubspot.record(&hs.external_id).unwrap();
    assert_eq!(record.fields.last_name.as_deref(), Some("Lee"));
    let hs = link(&f, "c1", Provider::HubSpot).await;
    assert_eq!(hs.status, LinkStatus::Synced);
    assert_eq!(
        hs.warnings,
        vec![engine::pronouns_warning(Provider::HubSpot)]
    );
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    let pd_record = f.pipedrive.record(&pd.external_id).unwrap();
    assert_eq!(pd_record.fields.pronouns.as_deref(), Some("she/her"));
}
