//! `POST /crm/v3/objects/contacts/search`: request validation, filter evaluation, sorting and
//! the 10,000-result paging cap (HubSpot's "CRM search" guide).

use std::borrow::Cow;
use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::properties::{PropertyDef, parse_epoch_ms};
use super::store::{Record, Store};

pub(crate) const MAX_FILTER_GROUPS: usize = 5;
pub(crate) const MAX_FILTERS_PER_GROUP: usize = 6;
pub(crate) const MAX_FILTERS_TOTAL: usize = 18;
pub(crate) const MAX_LIMIT: usize = 200;
pub(crate) const DEFAULT_LIMIT: usize = 10;
pub(crate) const MAX_RESULTS: usize = 10_000;
pub(crate) const MAX_BODY_CHARS: usize = 3_000;

/// Properties matched by the free-text `query`.
const QUERY_PROPERTIES: [&str; 5] = ["email", "firstname", "lastname", "phone", "company"];

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchRequest {
    #[serde(default)]
    pub filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    pub sorts: Vec<Value>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub properties: Option<Vec<String>>,
    #[serde(default)]
    pub limit: Option<Value>,
    #[serde(default)]
    pub after: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FilterGroup {
    #[serde(default)]
    pub filters: Vec<Filter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Filter {
    pub property_name: String,
    pub operator: String,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub high_value: Option<Value>,
    #[serde(default)]
    pub values: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    In,
    NotIn,
    HasProperty,
    NotHasProperty,
    ContainsToken,
    NotContainsToken,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "EQ" => Op::Eq,
            "NEQ" => Op::Neq,
            "LT" => Op::Lt,
            "LTE" => Op::Lte,
            "GT" => Op::Gt,
            "GTE" => Op::Gte,
            "BETWEEN" => Op::Between,
            "IN" => Op::In,
            "NOT_IN" => Op::NotIn,
            "HAS_PROPERTY" => Op::HasProperty,
            "NOT_HAS_PROPERTY" => Op::NotHasProperty,
            "CONTAINS_TOKEN" => Op::ContainsToken,
            "NOT_CONTAINS_TOKEN" => Op::NotContainsToken,
            _ => return None,
        })
    }
}

/// A validated filter.
#[derive(Debug, Clone)]
struct Cond {
    property: String,
    op: Op,
    value: Option<String>,
    high: Option<String>,
    values: Vec<String>,
}

/// A validated search.
#[derive(Debug)]
pub(crate) struct Plan {
    groups: Vec<Vec<Cond>>,
    sort: Option<(String, bool)>,
    query: Option<String>,
    pub properties: Option<Vec<String>>,
    pub limit: usize,
    pub after: usize,
    /// Results a search can page through (HubSpot: 10,000).
    max_results: usize,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn usize_param(v: &Option<Value>, name: &str) -> Result<Option<usize>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| ApiError::validation(format!("{name} must be a non-negative integer"))),
        Some(Value::String(s)) => s.trim().parse::<usize>().map(Some).map_err(|_| {
            ApiError::validation(format!(
                "{name} must be a non-negative integer string, got \"{s}\""
            ))
        }),
        Some(_) => Err(ApiError::validation(format!("{name} must be an integer"))),
    }
}

