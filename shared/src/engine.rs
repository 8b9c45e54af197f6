//! The sync decision: a pure function of the app contact, the CRM record and the link's base.
//!
//! No I/O happens here. [`plan`] does a field-level three-way merge:
//! - a field changed on one side only flows to the other side;
//! - a field changed on both sides to different values is a [`Conflict`], resolved by the
//!   tenant's [`ConflictPolicy`] and recorded with both values and the winner;
//! - a field whose values already match is never written (echo suppression);
//! - a CRM user's value that our own write overwrote (reported by the user's change event) is
//!   the CRM's side of that field: it flows back, or loses a conflict that says so;
//! - a tenant's [`FieldRules`] narrow that per field: a one-way field moves only from its
//!   owner's side when that side changed it (the other side's edit stays where it was made), a
//!   field that is off is never written, and a two-way field's conflicts go to its winner.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Conflict, ConflictPolicy, ContactFields, Direction, Field, FieldPatch, FieldRules,
    FieldSupport, Provider, Side,
};

/// The app side of a contact as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppSide<'a> {
    Missing,
    Live(&'a ContactFields),
    Deleted,
}

/// The CRM side of a contact as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrmSide<'a> {
    Missing,
    Live(&'a ContactFields),
    Archived,
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub provider: Provider,
    pub app: AppSide<'a>,
    pub crm: CrmSide<'a>,
    /// The values both sides last agreed on; `None` when the pair was never synced.
    pub base: Option<&'a ContactFields>,
    pub policy: ConflictPolicy,
    /// The tenant's field rules: which way each field flows, who wins its conflicts.
    pub rules: &'a FieldRules,
    /// When the app contact and the CRM record last changed (for a `newest` winner).
    pub app_modified: Option<DateTime<Utc>>,
    pub crm_modified: Option<DateTime<Utc>>,
    pub support: FieldSupport,
    pub now: DateTime<Utc>,
    /// CRM users' values our recent writes to the record overwrote (see
    /// [`RecentWrites::overwritten`](crate::domain::RecentWrites::overwritten)); `None`: none
    /// known.
    pub overwritten: Option<&'a FieldPatch>,
}

/// What to do to the CRM record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CrmAction {
    None,
    Create { fields: ContactFields },
    Update { patch: FieldPatch },
    Archive,
}

/// What to do to the app contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AppAction {
    None,
    Create { fields: ContactFields },
    Update { patch: FieldPatch },
}

/// What happens to the link after the plan is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkOutcome {
    /// Both sides hold `new_base` afterwards.
    Synced,
    /// One side is gone; the link becomes a tombstone and nothing is recreated.
    Tombstone,
    /// Nothing to link (e.g. a CRM record without email and no app contact).
    Skip,
}

/// The decision: writes on each side, the new base, conflicts and warnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPlan {
    pub app: AppAction,
    pub crm: CrmAction,
    pub link: LinkOutcome,
    pub new_base: ContactFields,
    pub conflicts: Vec<Conflict>,
    pub warnings: Vec<String>,
}

impl SyncPlan {
    /// True when the plan writes nothing on either side.
    pub fn is_noop(&self) -> bool {
        self.app == AppAction::None && self.crm == CrmAction::None
    }
}

/// The warning recorded when pronouns cannot be stored in a CRM.
pub fn pronouns_warning(provider: Provider) -> String {
    format!(
        "pronouns field is not set up in {}; pronouns are not synced there (run the pronouns setup)",
        provider.display_name()
    )
}

/// Decides what to write where. Pure: same input, same plan. Every value is normalised first
/// (see [`ContactFields::normalized`]), so `plan(x) == plan(normalize(x))`.
pub fn plan(input: &PlanInput<'_>) -> SyncPlan {
    let app = match input.app {
        AppSide::Live(f) => Some(f.clone().normalized()),
        _ => None,
    };
    let crm = match input.crm {
        CrmSide::Live(f) => Some(f.clone().normalized()),
        _ => None,
    };
    let base = input.base.map(|b| b.clone().normalized());
    let overwritten = input.overwritten.map(|o| {
        let mut out = FieldPatch::default();
        for (field, value) in &o.0 {
            let mut f = ContactFields::default();
            f.set(*field, value.clone());
            out.insert(*field, f.get(*field).map(str::to_owned));
        }
        out
    });
    decide(&PlanInput {
        app: match (&app, input.app) {
            (Some(f), _) => AppSide::Live(f),
            (None, other) => other,
        },
        crm: match (&crm, input.crm) {
            (Some(f), _) => CrmSide::Live(f),
            (None, other) => other,
        },
        base: base.as_ref(),
        overwritten: overwritten.as_ref(),
        ..*input
    })
}

