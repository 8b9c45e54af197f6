use super::*;
use crate::domain::{FieldRule, Winner};
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

/// No field rules: every field two-way under the policy.
static NO_RULES: FieldRules = FieldRules(std::collections::BTreeMap::new());

fn input<'a>(app: AppSide<'a>, crm: CrmSide<'a>, base: Option<&'a ContactFields>) -> PlanInput<'a> {
    PlanInput {
        provider: Provider::HubSpot,
        app,
        crm,
        base,
        policy: ConflictPolicy::CrmWins,
        rules: &NO_RULES,
        app_modified: None,
        crm_modified: None,
        support: FieldSupport::ALL,
        now: now(),
        overwritten: None,
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
fn a_cleared_email_never_wins_a_conflict_and_the_log_says_what_was_written() {
    // App email "a", CRM email cleared, base "b": both changed, the CRM wins by policy, but a
    // contact keeps its email: the app's value is written to the CRM and logged as the winner.
    let base = fields("b@x.io", "Ann");
    let app = fields("a@x.io", "Ann");
    let crm = ContactFields {
        email: None,
        ..base.clone()
    };
    let p = plan(&input(
        AppSide::Live(&app),
        CrmSide::Live(&crm),
        Some(&base),
    ));
    assert_eq!(p.conflicts.len(), 1);
    let c = &p.conflicts[0];
    assert_eq!(c.field, Field::Email);
    assert_eq!(c.resolved_value.as_deref(), Some("a@x.io"));
    assert_eq!(c.winner, Side::App);
    let CrmAction::Update { patch } = &p.crm else {
        panic!("expected the email to be written to the CRM: {:?}", p.crm)
    };
    assert_eq!(patch.0[&Field::Email].as_deref(), Some("a@x.io"));
    assert_eq!(p.app, AppAction::None);
    assert_eq!(p.new_base.email.as_deref(), Some("a@x.io"));
}

#[test]
fn values_are_compared_normalised() {
    let base = fields("a@x.io", "Ann");
    let app = fields(" A@X.io ", "Ann ");
    let p = plan(&input(
        AppSide::Live(&app),
        CrmSide::Live(&base),
        Some(&base),
    ));
    assert!(p.is_noop(), "{p:?}");
    assert_eq!(p.new_base, base);
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

#[test]
fn a_crm_edit_our_write_overwrote_comes_back_as_a_logged_conflict() {
    // The app changed "Ann" to "Anna"; our write of "Anna" to the CRM replaced a CRM user's
    // "Annie" made after our read. Everything agrees on "Anna" now, but the user's edit lost.
    let agreed = fields("a@x.io", "Anna");
    let lost = FieldPatch(
        [(Field::FirstName, Some("Annie".to_string()))]
            .into_iter()
            .collect(),
    );
    let p = plan(&PlanInput {
        overwritten: Some(&lost),
        ..input(
            AppSide::Live(&agreed),
            CrmSide::Live(&agreed),
            Some(&agreed),
        )
    });
    assert_eq!(p.conflicts.len(), 1);
    let x = &p.conflicts[0];
    assert_eq!(x.field, Field::FirstName);
    assert_eq!(x.app_value.as_deref(), Some("Anna"));
    assert_eq!(x.crm_value.as_deref(), Some("Annie"));
    assert_eq!(x.winner, Side::Crm);
    // The CRM wins: the user's value is written back to the CRM and to the app.
    let expected = FieldPatch(
        [(Field::FirstName, Some("Annie".to_string()))]
            .into_iter()
            .collect(),
    );
    assert_eq!(
        p.crm,
        CrmAction::Update {
            patch: expected.clone()
        }
    );
    assert_eq!(p.app, AppAction::Update { patch: expected });
    assert_eq!(p.new_base.first_name.as_deref(), Some("Annie"));

    // The app wins: nothing is written, and the log still says the user's value lost.
    let p = plan(&PlanInput {
        overwritten: Some(&lost),
        policy: ConflictPolicy::AppWins,
        ..input(
            AppSide::Live(&agreed),
            CrmSide::Live(&agreed),
            Some(&agreed),
        )
    });
    assert!(p.is_noop());
    assert_eq!(p.conflicts.len(), 1);
    assert_eq!(p.conflicts[0].winner, Side::App);
    assert_eq!(p.conflicts[0].crm_value.as_deref(), Some("Annie"));
}

// ---- properties ----

/// Field values with the variants real inputs have: absent, empty, blank (also non-breaking
/// space), mixed case, surrounding whitespace and non-ASCII text. A small alphabet, so that sides
/// often agree, differ only by normalisation, or collide with the base.
fn value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        1 => prop::sample::select(vec!["", " ", "\t", "\u{a0}", " \u{3000}"]).prop_map(|s| Some(s.to_string())),
        4 => "[abAB]{1,2}".prop_map(Some),
        2 => "[ \t]?[abAB][ \t]?".prop_map(Some),
        2 => prop::sample::select(vec!["Zoë", "ZOË", "zoë", "Ærø", "ß", "SS", "名前", "e\u{301}", "é"])
            .prop_map(|s| Some(s.to_string())),
    ]
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

/// Rules for any of the fields but the email (which always syncs both ways).
fn rules() -> impl Strategy<Value = FieldRules> {
    let rule = (
        prop_oneof![
            2 => Just(Direction::TwoWay),
            1 => Just(Direction::AppToCrms),
            1 => Just(Direction::CrmsToApp),
            1 => Just(Direction::Off),
        ],
        proptest::option::of(prop_oneof![
            Just(Winner::App),
            Just(Winner::Crm),
            Just(Winner::Newest)
        ]),
    )
        .prop_map(|(direction, winner)| FieldRule { direction, winner });
    proptest::collection::btree_map(prop::sample::select(Field::ALL[1..].to_vec()), rule, 0..=5)
        .prop_map(FieldRules)
}

fn policy() -> impl Strategy<Value = ConflictPolicy> {
    prop_oneof![Just(ConflictPolicy::CrmWins), Just(ConflictPolicy::AppWins)]
}

fn support() -> impl Strategy<Value = FieldSupport> {
    any::<bool>().prop_map(|pronouns| FieldSupport { pronouns })
}

/// Which state a side is in (its fields are generated separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Missing,
    Live,
    Gone,
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![1 => Just(State::Missing), 3 => Just(State::Live), 1 => Just(State::Gone)]
}

