//! A tenant's field rules: per field, which way values flow and who wins a conflict. Input to
//! the pure engine; the default is two-way with the tenant's conflict policy (the CRM wins).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConflictPolicy, Field, Side};

/// Which way a field's values flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Both ways: a change on either side reaches the other.
    #[default]
    TwoWay,
    /// The app owns it: its changes reach the CRMs; a CRM user's edit stays in that CRM.
    AppToCrms,
    /// The CRMs own it: their changes reach the app; an app edit stays in the app.
    CrmsToApp,
    /// Not synced at all, either way.
    Off,
}

/// Who wins when a two-way field changed on both sides to different values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    App,
    Crm,
    /// The side changed last (the app contact's last edit against the CRM record's last
    /// modification); the CRM when either time is unknown or they are equal.
    Newest,
}

/// One field's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldRule {
    #[serde(default)]
    pub direction: Direction,
    /// `None`: the tenant's conflict policy.
    #[serde(default)]
    pub winner: Option<Winner>,
}

/// A tenant's rules, by field; a field without one is two-way under the tenant's policy. The
/// email always is: records are matched by it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct FieldRules(pub BTreeMap<Field, FieldRule>);

impl FieldRules {
    /// The rule of `field` (the email's is always the default).
    pub fn rule(&self, field: Field) -> FieldRule {
        if field == Field::Email {
            return FieldRule::default();
        }
        self.0.get(&field).copied().unwrap_or_default()
    }

    /// Whether the app's values of `field` reach the CRMs.
    pub fn app_to_crm(&self, field: Field) -> bool {
        matches!(
            self.rule(field).direction,
            Direction::TwoWay | Direction::AppToCrms
        )
    }

    /// Whether the CRMs' values of `field` reach the app.
    pub fn crm_to_app(&self, field: Field) -> bool {
        matches!(
            self.rule(field).direction,
            Direction::TwoWay | Direction::CrmsToApp
        )
    }

    /// A rule set a tenant may store: none for the email.
    pub fn validate(&self) -> Result<(), String> {
        if self.0.contains_key(&Field::Email) {
            return Err("the email always syncs both ways: records are matched by it".into());
        }
        Ok(())
    }
}

impl FieldRule {
    /// The side that wins a conflict on this field, given the tenant's policy and which side
    /// changed last (`app_newer`: `None` when unknown or equal).
    pub fn winner(&self, policy: ConflictPolicy, app_newer: Option<bool>) -> Side {
        match self.winner {
            Some(Winner::App) => Side::App,
            Some(Winner::Crm) => Side::Crm,
            Some(Winner::Newest) => match app_newer {
                Some(true) => Side::App,
                _ => Side::Crm,
            },
            None => match policy {
                ConflictPolicy::CrmWins => Side::Crm,
                ConflictPolicy::AppWins => Side::App,
            },
        }
    }
}
