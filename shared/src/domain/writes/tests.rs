//! Tests of our recent writes: what each replaced, what is lost, what is checked.
use super::*;
use chrono::TimeZone;

fn at(s: u32, ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, s).unwrap() + chrono::Duration::milliseconds(ms)
}

fn fields(first: &str) -> ContactFields {
    ContactFields {
        first_name: Some(first.into()),
        ..Default::default()
    }
}

fn patch(first: &str) -> FieldPatch {
    let mut p = FieldPatch::default();
    p.insert(Field::FirstName, Some(first.into()));
    p
}

fn user(value: &str, t: DateTime<Utc>) -> Reported {
    Reported::set(Field::FirstName, Some(value.into()), t)
}

fn lost(w: &RecentWrites, reported: &[Reported], current: &str) -> Option<String> {
    w.overwritten(reported, &fields(current))
        .0
        .get(&Field::FirstName)
        .cloned()
        .flatten()
}

/// Pipedrive says when a write landed in whole seconds, and when a user's edit was made
/// with milliseconds: an edit in the second our write landed in, whose value our write
/// replaced, is overwritten.
#[test]
fn an_edit_in_the_second_our_write_landed_is_overwritten() {
    let w = RecentWrites::default().with(
        CrmWrite::planned(&fields("Old"), Some(at(1, 0)), &patch("Ours"))
            .landed(Some(at(2, 0)), at(9, 0)),
    );
    assert_eq!(
        lost(&w, &[user("Theirs", at(2, 357))], "Ours").as_deref(),
        Some("Theirs")
    );
    // After the second our write landed in, it is a newer edit, not an overwritten one.
    assert_eq!(lost(&w, &[user("Theirs", at(3, 200))], "Ours"), None);
}

/// Only the last value set before a write landed is what it replaced: a user's earlier
/// value that the same user changed again, our own earlier writes, and the value the write
/// read are not overwritten; nor is a value set outside every write's span, or any value
/// while the record no longer holds our last write.
#[test]
fn only_the_value_a_write_replaced_is_overwritten() {
    // We wrote A over O, then B over U (a user's edit after A, read by the second write);
    // times in milliseconds, as HubSpot gives them.
    let w = RecentWrites::default()
        .with(
            CrmWrite::planned(&fields("O"), Some(at(1, 100)), &patch("A"))
                .landed(Some(at(2, 100)), at(9, 0)),
        )
        .with(
            CrmWrite::planned(&fields("U"), Some(at(4, 100)), &patch("B"))
                .landed(Some(at(5, 100)), at(9, 0)),
        );
    // Users' change events: U1 then U, both after A landed and before the second read.
    let events = [user("U1", at(3, 0)), user("U", at(4, 100))];
    assert_eq!(lost(&w, &events, "B"), None, "nothing was overwritten");
    // A user's V landed between our second read and its write: overwritten.
    let mut with_v = events.to_vec();
    with_v.push(user("V", at(4, 500)));
    assert_eq!(lost(&w, &with_v, "B").as_deref(), Some("V"));
    assert!(w.foreign(&with_v));
    // V then W, both before our write: W is what it replaced.
    let mut v_w = with_v.clone();
    v_w.push(user("W", at(4, 700)));
    assert_eq!(lost(&w, &v_w, "B").as_deref(), Some("W"));
    // The record moved on since: a newer change is there to sync instead.
    assert_eq!(lost(&w, &with_v, "Z"), None);
    // Resolved once, it is not reported again.
    let resolved = w.clone().resolve(&{
        let mut p = FieldPatch::default();
        p.insert(Field::FirstName, Some("V".into()));
        p
    });
    assert_eq!(lost(&resolved, &with_v, "B"), None);
    assert!(!resolved.foreign(&with_v));

    // Pipedrive's whole seconds: an edit reported in the second the record we read was
    // modified may have come before that modification; the event alone does not say it
    // was overwritten (the echo or the history will).
    let pd = RecentWrites::default().with(
        CrmWrite::planned(&fields("U"), Some(at(4, 0)), &patch("B"))
            .landed(Some(at(6, 0)), at(9, 0)),
    );
    assert_eq!(lost(&pd, &[user("V", at(4, 500))], "B"), None);
    assert_eq!(
        lost(&pd, &[user("V", at(5, 500))], "B").as_deref(),
        Some("V")
    );
}