/// Every input the engine can see.
#[derive(Debug, Clone)]
struct Case {
    app_state: State,
    app: ContactFields,
    crm_state: State,
    crm: ContactFields,
    base: Option<ContactFields>,
    policy: ConflictPolicy,
    support: FieldSupport,
    rules: FieldRules,
    /// Which side changed last (`None`: unknown, or at the same time).
    app_newer: Option<bool>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (state(), contact_fields(), state(), contact_fields()),
        proptest::option::of(contact_fields()),
        policy(),
        support(),
        rules(),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(
            |((app_state, app, crm_state, crm), base, policy, support, rules, app_newer)| Case {
                app_state,
                app,
                crm_state,
                crm,
                base,
                policy,
                support,
                rules,
                app_newer,
            },
        )
}

impl Case {
    fn input(&self) -> PlanInput<'_> {
        PlanInput {
            provider: Provider::Pipedrive,
            app: match self.app_state {
                State::Missing => AppSide::Missing,
                State::Live => AppSide::Live(&self.app),
                State::Gone => AppSide::Deleted,
            },
            crm: match self.crm_state {
                State::Missing => CrmSide::Missing,
                State::Live => CrmSide::Live(&self.crm),
                State::Gone => CrmSide::Archived,
            },
            base: self.base.as_ref(),
            policy: self.policy,
            rules: &self.rules,
            app_modified: self.app_newer.map(|newer| {
                if newer {
                    now()
                } else {
                    now() - chrono::Duration::seconds(1)
                }
            }),
            crm_modified: self
                .app_newer
                .map(|_| now() - chrono::Duration::milliseconds(500)),
            support: self.support,
            now: now(),
            overwritten: None,
        }
    }

    fn direction(&self, f: Field) -> Direction {
        self.rules.rule(f).direction
    }

    fn normalized(&self) -> Case {
        Case {
            app: self.app.clone().normalized(),
            crm: self.crm.clone().normalized(),
            base: self.base.clone().map(ContactFields::normalized),
            ..self.clone()
        }
    }

    /// The state after the plan's writes.
    fn after(&self, p: &SyncPlan) -> Case {
        let mut next = self.normalized();
        match &p.app {
            AppAction::None => {}
            AppAction::Create { fields } => {
                next.app_state = State::Live;
                next.app = fields.clone();
            }
            AppAction::Update { patch } => next.app.apply(patch),
        }
        match &p.crm {
            CrmAction::None => {}
            CrmAction::Create { fields } => {
                next.crm_state = State::Live;
                next.crm = fields.clone();
            }
            CrmAction::Update { patch } => next.crm.apply(patch),
            CrmAction::Archive => next.crm_state = State::Gone,
        }
        next.base = Some(p.new_base.clone());
        next
    }
}