impl Plan {
    pub fn from_request(req: SearchRequest, max_results: usize) -> Result<Plan, ApiError> {
        if req.filter_groups.len() > MAX_FILTER_GROUPS {
            return Err(ApiError::validation(format!(
                "Too many filter groups: {}. A search may have at most {MAX_FILTER_GROUPS} filterGroups.",
                req.filter_groups.len()
            )));
        }
        let mut total = 0;
        let mut groups = Vec::new();
        for group in req.filter_groups {
            if group.filters.len() > MAX_FILTERS_PER_GROUP {
                return Err(ApiError::validation(format!(
                    "Too many filters in a filter group: {}. A filterGroup may have at most {MAX_FILTERS_PER_GROUP} filters.",
                    group.filters.len()
                )));
            }
            total += group.filters.len();
            let mut conds = Vec::new();
            for f in group.filters {
                let op = Op::parse(&f.operator).ok_or_else(|| {
                    ApiError::validation(format!(
                        "Invalid input JSON: Cannot deserialize value of type `FilterOperator` from String \"{}\"",
                        f.operator
                    ))
                })?;
                let value = f.value.as_ref().and_then(scalar);
                let high = f.high_value.as_ref().and_then(scalar);
                let values: Vec<String> = f
                    .values
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(scalar)
                    .collect();
                let needs_value = matches!(
                    op,
                    Op::Eq
                        | Op::Neq
                        | Op::Lt
                        | Op::Lte
                        | Op::Gt
                        | Op::Gte
                        | Op::Between
                        | Op::ContainsToken
                        | Op::NotContainsToken
                );
                if needs_value && value.is_none() {
                    return Err(ApiError::validation(format!(
                        "Filter on \"{}\" with operator {} requires a value",
                        f.property_name, f.operator
                    )));
                }
                if op == Op::Between && high.is_none() {
                    return Err(ApiError::validation(format!(
                        "Filter on \"{}\" with operator BETWEEN requires highValue",
                        f.property_name
                    )));
                }
                if matches!(op, Op::In | Op::NotIn) && values.is_empty() {
                    return Err(ApiError::validation(format!(
                        "Filter on \"{}\" with operator {} requires values",
                        f.property_name, f.operator
                    )));
                }
                conds.push(Cond {
                    property: f.property_name,
                    op,
                    value,
                    high,
                    values,
                });
            }
            groups.push(conds);
        }
        if total > MAX_FILTERS_TOTAL {
            return Err(ApiError::validation(format!(
                "Too many filters: {total}. A search may have at most {MAX_FILTERS_TOTAL} filters in total."
            )));
        }
        if req.sorts.len() > 1 {
            return Err(ApiError::validation(
                "Only one sort is supported per search request.",
            ));
        }
        let sort = match req.sorts.first() {
            None => None,
            Some(Value::String(s)) => Some(match s.strip_prefix('-') {
                Some(name) => (name.to_string(), false),
                None => (s.clone(), true),
            }),
            Some(Value::Object(o)) => {
                let name = o
                    .get("propertyName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::validation("sorts[0].propertyName is required"))?;
                let asc = match o.get("direction").and_then(Value::as_str) {
                    None | Some("ASCENDING") => true,
                    Some("DESCENDING") => false,
                    Some(other) => {
                        return Err(ApiError::validation(format!(
                            "Invalid sort direction \"{other}\": use ASCENDING or DESCENDING"
                        )));
                    }
                };
                Some((name.to_string(), asc))
            }
            Some(_) => return Err(ApiError::validation("Invalid sort")),
        };
        let limit = usize_param(&req.limit, "limit")?.unwrap_or(DEFAULT_LIMIT);
        if limit > MAX_LIMIT {
            return Err(ApiError::validation(format!(
                "limit must be less than or equal to {MAX_LIMIT}, got {limit}"
            )));
        }
        let after = usize_param(&req.after, "after")?.unwrap_or(0);
        if after >= max_results {
            return Err(ApiError::validation(format!(
                "Search results are limited to {max_results} total results; paging beyond {max_results} is not allowed (after={after})."
            )));
        }
        Ok(Plan {
            groups,
            sort,
            query: req.query.filter(|q| !q.trim().is_empty()),
            properties: req.properties.filter(|p| !p.is_empty()),
            limit,
            after,
            max_results,
        })
    }

    /// Runs the search over what the index shows at `now` (records not indexed yet are
    /// missing, records whose update is not indexed yet show their earlier values; `None`:
    /// every write indexed at once). Returns `(total, page records as indexed, next after)`.
    pub fn run<'s>(
        &self,
        store: &'s Store,
        now: Option<DateTime<Utc>>,
    ) -> (usize, Vec<Cow<'s, Record>>, Option<usize>) {
        let mut hits: Vec<Cow<'s, Record>> = store
            .contacts
            .values()
            .filter(|r| !r.archived())
            .filter_map(|r| r.indexed(now))
            .filter(|r| self.matches(store, r))
            .collect();
        match &self.sort {
            Some((name, asc)) => {
                let def = store.props.get(name);
                hits.sort_by(|a, b| {
                    let ord = compare_for_sort(def, a.props.get(name), b.props.get(name));
                    let ord = if *asc { ord } else { ord.reverse() };
                    ord.then(a.id.cmp(&b.id))
                });
            }
            None => hits.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id))),
        }
        let total = hits.len();
        let end = (self.after + self.limit).min(total).min(self.max_results);
        let start = self.after.min(end);
        let page: Vec<Cow<'s, Record>> = hits.drain(start..end).collect();
        // Like HubSpot, offer the next page whenever more results exist, even when that page
        // lies past the cap (asking for it then fails with a 400).
        let next = (self.after + self.limit < total).then_some(self.after + self.limit);
        (total, page, next)
    }

    fn matches(&self, store: &Store, rec: &Record) -> bool {
        if let Some(q) = &self.query
            && !matches_query(q, rec)
        {
            return false;
        }
        self.groups.is_empty()
            || self.groups.iter().any(|g| {
                g.iter()
                    .all(|c| cond_matches(c, store.props.get(&c.property), rec))
            })
    }
}

fn matches_query(query: &str, rec: &Record) -> bool {
    let q = query.trim().to_lowercase();
    let q = q.trim_end_matches('*');
    QUERY_PROPERTIES.iter().any(|p| {
        rec.props
            .get(*p)
            .is_some_and(|v| v.to_lowercase().contains(q))
    })
}

