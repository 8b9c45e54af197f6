//! When a sync first saw each value users wrote: the first time a worker stored it as agreed
//! (a link's base), wrote it to the app, or wrote it to a CRM. Values are unique per user
//! operation, so a value names its write. Two writes of a field were concurrent when neither
//! had been seen by a sync before the other was made.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use shared::domain::{ContactFields, Field, FieldPatch};

#[derive(Default)]
pub struct Seen(Mutex<BTreeMap<(Field, String), DateTime<Utc>>>);

impl Seen {
    fn saw(&self, field: Field, value: Option<&str>, at: DateTime<Utc>) {
        if let Some(v) = value {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((field, v.to_string()))
                .or_insert(at);
        }
    }

    /// A worker stored or wrote these values at `at`.
    pub fn fields(&self, fields: &ContactFields, at: DateTime<Utc>) {
        for field in Field::ALL {
            self.saw(field, fields.get(field), at);
        }
    }

    /// A worker wrote `patch` to a CRM at `at`.
    pub fn patch(&self, patch: &FieldPatch, at: DateTime<Utc>) {
        for (field, value) in &patch.0 {
            self.saw(*field, value.as_deref(), at);
        }
    }

    /// When a sync first saw `value` in `field`.
    pub fn first(&self, field: Field, value: Option<&str>) -> Option<DateTime<Utc>> {
        let v = value?;
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(field, v.to_string()))
            .copied()
    }
}