/// The record's field history, ours included, says what each write replaced: the value
/// before its own entry, whatever the timestamps (Pipedrive's are whole seconds, so our
/// second read and the first write's landing can share one).
#[test]
fn the_history_says_what_each_write_replaced() {
    let w = RecentWrites::default()
        .with(
            CrmWrite::planned(&fields("O"), Some(at(1, 0)), &patch("A"))
                .landed(Some(at(2, 0)), at(9, 0)),
        )
        .with(
            CrmWrite::planned(&fields("A"), Some(at(2, 0)), &patch("B"))
                .landed(Some(at(2, 0)), at(9, 0)),
        );
    let api = |v: &str| user(v, at(2, 0)).via_api(true);
    let ours = [user("O", at(0, 0)), api("A"), api("B")];
    let replaced = w.replaced_in(&ours);
    assert!(replaced.iter().all(|r| r.replaced_by.is_some()));
    assert_eq!(lost(&w, &replaced, "B"), None, "each replaced what it read");
    // A user's V between our two writes, in the same second: the second replaced it.
    let theirs = [user("O", at(0, 0)), api("A"), user("V", at(2, 0)), api("B")];
    let replaced = w.replaced_in(&theirs);
    assert_eq!(lost(&w, &replaced, "B").as_deref(), Some("V"));
    // A user's edit to the value our second write then sent unchanged is not our entry:
    // nothing was replaced by it.
    let same = [user("O", at(0, 0)), api("A"), user("B", at(2, 0))];
    assert_eq!(lost(&w, &w.replaced_in(&same), "B"), None);
    // The echo of the first write, late: what it replaced is what it read.
    let echo = |before: &str| {
        [Reported::replaced(
            Field::FirstName,
            Some(before.into()),
            at(2, 0),
            Some("A".into()),
        )]
    };
    assert!(!w.foreign(&echo("O")));
    assert!(
        w.foreign(&echo("Q")),
        "a value the first write did not read"
    );
}

/// A landed write stays unchecked until its landing is checked.
#[test]
fn writes_stay_unchecked_until_checked() {
    let w = RecentWrites::default()
        .with(
            CrmWrite::planned(&fields("O"), Some(at(1, 0)), &patch("A"))
                .landed(Some(at(2, 0)), at(9, 0)),
        )
        .with(CrmWrite::planned(&fields("A"), Some(at(3, 0)), &patch("B")).landed(None, at(4, 0)));
    assert_eq!(w.unchecked(), vec![at(2, 0), at(4, 0)]);
    assert_eq!(w.check_since(), Some(at(1, 0)));
    assert_eq!(w.unchecked_fields(), vec![Field::FirstName]);
    let one = w.clone().checked(&[at(2, 0)]);
    assert_eq!(one.unchecked(), vec![at(4, 0)]);
    assert_eq!(one.check_since(), Some(at(3, 0)));
    assert!(!one.checked(&[at(4, 0)]).is_unchecked());
    // Kept: eight at most, checked ones going first.
    let mut many = w;
    for i in 0..20 {
        many = many.with(
            CrmWrite::planned(&fields("x"), Some(at(10 + i, 0)), &patch("y"))
                .landed(Some(at(10 + i, 500)), at(9, 0)),
        );
    }
    assert_eq!(many.writes.len(), 16);
}

/// An echo checks the write it names only if it names every field the write changed
/// (Pipedrive's webhooks leave the standard job title out): else a check of the history will.
#[test]
fn an_echo_checks_a_write_only_for_all_it_changed() {
    let mut both = patch("A");
    both.insert(Field::JobTitle, Some("CEO".into()));
    let w = RecentWrites::default().with(
        CrmWrite::planned(&fields("O"), Some(at(1, 0)), &both).landed(Some(at(2, 0)), at(9, 0)),
    );
    let first = Reported::replaced(
        Field::FirstName,
        Some("O".into()),
        at(2, 0),
        Some("A".into()),
    );
    let job = Reported::replaced(Field::JobTitle, None, at(2, 0), Some("CEO".into()));
    assert!(
        w.clone()
            .confirmed_by(std::slice::from_ref(&first))
            .is_unchecked()
    );
    assert!(!w.clone().confirmed_by(&[first.clone(), job]).is_unchecked());
    // An echo of another write (another value written) checks nothing.
    let other = Reported::replaced(
        Field::FirstName,
        Some("O".into()),
        at(2, 0),
        Some("B".into()),
    );
    assert!(w.confirmed_by(&[other]).is_unchecked());
}

/// A write of ours whose landing could not be confirmed (its answer lost, the record moved
/// on) still makes its value ours, if it was planned before the write that replaced it
/// landed; a later one (the restore of a user's value) does not hide that value.
#[test]
fn a_value_an_earlier_write_of_ours_may_have_put_there_is_ours() {
    let landed = CrmWrite::planned(&fields("O"), Some(at(1, 100)), &patch("B"))
        .landed(Some(at(3, 100)), at(9, 0));
    let history = |before: &str| {
        vec![Reported::replaced(
            Field::FirstName,
            Some(before.into()),
            at(3, 100),
            Some("B".into()),
        )]
    };
    // A (unconfirmed) planned at 2.1, before B landed at 3.1: A is ours.
    let earlier = CrmWrite::planned(&fields("O"), Some(at(2, 100)), &patch("A"));
    let w = RecentWrites::default().with(earlier).with(landed.clone());
    assert!(!w.foreign(&history("A")));
    // The restore of a user's U, planned after B landed, does not make U ours.
    let restore =
        CrmWrite::planned(&fields("B"), Some(at(4, 0)), &patch("U")).restoring(&patch("U"));
    let w = RecentWrites::default().with(landed).with(restore);
    assert!(w.foreign(&history("U")));
}

/// Links stored before writes were kept one by one read as having none.
#[test]
fn a_link_without_writes_has_none_to_check() {
    let w: RecentWrites = serde_json::from_str("{}").unwrap();
    assert!(w.is_empty() && !w.is_unchecked());
    assert_eq!(serde_json::to_string(&w).unwrap(), "{}");
}