/// [`plan`] on normalised values.
fn decide(input: &PlanInput<'_>) -> SyncPlan {
    let mut warnings = Vec::new();
    let base_or_empty = input.base.cloned().unwrap_or_default();
    let noop = |link, new_base| SyncPlan {
        app: AppAction::None,
        crm: CrmAction::None,
        link,
        new_base,
        conflicts: Vec::new(),
        warnings: Vec::new(),
    };

    match (input.app, input.crm) {
        (AppSide::Deleted, CrmSide::Live(_)) if input.base.is_some() => SyncPlan {
            crm: CrmAction::Archive,
            ..noop(LinkOutcome::Tombstone, base_or_empty)
        },
        (AppSide::Deleted, _) => noop(LinkOutcome::Tombstone, base_or_empty),
        // The CRM record of an existing link is gone: keep the app contact, never recreate.
        (AppSide::Live(_), CrmSide::Archived) => noop(LinkOutcome::Tombstone, base_or_empty),
        (AppSide::Live(_), CrmSide::Missing) if input.base.is_some() => {
            noop(LinkOutcome::Tombstone, base_or_empty)
        }
        (AppSide::Missing, CrmSide::Archived | CrmSide::Missing) => {
            noop(LinkOutcome::Skip, base_or_empty)
        }
        (AppSide::Live(app), CrmSide::Missing) => {
            let mut fields = ContactFields::default();
            for field in Field::ALL {
                if !input.support.supports(field) {
                    if app.get(field).is_some() {
                        warnings.push(pronouns_warning(input.provider));
                    }
                } else if input.rules.app_to_crm(field) {
                    fields.set(field, app.get(field).map(str::to_owned));
                }
            }
            SyncPlan {
                app: AppAction::None,
                crm: CrmAction::Create {
                    fields: fields.clone(),
                },
                link: LinkOutcome::Synced,
                new_base: fields,
                conflicts: Vec::new(),
                warnings,
            }
        }
        (AppSide::Missing, CrmSide::Live(crm)) => {
            if crm.email.is_none() {
                return SyncPlan {
                    warnings: vec![format!(
                        "{} record has no email; not imported into the app",
                        input.provider.display_name()
                    )],
                    ..noop(LinkOutcome::Skip, base_or_empty)
                };
            }
            let mut fields = ContactFields::default();
            for field in Field::ALL {
                if input.support.supports(field) && input.rules.crm_to_app(field) {
                    fields.set(field, crm.get(field).map(str::to_owned));
                }
            }
            SyncPlan {
                app: AppAction::Create {
                    fields: fields.clone(),
                },
                crm: CrmAction::None,
                link: LinkOutcome::Synced,
                new_base: fields,
                conflicts: Vec::new(),
                warnings,
            }
        }
        (AppSide::Live(app), CrmSide::Live(crm)) => merge(input, app, crm, &base_or_empty),
    }
}

/// The base that is true once a plan's CRM write is done but its app write is not: a field the
/// app and the CRM now hold alike is agreed on; any other keeps the old base. Stored before
/// the app write, it keeps a retry after a failed app write from mistaking our own CRM write
/// for a CRM user's change (which would overwrite a newer app edit as a "conflict").
pub fn base_after_crm_write(
    base: Option<&ContactFields>,
    app: &ContactFields,
    crm_after: &ContactFields,
    support: FieldSupport,
) -> ContactFields {
    let app = app.clone().normalized();
    let crm = crm_after.clone().normalized();
    let base = base.cloned().unwrap_or_default().normalized();
    let mut out = ContactFields::default();
    for field in Field::ALL {
        let agreed = support.supports(field) && app.get(field) == crm.get(field);
        let value = if agreed {
            app.get(field)
        } else {
            base.get(field)
        };
        out.set(field, value.map(str::to_owned));
    }
    out
}