fn written(p: &SyncPlan) -> Vec<(Side, Field)> {
    let mut out = Vec::new();
    if let AppAction::Update { patch } = &p.app {
        out.extend(patch.fields().map(|f| (Side::App, f)));
    }
    if let CrmAction::Update { patch } = &p.crm {
        out.extend(patch.fields().map(|f| (Side::Crm, f)));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Normalising twice is normalising once, and the engine decides on normalised values.
    #[test]
    fn normalisation_is_idempotent_and_changes_no_decision(c in case()) {
        let once = c.app.clone().normalized();
        prop_assert_eq!(once.clone().normalized(), once);
        prop_assert_eq!(plan(&c.input()), plan(&c.normalized().input()));
    }

    /// Planning again after applying a synced plan writes nothing, in every side state, and
    /// both sides then hold the new base on every supported field.
    #[test]
    fn plan_then_replan_writes_nothing(c in case()) {
        let first = plan(&c.input());
        if first.link != LinkOutcome::Synced {
            return Ok(());
        }
        let next = c.after(&first);
        let second = plan(&next.input());
        prop_assert!(second.is_noop(), "second plan wrote: {:?}", second);
        prop_assert!(second.conflicts.is_empty());
        prop_assert_eq!(&second.new_base, &first.new_base);
        for f in Field::ALL {
            if c.support.supports(f) && c.direction(f) == Direction::TwoWay {
                prop_assert_eq!(next.app.get(f), first.new_base.get(f), "{:?}", f);
                prop_assert_eq!(next.crm.get(f), first.new_base.get(f), "{:?}", f);
            }
        }
    }

    /// Cut off after the CRM write (the app write lost its race or never ran): re-planning
    /// from the base stored in between writes nothing more to the CRM and the same to the app,
    /// with the conflicts the CRM write did not settle (those are logged with the base in
    /// between), so the retry neither undoes our write nor sees a false conflict.
    #[test]
    fn a_plan_cut_off_after_its_crm_write_replans_the_rest(c in case()) {
        let c = c.normalized();
        let first = plan(&c.input());
        let (CrmAction::Update { patch }, AppAction::Update { patch: app_patch }) = (&first.crm, &first.app) else {
            return Ok(());
        };
        let mut crm = c.crm.clone();
        crm.apply(patch);
        let mid = base_after_crm_write(c.base.as_ref(), &c.app, &crm, c.support);
        let cut = Case { crm, base: Some(mid), ..c.clone() };
        let second = plan(&cut.input());
        prop_assert_eq!(&second.crm, &CrmAction::None, "{:?}", second);
        prop_assert_eq!(&second.app, &AppAction::Update { patch: app_patch.clone() });
        // A field that is off keeps whatever base it has; between the writes it is the value
        // both sides hold, if they agree: no decision reads it while the field is off.
        for f in Field::ALL.into_iter().filter(|f| c.direction(*f) != Direction::Off) {
            prop_assert_eq!(second.new_base.get(f), first.new_base.get(f), "{:?}", f);
        }
        let fields = |p: &SyncPlan| p.conflicts.iter().map(|c| (c.field, c.winner)).collect::<Vec<_>>();
        let unsettled: Vec<_> = fields(&first).into_iter().filter(|(f, _)| !patch.contains(*f)).collect();
        prop_assert_eq!(fields(&second), unsettled);
    }

    /// A deleted side is never recreated, and a deleted app contact is never written; a CRM
    /// record is archived only when it was linked.
    #[test]
    fn nothing_gone_comes_back(c in case()) {
        let p = plan(&c.input());
        if c.app_state == State::Gone {
            prop_assert_eq!(&p.app, &AppAction::None);
            prop_assert!(matches!(p.crm, CrmAction::None | CrmAction::Archive));
            prop_assert_eq!(p.crm == CrmAction::Archive, c.crm_state == State::Live && c.base.is_some());
            prop_assert_eq!(p.link, LinkOutcome::Tombstone);
        }
        if c.base.is_some() && c.crm_state != State::Live && c.app_state != State::Missing {
            prop_assert!(p.is_noop(), "{:?}", p);
            prop_assert_eq!(p.link, LinkOutcome::Tombstone);
        }
        if c.crm_state == State::Gone {
            prop_assert!(!matches!(p.crm, CrmAction::Create { .. }), "recreated: {:?}", p);
        }
        if c.app_state == State::Missing && c.crm_state == State::Live && c.crm.clone().normalized().email.is_none() {
            prop_assert!(p.is_noop());
            prop_assert_eq!(p.link, LinkOutcome::Skip);
        }
    }

    /// A change on one side only is never lost: it reaches the other side, untouched.
    #[test]
    fn one_sided_change_is_never_lost(base in contact_fields(), edited in contact_fields(), app_side in any::<bool>(), policy in policy()) {
        let (base, mut edited) = (base.normalized(), edited.normalized());
        // A contact never loses its email: an edit that clears it keeps it instead.
        if edited.email.is_none() {
            edited.email = base.email.clone();
        }
        let (app, crm) = if app_side { (edited.clone(), base.clone()) } else { (base.clone(), edited.clone()) };
        let c = Case { app_state: State::Live, app, crm_state: State::Live, crm, base: Some(base), policy, support: FieldSupport::ALL, rules: FieldRules::default(), app_newer: None };
        let p = plan(&c.input());
        prop_assert!(p.conflicts.is_empty());
        let next = c.after(&p);
        prop_assert_eq!(&next.app, &edited);
        prop_assert_eq!(&next.crm, &edited);
        prop_assert_eq!(&p.new_base, &edited);
    }

    /// Exactly the fields changed on both sides to different values are conflicts, and each
    /// record says what was written: both sides and the base end at `resolved_value`, which is
    /// the recorded winner's value.
    #[test]
    fn the_conflict_log_matches_what_was_written(c in case()) {
        let mut c = c;
        c.app_state = State::Live;
        c.crm_state = State::Live;
        let n = c.normalized();
        let base = n.base.clone().unwrap_or_default();
        let p = plan(&c.input());
        let next = c.after(&p);
        for f in Field::ALL {
            let (a, cr, b) = (n.app.get(f), n.crm.get(f), base.get(f));
            let expected = c.support.supports(f) && c.direction(f) == Direction::TwoWay && a != cr && a != b && cr != b;
            let found = p.conflicts.iter().find(|x| x.field == f);
            prop_assert_eq!(found.is_some(), expected, "field {:?}", f);
            let Some(x) = found else { continue };
            prop_assert_eq!(x.app_value.as_deref(), a);
            prop_assert_eq!(x.crm_value.as_deref(), cr);
            prop_assert_eq!(x.base_value.as_deref(), b);
            let resolved = x.resolved_value.as_deref();
            prop_assert_eq!(next.app.get(f), resolved, "{:?}", f);
            prop_assert_eq!(next.crm.get(f), resolved, "{:?}", f);
            prop_assert_eq!(p.new_base.get(f), resolved, "{:?}", f);
            let winners_value = match x.winner { Side::App => a, Side::Crm => cr };
            prop_assert_eq!(resolved, winners_value);
            // The field's winner (its rule's, else the policy's) decides.
            let by_policy = c.rules.rule(f).winner(c.policy, c.app_newer);
            // The policy decides, except that a cleared email never wins.
            let cleared_email = f == Field::Email && (match by_policy { Side::App => a, Side::Crm => cr }).is_none();
            prop_assert_eq!(x.winner == by_policy, !cleared_email);
        }
    }

    /// A CRM user's value our write overwrote is never lost silently: both sides and the base
    /// end at it, or a conflict records it as the CRM's value and its loss; a value the record
    /// holds anyway changes nothing. And the plan still writes no value a side holds.
    #[test]
    fn an_overwritten_crm_edit_is_restored_or_logged(c in case(), field in prop::sample::select(Field::ALL.to_vec()), lost in value()) {
        let mut c = c;
        c.app_state = State::Live;
        c.crm_state = State::Live;
        let n = c.normalized();
        let patch = FieldPatch([(field, lost.clone())].into_iter().collect());
        let p = plan(&PlanInput { overwritten: Some(&patch), ..c.input() });
        let mut normal = ContactFields::default();
        normal.set(field, lost);
        let lost = normal.get(field);
        if !c.support.supports(field) || lost == n.crm.get(field) || c.direction(field) != Direction::TwoWay {
            prop_assert_eq!(p, plan(&c.input()));
            return Ok(());
        }
        let next = c.after(&p);
        let logged = p.conflicts.iter().find(|x| x.field == field);
        match logged {
            Some(x) => {
                prop_assert_eq!(x.crm_value.as_deref(), lost);
                prop_assert_eq!(next.app.get(field), x.resolved_value.as_deref());
                prop_assert_eq!(next.crm.get(field), x.resolved_value.as_deref());
            }
            None => {
                prop_assert_eq!(next.app.get(field), lost);
                prop_assert_eq!(next.crm.get(field), lost);
                prop_assert_eq!(n.app.get(field), lost, "restored without a conflict only when the app agrees");
            }
        }
        prop_assert_eq!(next.app.get(field), p.new_base.get(field));
        for (side, f) in written(&p) {
            let (current, w) = match (side, &p.app, &p.crm) {
                (Side::App, AppAction::Update { patch }, _) => (n.app.get(f), patch),
                (Side::Crm, _, CrmAction::Update { patch }) => (n.crm.get(f), patch),
                _ => unreachable!(),
            };
            prop_assert_ne!(current, w.0[&f].as_deref(), "{:?} {:?}", side, f);
        }
    }

    /// Sides that already agree are never written to, whatever the base says: echoes of our
    /// own writes cost nothing.
    #[test]
    fn sides_that_agree_are_never_written(c in case(), fresh in any::<bool>()) {
        let mut c = c;
        c.app_state = State::Live;
        c.crm_state = State::Live;
        c.crm = c.app.clone();
        if fresh {
            c.base = None;
        }
        let p = plan(&c.input());
        prop_assert!(p.is_noop(), "{:?}", p);
        prop_assert!(p.conflicts.is_empty());
        prop_assert_eq!(p.link, LinkOutcome::Synced);
    }

    /// Every write changes its target: a value a side already holds is never sent to it.
    #[test]
    fn no_write_repeats_the_current_value(c in case()) {
        let n = c.normalized();
        let p = plan(&c.input());
        for (side, f) in written(&p) {
            let (current, patch) = match (side, &p.app, &p.crm) {
                (Side::App, AppAction::Update { patch }, _) => (n.app.get(f), patch),
                (Side::Crm, _, CrmAction::Update { patch }) => (n.crm.get(f), patch),
                _ => unreachable!(),
            };
            prop_assert_ne!(current, patch.0[&f].as_deref(), "{:?} {:?}", side, f);
        }
    }

    /// An unsupported pronouns field is never written anywhere, the base keeps what was last
    /// agreed, and a warning says why whenever the app has pronouns.
    #[test]
    fn unsupported_pronouns_are_never_written(c in case()) {
        let mut c = c;
        c.support = FieldSupport { pronouns: false };
        let p = plan(&c.input());
        prop_assert!(!written(&p).iter().any(|(_, f)| *f == Field::Pronouns));
        if let CrmAction::Create { fields } = &p.crm {
            prop_assert_eq!(fields.pronouns.as_deref(), None);
        }
        if p.link == LinkOutcome::Synced && c.app_state == State::Live && c.crm_state == State::Live {
            let agreed = c.base.clone().map(ContactFields::normalized).and_then(|b| b.pronouns);
            prop_assert_eq!(p.new_base.pronouns.as_deref(), agreed.as_deref());
        }
        let app_has = c.app_state == State::Live && c.app.clone().normalized().pronouns.is_some();
        let creates = matches!(p.crm, CrmAction::Create { .. });
        let writes_crm = creates || (c.app_state == State::Live && c.crm_state == State::Live);
        if app_has && writes_crm {
            prop_assert_eq!(p.warnings.clone(), vec![pronouns_warning(Provider::Pipedrive)]);
        }
    }

    /// Each field moves only the ways its rule allows: a field that is off is never written,
    /// an app-owned one never to the app, a CRM-owned one never to the CRM; and a change by the
    /// owner (from the base) reaches the other side, while the other side's edit stays put.
    #[test]
    fn writes_follow_each_fields_rule(c in case()) {
        let n = c.normalized();
        let p = plan(&c.input());
        let to_app: Vec<Field> = match &p.app {
            AppAction::Update { patch } => patch.fields().collect(),
            AppAction::Create { fields } => Field::ALL.into_iter().filter(|f| fields.get(*f).is_some()).collect(),
            AppAction::None => Vec::new(),
        };
        let to_crm: Vec<Field> = match &p.crm {
            CrmAction::Update { patch } => patch.fields().collect(),
            CrmAction::Create { fields } => Field::ALL.into_iter().filter(|f| fields.get(*f).is_some()).collect(),
            _ => Vec::new(),
        };
        for f in Field::ALL {
            let d = c.direction(f);
            if matches!(d, Direction::Off | Direction::AppToCrms) {
                prop_assert!(!to_app.contains(&f), "{:?} written to the app under {:?}: {:?}", f, d, p);
            }
            if matches!(d, Direction::Off | Direction::CrmsToApp) {
                prop_assert!(!to_crm.contains(&f), "{:?} written to the CRM under {:?}: {:?}", f, d, p);
            }
            if d != Direction::TwoWay {
                prop_assert!(!p.conflicts.iter().any(|x| x.field == f), "a conflict on a one-way field");
            }
        }
        if c.app_state == State::Live && c.crm_state == State::Live && p.link == LinkOutcome::Synced {
            let base = n.base.clone().unwrap_or_default();
            let next = c.after(&p);
            for f in Field::ALL.into_iter().filter(|f| c.support.supports(*f)) {
                let (a, cr, b) = (n.app.get(f), n.crm.get(f), base.get(f));
                match c.direction(f) {
                    Direction::AppToCrms if a != b => prop_assert_eq!(next.crm.get(f), a),
                    Direction::CrmsToApp if cr != b => prop_assert_eq!(next.app.get(f), cr),
                    Direction::TwoWay => {}
                    _ => {
                        prop_assert_eq!(next.app.get(f), a, "{:?}", f);
                        prop_assert_eq!(next.crm.get(f), cr, "{:?}", f);
                    }
                }
            }
        }
    }
}