fn numeric(def: Option<&PropertyDef>, raw: &str) -> Option<f64> {
    match def {
        Some(d) if d.is_date() => parse_epoch_ms(raw).map(|ms| ms as f64),
        _ => raw.trim().parse::<f64>().ok(),
    }
}

fn compare_for_sort(def: Option<&PropertyDef>, a: Option<&String>, b: Option<&String>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => {
            if def.is_some_and(PropertyDef::is_numeric)
                && let (Some(x), Some(y)) = (numeric(def, a), numeric(def, b))
            {
                return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
            }
            a.to_lowercase().cmp(&b.to_lowercase())
        }
    }
}

/// Orders a stored value against a filter value: numerically for numbers and dates,
/// case-insensitively otherwise. `None` when they cannot be compared.
fn compare_value(def: &PropertyDef, stored: &str, given: &str) -> Option<Ordering> {
    if def.is_numeric() {
        let (a, b) = (numeric(Some(def), stored)?, numeric(Some(def), given)?);
        return a.partial_cmp(&b);
    }
    if def.is_enumeration() {
        return Some(stored.cmp(given));
    }
    Some(stored.to_lowercase().cmp(&given.to_lowercase()))
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn contains_token(stored: &str, token: &str) -> bool {
    let stored = stored.to_lowercase();
    let token = token.to_lowercase();
    wildcard_match(&token, &stored)
        || stored
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .any(|t| wildcard_match(&token, t))
}

/// A filter on a property the portal does not have matches nothing (HubSpot fails silently,
/// e.g. `hs_lastmodifieddate` on contacts), except `NOT_HAS_PROPERTY`.
fn cond_matches(c: &Cond, def: Option<&PropertyDef>, rec: &Record) -> bool {
    let stored = rec.props.get(&c.property).map(String::as_str);
    let Some(def) = def else {
        return c.op == Op::NotHasProperty;
    };
    let given = c.value.as_deref().unwrap_or_default();
    let cmp = |s: &str| compare_value(def, s, given);
    match c.op {
        Op::HasProperty => stored.is_some(),
        Op::NotHasProperty => stored.is_none(),
        Op::Eq => stored.is_some_and(|s| cmp(s) == Some(Ordering::Equal)),
        Op::Neq => stored.is_none_or(|s| cmp(s) != Some(Ordering::Equal)),
        Op::Lt => stored.is_some_and(|s| cmp(s) == Some(Ordering::Less)),
        Op::Lte => stored.is_some_and(|s| matches!(cmp(s), Some(Ordering::Less | Ordering::Equal))),
        Op::Gt => stored.is_some_and(|s| cmp(s) == Some(Ordering::Greater)),
        Op::Gte => {
            stored.is_some_and(|s| matches!(cmp(s), Some(Ordering::Greater | Ordering::Equal)))
        }
        Op::Between => stored.is_some_and(|s| {
            let high = c.high.as_deref().unwrap_or_default();
            matches!(cmp(s), Some(Ordering::Greater | Ordering::Equal))
                && matches!(
                    compare_value(def, s, high),
                    Some(Ordering::Less | Ordering::Equal)
                )
        }),
        Op::In | Op::NotIn => {
            let found = stored.is_some_and(|s| {
                c.values.iter().any(|v| {
                    if def.is_numeric() {
                        compare_value(def, s, v) == Some(Ordering::Equal)
                    } else if def.is_enumeration() {
                        s == v
                    } else {
                        // String IN values must be given in lowercase (HubSpot's "CRM search" guide).
                        s.to_lowercase() == *v
                    }
                })
            });
            if c.op == Op::In { found } else { !found }
        }
        Op::ContainsToken => stored.is_some_and(|s| contains_token(s, given)),
        Op::NotContainsToken => stored.is_none_or(|s| !contains_token(s, given)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::hubspot::store::Actor;

    fn store_with(contacts: &[&[(&str, &str)]]) -> Store {
        let mut s = Store::new(1);
        let mut ch = Vec::new();
        for c in contacts {
            let p: BTreeMap<String, String> = c
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            s.create(&p, &Actor::Import, &mut ch).unwrap();
        }
        s
    }

    fn run(s: &Store, body: Value) -> Result<(usize, Vec<u64>, Option<usize>), ApiError> {
        let req: SearchRequest = serde_json::from_value(body).unwrap();
        let (total, page, next) = Plan::from_request(req, MAX_RESULTS)?.run(s, None);
        Ok((total, page.iter().map(|r| r.id).collect(), next))
    }

    #[test]
    fn operators() {
        let s = store_with(&[
            &[("email", "a@x.com"), ("firstname", "Ann")],
            &[("email", "b@x.com"), ("firstname", "bob"), ("phone", "1")],
            &[("email", "c@y.com")],
        ]);
        let f = |filters: Value| {
            run(&s, json!({"filterGroups":[{"filters":filters}]}))
                .unwrap()
                .1
        };
        assert_eq!(
            f(json!([{"propertyName":"email","operator":"EQ","value":"B@X.com"}])),
            vec![2]
        );
        assert_eq!(
            f(json!([{"propertyName":"firstname","operator":"NEQ","value":"ann"}])),
            vec![2, 3]
        );
        assert_eq!(
            f(json!([{"propertyName":"phone","operator":"HAS_PROPERTY"}])),
            vec![2]
        );
        assert_eq!(
            f(json!([{"propertyName":"firstname","operator":"NOT_HAS_PROPERTY"}])),
            vec![3]
        );
        assert_eq!(
            f(json!([{"propertyName":"email","operator":"IN","values":["a@x.com","c@y.com"]}])),
            vec![1, 3]
        );
        assert_eq!(
            f(json!([{"propertyName":"hs_object_id","operator":"GT","value":"1"}])),
            vec![2, 3]
        );
        assert_eq!(
            f(
                json!([{"propertyName":"hs_object_id","operator":"BETWEEN","value":"2","highValue":3}])
            ),
            vec![2, 3]
        );
        assert_eq!(
            f(json!([{"propertyName":"email","operator":"CONTAINS_TOKEN","value":"*@x.com"}])),
            vec![1, 2]
        );
        // Unknown property: silently nothing.
        assert!(
            f(json!([{"propertyName":"hs_lastmodifieddate","operator":"GTE","value":"0"}]))
                .is_empty()
        );
        // Dates compare numerically with epoch ms or ISO values.
        assert_eq!(
            f(json!([{"propertyName":"createdate","operator":"GTE","value":"2000-01-01T00:00:00Z"}]))
                .len(),
            3
        );
        assert_eq!(
            f(json!([{"propertyName":"lastmodifieddate","operator":"LT","value":"946684800000"}]))
                .len(),
            0
        );
        // Groups are ORed.
        let (_, ids, _) = run(
            &s,
            json!({"filterGroups":[
                {"filters":[{"propertyName":"email","operator":"EQ","value":"a@x.com"}]},
                {"filters":[{"propertyName":"email","operator":"EQ","value":"c@y.com"}]}]}),
        )
        .unwrap();
        assert_eq!(ids, vec![1, 3]);
    }

    #[test]
    fn limits_are_enforced() {
        let s = store_with(&[]);
        let filter = json!({"propertyName":"email","operator":"HAS_PROPERTY"});
        let six_groups: Vec<Value> = (0..6).map(|_| json!({"filters":[filter]})).collect();
        assert!(run(&s, json!({ "filterGroups": six_groups })).is_err());
        let seven: Vec<Value> = (0..7).map(|_| filter.clone()).collect();
        assert!(run(&s, json!({"filterGroups":[{"filters":seven}]})).is_err());
        let four_groups_of_five: Vec<Value> = (0..4)
            .map(|_| json!({"filters": (0..5).map(|_| filter.clone()).collect::<Vec<_>>()}))
            .collect();
        assert!(run(&s, json!({ "filterGroups": four_groups_of_five })).is_err());
        assert!(run(&s, json!({"limit": 201})).is_err());
        assert!(run(&s, json!({"limit": 200})).is_ok());
        assert!(run(&s, json!({"after": "abc"})).is_err());
        assert!(run(&s, json!({"after": "10000"})).is_err());
        assert!(
            run(
                &s,
                json!({"sorts": [{"propertyName":"email"},{"propertyName":"firstname"}]})
            )
            .is_err()
        );
        assert!(run(&s, json!({"filterGroups":[{"filters":[{"propertyName":"email","operator":"LIKE","value":"x"}]}]})).is_err());
    }

    #[test]
    fn sorting_and_paging() {
        let s = store_with(&[
            &[("firstname", "b")],
            &[("firstname", "a")],
            &[("firstname", "c")],
        ]);
        let (total, ids, next) = run(
            &s,
            json!({"sorts":[{"propertyName":"firstname","direction":"DESCENDING"}],"limit":2}),
        )
        .unwrap();
        assert_eq!((total, ids, next), (3, vec![3, 1], Some(2)));
        let (_, ids, next) = run(
            &s,
            json!({"sorts":[{"propertyName":"firstname","direction":"DESCENDING"}],"limit":2,"after":"2"}),
        )
        .unwrap();
        assert_eq!((ids, next), (vec![2], None));
    }

    #[test]
    fn wildcard() {
        assert!(wildcard_match("*@x.com", "a@x.com"));
        assert!(wildcard_match("a*", "abc"));
        assert!(wildcard_match("a*c", "abbc"));
        assert!(!wildcard_match("a*c", "abd"));
        assert!(wildcard_match("abc", "abc"));
    }
}
