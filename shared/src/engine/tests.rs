use super::*;
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn fields(email: &str, first: &str) -> ContactFields {
    ContactFields {
        email: Some(email.into()),
        first_name: Some(first.into()),
        ..Default::default()
    }
}

fn input<'a>(app: AppSide<'a>, crm: CrmSide<'a>, base: Option<&'a ContactFields>) -> PlanInput<'a> {
    PlanInput {
        provider: Provider::HubSpot,
        app,
        crm,
        base,
        policy: ConflictPolicy::CrmWins,
        support: FieldSupport::ALL,
        now: now(),
    }
}

fn apply_app(app: &ContactFields, action: &AppAction) -> ContactFields {
    match action {
        AppAction::None => app.clone(),
        AppAction::Create { fields } => fields.clone(),
        AppAction::Update { patch } => {
            let mut out = app.clone();
            out.apply(patch);
            out
        }
    }
}

fn apply_crm(crm: &ContactFields, action: &CrmAction) -> ContactFields {
    match action {
        CrmAction::None | CrmAction::Archive => crm.clone(),
        CrmAction::Create { fields } => fields.clone(),
        CrmAction::Update { patch } => {
            let mut out = crm.clone();
            out.apply(patch);
            out
        }
    }
}

#[test]
fn identical_values_write_nothing() {
    let a = fields("a@x.io", "Ann");
    let p = plan(&input(AppSide::Live(&a), CrmSide::Live(&a), Some(&a)));
    assert!(p.is_noop());
    assert!(p.conflicts.is_empty());
    assert_eq!(p.new_base, a);
}

#[test]
fn app_only_change_flows_to_crm() {
    let base = fields("a@x.io", "Ann");
    let app = fields("a@x.io", "Anna");
    let p = plan(&input(
        AppSide::Live(&app),
        CrmSide::Live(&base),
        Some(&base),
    ));
    assert_eq!(p.app, AppAction::None);
    let CrmAction::Update { patch } = &p.crm else {
        panic!("expected an update, got {:?}", p.crm)
    };
    assert_eq!(patch.0.len(), 1);
    assert_eq!(patch.0[&Field::FirstName].as_deref(), Some("Anna"));
    assert_eq!(p.new_base, app);
}

#[test]
fn crm_only_change_flows_to_app() {
    let base = fields("a@x.io", "Ann");
    let mut crm = base.clone();
    crm.set(Field::Phone, Some("+1 555".into()));
    let p = plan(&input(
        AppSide::Live(&base),
        CrmSide::Live(&crm),
        Some(&base),
    ));
    assert_eq!(p.crm, CrmAction::None);
    let AppAction::Update { patch } = &p.app else {
        panic!("expected an update")
    };
    assert_eq!(patch.0[&Field::Phone].as_deref(), Some("+1 555"));
}

#[test]
fn conflict_crm_wins_by_default_and_is_recorded() {
    let base = fields("a@x.io", "Ann");
    let app = fields("a@x.io", "Annie");
    let crm = fields("a@x.io", "Anne");
    let p = plan(&input(
        AppSide::Live(&app),
        CrmSide::Live(&crm),
        Some(&base),
    ));
    assert_eq!(p.conflicts.len(), 1);
    let c = &p.conflicts[0];
    assert_eq!(c.field, Field::FirstName);
    assert_eq!(c.app_value.as_deref(), Some("Annie"));
    assert_eq!(c.crm_value.as_deref(), Some("Anne"));
    assert_eq!(c.base_value.as_deref(), Some("Ann"));
    assert_eq!(c.winner, Side::Crm);
    assert_eq!(c.at, now());
    assert_eq!(p.new_base.first_name.as_deref(), Some("Anne"));
    assert_eq!(p.crm, CrmAction::None);
    assert!(matches!(p.app, AppAction::Update { .. }));
}

#[test]
fn conflict_app_wins_under_app_policy() {
    let base = fields("a@x.io", "Ann");
    let app = fields("a@x.io", "Annie");
    let crm = fields("a@x.io", "Anne");
    let mut i = input(AppSide::Live(&app), CrmSide::Live(&crm), Some(&base));
    i.policy = ConflictPolicy::AppWins;
    let p = plan(&i);
    assert_eq!(p.conflicts[0].winner, Side::App);
    assert_eq!(p.new_base.first_name.as_deref(), Some("Annie"));
    assert_eq!(p.app, AppAction::None);
}

#[test]
fn new_app_contact_is_created_in_crm() {
    let app = fields("a@x.io", "Ann");
    let p = plan(&input(AppSide::Live(&app), CrmSide::Missing, None));
    assert_eq!(
        p.crm,
        CrmAction::Create {
            fields: app.clone()
        }
    );
    assert_eq!(p.link, LinkOutcome::Synced);
    assert_eq!(p.new_base, app);
}

