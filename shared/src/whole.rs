//! Whole numbers as JSON carries them. JSON has one number type: `7`, `7.0` and `7e0` are the
//! same number, and JSON Schema (so our OpenAPI document) counts each as an integer, but serde's
//! integer types take only the first. These read all three, for the integers that outside
//! input carries (`#[serde(deserialize_with = ...)]`), within the range every JSON reader holds
//! exactly: ±(2^53 - 1). (Past it, `7.0`-style numbers are not exact, and an integer literal
//! beyond 64 bits reaches us as one.)

use serde::{Deserialize, Deserializer};
use serde_json::Number;

/// The largest integer JSON carries exactly: 2^53 - 1 (JavaScript's `MAX_SAFE_INTEGER`).
pub const MAX_SAFE: i64 = (1 << 53) - 1;

/// The whole number `n` is, if it is one within `min..=max` (a range within ±[`MAX_SAFE`]).
pub fn of(n: &Number, min: i64, max: i64) -> Option<i64> {
    let v = if let Some(i) = n.as_i64() {
        i
    } else if n.as_u64().is_some() {
        return None; // above i64::MAX
    } else {
        let f = n.as_f64()?;
        if f.fract() != 0.0 || f.abs() > MAX_SAFE as f64 {
            return None;
        }
        f as i64
    };
    (min.max(-MAX_SAFE)..=max.min(MAX_SAFE))
        .contains(&v)
        .then_some(v)
}

/// The OpenAPI schema of a [`natural`] number: an integer from 0 to [`MAX_SAFE`].
pub fn natural_schema() -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .maximum(Some(MAX_SAFE))
}

/// The [`natural`] number `n` is, if it is one.
pub fn natural_of(n: &Number) -> Option<u64> {
    of(n, 0, MAX_SAFE).map(|v| v as u64)
}

fn read<'de, D: Deserializer<'de>>(d: D, min: i64, max: i64) -> Result<i64, D::Error> {
    let n = Number::deserialize(d)?;
    of(&n, min, max).ok_or_else(|| {
        serde::de::Error::custom(format!("{n} is not a whole number from {min} to {max}"))
    })
}

fn read_opt<'de, D: Deserializer<'de>>(d: D, min: i64, max: i64) -> Result<Option<i64>, D::Error> {
    match Option::<Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => of(&n, min, max).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("{n} is not a whole number from {min} to {max}"))
        }),
    }
}

/// A natural number, 0 to [`MAX_SAFE`]: an id (HubSpot's and Pipedrive's are far below), a
/// version.
pub fn natural<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    read(d, 0, MAX_SAFE).map(|v| v as u64)
}

/// An optional [`natural`] number (`null` or absent is none).
pub fn opt_natural<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    read_opt(d, 0, MAX_SAFE).map(|v| v.map(|v| v as u64))
}

/// Any integer within ±[`MAX_SAFE`], e.g. a time in milliseconds.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    read(d, -MAX_SAFE, MAX_SAFE)
}

/// An optional count: 0 to 2^32 - 1.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    read_opt(d, 0, u32::MAX.into()).map(|v| v.map(|v| v as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn a_whole_number_is_one_whatever_its_spelling() {
        assert_eq!(of(&n("7"), 0, 10), Some(7));
        assert_eq!(of(&n("7.0"), 0, 10), Some(7));
        assert_eq!(of(&n("7e0"), 0, 10), Some(7));
        assert_eq!(of(&n("-3.0"), -5, 0), Some(-3));
        assert_eq!(of(&n("7.5"), 0, 10), None);
        assert_eq!(of(&n("11"), 0, 10), None);
        assert_eq!(of(&n("-1"), 0, 10), None);
    }

    #[test]
    fn the_safe_range_holds_at_both_ends_whatever_the_spelling() {
        let (min, max) = (i64::MIN, i64::MAX);
        assert_eq!(of(&n("9007199254740991"), min, max), Some(MAX_SAFE));
        assert_eq!(of(&n("9007199254740991.0"), min, max), Some(MAX_SAFE));
        assert_eq!(of(&n("-9007199254740991"), min, max), Some(-MAX_SAFE));
        assert_eq!(of(&n("9007199254740992"), min, max), None);
        assert_eq!(of(&n("9007199254740992.0"), min, max), None);
        assert_eq!(of(&n("9223372036854775807"), min, max), None);
        assert_eq!(of(&n("18446744073709551616"), min, max), None);
        // Beyond i64, serde_json reads an integer literal as a float: still refused.
        assert_eq!(of(&n("-9223372036854775809"), min, max), None);
        assert_eq!(of(&n("-1e300"), min, max), None);
    }
}