/// `value`, unless it would clear the email while `other` keeps one.
fn keeps_email<'v>(
    field: Field,
    value: Option<&'v str>,
    other: Option<&'v str>,
) -> Option<&'v str> {
    if field == Field::Email && value.is_none() {
        other
    } else {
        value
    }
}

fn merge(
    input: &PlanInput<'_>,
    app: &ContactFields,
    crm: &ContactFields,
    base: &ContactFields,
) -> SyncPlan {
    let mut app_patch = FieldPatch::default();
    let mut crm_patch = FieldPatch::default();
    let mut new_base = ContactFields::default();
    let mut conflicts = Vec::new();
    let mut warnings = Vec::new();
    let app_newer = match (input.app_modified, input.crm_modified) {
        (Some(a), Some(c)) if a != c => Some(a > c),
        _ => None,
    };

    for field in Field::ALL {
        let a = app.get(field);
        let b = base.get(field);
        if !input.support.supports(field) {
            // Left out for this provider; the base keeps what was last agreed.
            new_base.set(field, b.map(str::to_owned));
            if a.is_some() {
                warnings.push(pronouns_warning(input.provider));
            }
            continue;
        }
        let c = crm.get(field);
        let rule = input.rules.rule(field);
        // A one-way field moves only from its owner, and only when the owner changed it since
        // the base; a field that is off stays as each side has it.
        let owner = match rule.direction {
            Direction::TwoWay => None,
            Direction::AppToCrms => Some(Side::App),
            Direction::CrmsToApp => Some(Side::Crm),
            Direction::Off => {
                new_base.set(field, b.map(str::to_owned));
                continue;
            }
        };
        if let Some(owner) = owner {
            let (own, other) = match owner {
                Side::App => (a, c),
                Side::Crm => (c, a),
            };
            if own == b {
                new_base.set(field, b.map(str::to_owned));
                continue;
            }
            if other != own {
                let patch = match owner {
                    Side::App => &mut crm_patch,
                    Side::Crm => &mut app_patch,
                };
                patch.insert(field, own.map(str::to_owned));
            }
            new_base.set(field, own.map(str::to_owned));
            continue;
        }
        // A CRM user's value our write overwrote stands for the CRM's side: it was made after
        // the read our write was planned on, so the app's value (what we wrote, or newer) and
        // it were made concurrently, unless they agree.
        let overwritten = input
            .overwritten
            .and_then(|o| o.get(field))
            .map(Option::as_deref)
            .filter(|v| *v != c);
        let mut conflict = |a: Option<&'_ str>, c: Option<&'_ str>| {
            let mut winner = rule.winner(input.policy, app_newer);
            let (won, lost) = match winner {
                Side::Crm => (c, a),
                Side::App => (a, c),
            };
            let value = keeps_email(field, won, lost);
            if value != won {
                winner = winner.other();
            }
            conflicts.push(Conflict {
                field,
                base_value: b.map(str::to_owned),
                app_value: a.map(str::to_owned),
                crm_value: c.map(str::to_owned),
                winner,
                resolved_value: value.map(str::to_owned),
                at: input.now,
            });
            value.map(str::to_owned)
        };
        // A contact always keeps an email: a cleared email is not propagated, and it never wins
        // a conflict (the side that kept a value does, and the log says so).
        let resolved: Option<String> = match overwritten {
            Some(v) if v == a => a.map(str::to_owned),
            Some(v) => conflict(a, v),
            None if a == c => a.map(str::to_owned),
            None if a == b => keeps_email(field, c, a).map(str::to_owned),
            None if c == b => keeps_email(field, a, c).map(str::to_owned),
            None => conflict(a, c),
        };
        let resolved = resolved.as_deref();
        if a != resolved {
            app_patch.insert(field, resolved.map(str::to_owned));
        }
        if c != resolved {
            crm_patch.insert(field, resolved.map(str::to_owned));
        }
        new_base.set(field, resolved.map(str::to_owned));
    }

    SyncPlan {
        app: if app_patch.is_empty() {
            AppAction::None
        } else {
            AppAction::Update { patch: app_patch }
        },
        crm: if crm_patch.is_empty() {
            CrmAction::None
        } else {
            CrmAction::Update { patch: crm_patch }
        },
        link: LinkOutcome::Synced,
        new_base,
        conflicts,
        warnings,
    }
}

#[cfg(test)]
mod tests;