#[test]
fn new_crm_record_is_imported_only_with_email() {
    let crm = fields("b@x.io", "Bo");
    let p = plan(&input(AppSide::Missing, CrmSide::Live(&crm), None));
    assert_eq!(
        p.app,
        AppAction::Create {
            fields: crm.clone()
        }
    );
    let no_email = ContactFields {
        first_name: Some("Bo".into()),
        ..Default::default()
    };
    let p = plan(&input(AppSide::Missing, CrmSide::Live(&no_email), None));
    assert_eq!(p.link, LinkOutcome::Skip);
    assert!(p.is_noop());
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn app_delete_archives_a_linked_crm_record() {
    let base = fields("a@x.io", "Ann");
    let p = plan(&input(AppSide::Deleted, CrmSide::Live(&base), Some(&base)));
    assert_eq!(p.crm, CrmAction::Archive);
    assert_eq!(p.link, LinkOutcome::Tombstone);
    // Never linked: nothing to archive.
    let p = plan(&input(AppSide::Deleted, CrmSide::Live(&base), None));
    assert_eq!(p.crm, CrmAction::None);
}

#[test]
fn crm_delete_keeps_app_contact_and_never_recreates() {
    let base = fields("a@x.io", "Ann");
    for crm in [CrmSide::Archived, CrmSide::Missing] {
        let p = plan(&input(AppSide::Live(&base), crm, Some(&base)));
        assert!(p.is_noop());
        assert_eq!(p.link, LinkOutcome::Tombstone);
    }
}

#[test]
fn missing_pronouns_field_leaves_pronouns_out_with_a_warning() {
    let mut app = fields("a@x.io", "Ann");
    app.set(Field::Pronouns, Some("she/her".into()));
    let mut i = input(AppSide::Live(&app), CrmSide::Missing, None);
    i.support = FieldSupport { pronouns: false };
    let p = plan(&i);
    let CrmAction::Create { fields: created } = &p.crm else {
        panic!("expected create")
    };
    assert_eq!(created.pronouns, None);
    assert_eq!(created.first_name.as_deref(), Some("Ann"));
    assert_eq!(p.warnings, vec![pronouns_warning(Provider::HubSpot)]);

    // Linked contact: other fields still sync, pronouns are not written.
    let base = fields("a@x.io", "Ann");
    let mut app2 = fields("a@x.io", "Anna");
    app2.set(Field::Pronouns, Some("she/her".into()));
    let mut i = input(AppSide::Live(&app2), CrmSide::Live(&base), Some(&base));
    i.support = FieldSupport { pronouns: false };
    let p = plan(&i);
    let CrmAction::Update { patch } = &p.crm else {
        panic!("expected update")
    };
    assert!(!patch.0.contains_key(&Field::Pronouns));
    assert!(patch.0.contains_key(&Field::FirstName));
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn email_is_never_cleared() {
    let base = fields("a@x.io", "Ann");
    let crm = ContactFields {
        email: None,
        ..base.clone()
    };
    let p = plan(&input(
        AppSide::Live(&base),
        CrmSide::Live(&crm),
        Some(&base),
    ));
    assert_eq!(p.app, AppAction::None);
    let CrmAction::Update { patch } = &p.crm else {
        panic!("expected the email to be written back")
    };
    assert_eq!(patch.0[&Field::Email].as_deref(), Some("a@x.io"));
}

// ---- properties ----

fn value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![Just(None), "[a-c]{1,2}".prop_map(Some)]
}

fn contact_fields() -> impl Strategy<Value = ContactFields> {
    (value(), value(), value(), value(), value(), value()).prop_map(|(e, f, l, p, j, r)| {
        ContactFields {
            email: e,
            first_name: f,
            last_name: l,
            phone: p,
            job_title: j,
            pronouns: r,
        }
    })
}

fn policy() -> impl Strategy<Value = ConflictPolicy> {
    prop_oneof![Just(ConflictPolicy::CrmWins), Just(ConflictPolicy::AppWins)]
}

fn support() -> impl Strategy<Value = FieldSupport> {
    any::<bool>().prop_map(|pronouns| FieldSupport { pronouns })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Planning again after applying a plan yields no writes.
    #[test]
    fn plan_is_idempotent(app in contact_fields(), crm in contact_fields(), base in proptest::option::of(contact_fields()), policy in policy(), support in support()) {
        let mut i = input(AppSide::Live(&app), CrmSide::Live(&crm), base.as_ref());
        i.policy = policy;
        i.support = support;
        let first = plan(&i);
        let app2 = apply_app(&app, &first.app);
        let crm2 = apply_crm(&crm, &first.crm);
        let mut i2 = input(AppSide::Live(&app2), CrmSide::Live(&crm2), Some(&first.new_base));
        i2.policy = policy;
        i2.support = support;
        let second = plan(&i2);
        prop_assert!(second.is_noop(), "second plan wrote: {:?}", second);
        prop_assert!(second.conflicts.is_empty());
        // Both sides agree on every supported field afterwards.
        for f in Field::ALL {
            if support.supports(f) {
                prop_assert_eq!(app2.get(f), crm2.get(f));
            }
        }
    }

    /// The same holds for a first sync where one side does not exist yet.
    #[test]
    fn create_then_plan_is_noop(fields in contact_fields(), from_app in any::<bool>(), support in support()) {
        let i = if from_app {
            input(AppSide::Live(&fields), CrmSide::Missing, None)
        } else {
            input(AppSide::Missing, CrmSide::Live(&fields), None)
        };
        let mut i = i;
        i.support = support;
        let first = plan(&i);
        if first.link != LinkOutcome::Synced {
            prop_assert!(first.is_noop());
            return Ok(());
        }
        let (app2, crm2) = match (&first.app, &first.crm) {
            (AppAction::Create { fields: created }, CrmAction::None) => (created.clone(), fields.clone()),
            (AppAction::None, CrmAction::Create { fields: created }) => (fields.clone(), created.clone()),
            other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        };
        let mut i2 = input(AppSide::Live(&app2), CrmSide::Live(&crm2), Some(&first.new_base));
        i2.support = support;
        prop_assert!(plan(&i2).is_noop());
    }

    /// A change on one side only is never lost: it reaches the other side, untouched.
    #[test]
    fn one_sided_change_is_never_lost(base in contact_fields(), edited in contact_fields(), app_side in any::<bool>(), policy in policy()) {
        // A contact never loses its email: exclude edits that clear it.
        prop_assume!(edited.email.is_some() || base.email.is_none());
        let (app, crm) = if app_side { (edited.clone(), base.clone()) } else { (base.clone(), edited.clone()) };
        let mut i = input(AppSide::Live(&app), CrmSide::Live(&crm), Some(&base));
        i.policy = policy;
        let p = plan(&i);
        prop_assert!(p.conflicts.is_empty());
        let app2 = apply_app(&app, &p.app);
        let crm2 = apply_crm(&crm, &p.crm);
        prop_assert_eq!(&app2, &edited);
        prop_assert_eq!(&crm2, &edited);
        prop_assert_eq!(&p.new_base, &edited);
    }

    /// Every field changed on both sides to different values is recorded as a conflict.
    #[test]
    fn conflicts_are_always_recorded(app in contact_fields(), crm in contact_fields(), base in contact_fields(), policy in policy()) {
        let mut i = input(AppSide::Live(&app), CrmSide::Live(&crm), Some(&base));
        i.policy = policy;
        let p = plan(&i);
        for f in Field::ALL {
            let (a, c, b) = (app.get(f), crm.get(f), base.get(f));
            let expected = a != c && a != b && c != b;
            let found = p.conflicts.iter().find(|x| x.field == f);
            prop_assert_eq!(found.is_some(), expected, "field {:?}", f);
            if let Some(x) = found {
                prop_assert_eq!(x.app_value.as_deref(), a);
                prop_assert_eq!(x.crm_value.as_deref(), c);
                let want = match policy { ConflictPolicy::CrmWins => Side::Crm, ConflictPolicy::AppWins => Side::App };
                prop_assert_eq!(x.winner, want);
            }
        }
    }

    /// Identical values are never written, whatever the base says.
    #[test]
    fn matching_values_are_never_written(app in contact_fields(), crm in contact_fields(), base in proptest::option::of(contact_fields())) {
        let p = plan(&input(AppSide::Live(&app), CrmSide::Live(&crm), base.as_ref()));
        if let AppAction::Update { patch } = &p.app {
            for f in patch.fields() { prop_assert_ne!(app.get(f), patch.0[&f].as_deref()); }
        }
        if let CrmAction::Update { patch } = &p.crm {
            for f in patch.fields() { prop_assert_ne!(crm.get(f), patch.0[&f].as_deref()); }
        }
    }

    /// An unsupported pronouns field is never written to the CRM.
    #[test]
    fn unsupported_pronouns_never_written(app in contact_fields(), crm in contact_fields(), base in proptest::option::of(contact_fields())) {
        let mut i = input(AppSide::Live(&app), CrmSide::Live(&crm), base.as_ref());
        i.support = FieldSupport { pronouns: false };
        let p = plan(&i);
        if let CrmAction::Update { patch } = &p.crm {
            prop_assert!(!patch.0.contains_key(&Field::Pronouns));
        }
        if let AppAction::Update { patch } = &p.app {
            prop_assert!(!patch.0.contains_key(&Field::Pronouns));
        }
        prop_assert_eq!(p.warnings.is_empty(), app.pronouns.is_none());
    }
}
