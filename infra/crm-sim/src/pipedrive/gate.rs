//! Middleware in front of every simulated Pipedrive API route: request log, outage switch,
//! authentication, burst and daily token limits, token cost accounting and rate-limit headers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api::error_body;
use super::store::State as SimState;
use super::{PipedriveSim, RequestRecord};

/// Length of the rolling burst window.
const WINDOW: Duration = Duration::from_secs(2);
/// Legacy fair-use limit of POST/PUT requests per api_token user and day (`x-daily-requests-left`).
const DAILY_WRITE_REQUESTS: u64 = 10_000;
/// Largest request body the simulator reads.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A simulated API operation: its spec `operationId` and `x-token-cost`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Op {
    pub id: &'static str,
    pub cost: u64,
    pub search: bool,
}

/// Maps a method and route template to the operation (costs from the OpenAPI specs).
pub(crate) fn lookup(method: &Method, route: &str) -> Option<Op> {
    let (id, cost) = match (method.as_str(), route) {
        ("GET", "/api/v2/persons") => ("getPersons", 10),
        ("POST", "/api/v2/persons") => ("addPerson", 5),
        ("GET", "/api/v2/persons/search") => ("searchPersons", 20),
        ("GET", "/api/v2/persons/{id}") => ("getPerson", 1),
        ("PATCH", "/api/v2/persons/{id}") => ("updatePerson", 5),
        ("DELETE", "/api/v2/persons/{id}") => ("deletePerson", 3),
        ("GET", "/api/v2/personFields") => ("getPersonFields", 10),
        ("POST", "/api/v2/personFields") => ("addPersonField", 5),
        ("GET", "/api/v2/personFields/{field_code}") => ("getPersonField", 1),
        ("DELETE", "/api/v2/personFields/{field_code}") => ("deletePersonField", 3),
        ("PUT", "/api/v1/persons/{id}/merge") => ("mergePersons", 40),
        ("GET", "/api/v1/persons/{id}/changelog") => ("getPersonChangelog", 20),
        ("GET", "/api/v1/users/me") => ("getCurrentUser", 2),
        ("GET", "/api/v1/webhooks") => ("getWebhooks", 10),
        ("POST", "/api/v1/webhooks") => ("addWebhook", 10),
        ("DELETE", "/api/v1/webhooks/{id}") => ("deleteWebhook", 6),
        _ => return None,
    };
    Some(Op {
        id,
        cost,
        search: id == "searchPersons",
    })
}

/// How the caller authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AuthKind {
    ApiTokenHeader,
    ApiTokenQuery,
    Bearer,
}

impl AuthKind {
    fn as_str(&self) -> &'static str {
        match self {
            AuthKind::ApiTokenHeader => "x-api-token",
            AuthKind::ApiTokenQuery => "api_token query",
            AuthKind::Bearer => "oauth bearer",
        }
    }
}

/// The authenticated caller, available to handlers as a request extension.
#[derive(Clone, Debug)]
pub(crate) struct Principal {
    pub token: String,
    pub kind: AuthKind,
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let q = query?;
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return Some(percent_decode(v));
        }
    }
    None
}

/// Minimal `application/x-www-form-urlencoded` value decoding.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn authenticate(sim: &PipedriveSim, headers: &HeaderMap, query: Option<&str>) -> Option<Principal> {
    let cfg = &sim.core().cfg;
    if let Some(v) = headers.get("x-api-token") {
        let token = v.to_str().ok()?.trim().to_string();
        return cfg.api_tokens.contains(&token).then_some(Principal {
            token,
            kind: AuthKind::ApiTokenHeader,
        });
    }
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim().to_string();
        return cfg.oauth_tokens.contains(&token).then_some(Principal {
            token,
            kind: AuthKind::Bearer,
        });
    }
    let token = query_param(query, "api_token")?;
    cfg.api_tokens.contains(&token).then_some(Principal {
        token,
        kind: AuthKind::ApiTokenQuery,
    })
}

/// Result of checking the limits for one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Ok,
    Burst,
    Daily,
}

fn prune(window: &mut VecDeque<Instant>, now: Instant) {
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        window.pop_front();
    }
}

/// Checks burst and daily limits and, when admitted, charges the request.
/// Returns the decision and the rate-limit headers to send.
pub(crate) fn admit(
    st: &mut SimState,
    principal: &Principal,
    op: Op,
    counts_daily_write: bool,
    now: Instant,
) -> (Admission, Vec<(&'static str, String)>) {
    st.roll_day();
    let (limit, window_key) = if op.search {
        (st.limits.search_burst, "search")
    } else if principal.kind == AuthKind::Bearer {
        (st.limits.oauth_burst, "general")
    } else {
        (st.limits.burst, "general")
    };
    let windows = if window_key == "search" {
        &mut st.search_windows
    } else {
        &mut st.windows
    };
    let window = windows.entry(principal.token.clone()).or_default();
    prune(window, now);
    let in_window = window.len() as u64;
    let burst_ok = limit.is_none_or(|l| in_window < u64::from(l));
    let daily_ok = st
        .limits
        .daily_budget
        .is_none_or(|b| st.daily_tokens + op.cost <= b);
    let decision = if !burst_ok {
        Admission::Burst
    } else if !daily_ok {
        Admission::Daily
    } else {
        Admission::Ok
    };
    if decision == Admission::Ok {
        window.push_back(now);
    }
    let used = window.len() as u64;
    let reset = window
        .front()
        .map(|t| {
            let left = WINDOW.saturating_sub(now.duration_since(*t));
            left.as_millis().div_ceil(1000).max(1) as u64
        })
        .unwrap_or(WINDOW.as_secs());

    if decision == Admission::Ok {
        st.daily_tokens += op.cost;
        if counts_daily_write && principal.kind != AuthKind::Bearer {
            *st.daily_writes.entry(principal.token.clone()).or_default() += 1;
        }
    }

    let mut headers = Vec::new();
    if let Some(l) = limit {
        headers.push(("x-ratelimit-limit", l.to_string()));
        headers.push((
            "x-ratelimit-remaining",
            u64::from(l).saturating_sub(used).to_string(),
        ));
        headers.push(("x-ratelimit-reset", reset.to_string()));
    }
    if principal.kind != AuthKind::Bearer {
        let writes = st.daily_writes.get(&principal.token).copied().unwrap_or(0);
        headers.push((
            "x-daily-requests-left",
            DAILY_WRITE_REQUESTS.saturating_sub(writes).to_string(),
        ));
    }
    if let Some(b) = st.limits.daily_budget.filter(|_| st.limits.token_headers) {
        headers.push(("x-daily-ratelimit-token-limit", b.to_string()));
        headers.push((
            "x-daily-ratelimit-token-remaining",
            b.saturating_sub(st.daily_tokens).to_string(),
        ));
    }
    (decision, headers)
}

/// A 429. Pipedrive documents no body for it, and nothing in it that tells a spent daily
/// budget from a full burst window: the same body for both, so a client must go by the headers.
fn too_many() -> Response {
    let body = json!({
        "success": false,
        "error": "Request over limit",
        "errorCode": 429,
        "error_info": "Please check developers.pipedrive.com for more information about Pipedrive API.",
        "data": null,
        "additional_data": null,
    });
    (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({
            "success": false,
            "error": "unauthorized access",
            "errorCode": 401,
            "error_info": "Please check developers.pipedrive.com for more information about Pipedrive API.",
            "data": null,
            "additional_data": null,
        })),
    )
        .into_response()
}

/// The middleware. Applied with `route_layer`, so `MatchedPath` is always present.
pub(crate) async fn gate(State(sim): State<PipedriveSim>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => Bytes::new(),
    };
    let body_json: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let raw_body = (!bytes.is_empty() && body_json.is_none())
        .then(|| String::from_utf8_lossy(&bytes).into_owned());
    let op = lookup(&method, &route);

    let mut record = RequestRecord {
        method: method.to_string(),
        path,
        query: query.clone(),
        body: body_json,
        raw_body,
        operation_id: op.map(|o| o.id.to_string()),
        auth: None,
        status: 0,
        time: String::new(),
    };

    let response = 'resp: {
        {
            let mut st = sim.core().lock();
            st.stats.requests += 1;
            record.time = st
                .now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            if st.outage {
                break 'resp error_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Requested service is not available",
                    "Please check developers.pipedrive.com",
                );
            }
        }
        let Some(op) = op else {
            break 'resp error_body(
                StatusCode::NOT_FOUND,
                "Unknown method .",
                "Please check developers.pipedrive.com for more information about Pipedrive API.",
            );
        };
        let Some(principal) = authenticate(&sim, &parts.headers, query.as_deref()) else {
            sim.core().lock().stats.unauthorized += 1;
            break 'resp unauthorized();
        };
        record.auth = Some(principal.kind.as_str().to_string());
        let is_write = matches!(
            method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        // The legacy daily counter covers POST/PUT (PATCH is v2's PUT).
        let counts_daily = matches!(method, Method::POST | Method::PUT | Method::PATCH);
        {
            let mut st = sim.core().lock();
            if st.bare_429s > 0 {
                st.bare_429s -= 1;
                st.stats.rate_limited += 1;
                break 'resp too_many();
            }
        }
        let (decision, headers) = {
            let mut st = sim.core().lock();
            let (decision, headers) = admit(&mut st, &principal, op, counts_daily, Instant::now());
            match decision {
                Admission::Ok => {
                    st.stats.tokens_used += op.cost;
                    let key = format!("{method} {route}");
                    *st.stats.tokens_by_endpoint.entry(key.clone()).or_default() += op.cost;
                    *st.stats.calls_by_endpoint.entry(key).or_default() += 1;
                    if is_write {
                        st.stats.write_calls += 1;
                    }
                }
                Admission::Burst => st.stats.rate_limited += 1,
                Admission::Daily => {
                    st.stats.rate_limited += 1;
                    st.stats.daily_limited += 1;
                }
            }
            (decision, headers)
        };
        let mut resp = match decision {
            Admission::Ok => {
                let mut req = Request::from_parts(parts, Body::from(bytes));
                req.extensions_mut().insert(principal);
                next.run(req).await
            }
            Admission::Burst | Admission::Daily => too_many(),
        };
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    };

    record.status = response.status().as_u16();
    super::push_bounded(&mut sim.core().lock().request_log, record);
    response
}

#[cfg(test)]
mod tests {
    use super::super::store::Limits;
    use super::*;

    fn principal() -> Principal {
        Principal {
            token: "t".into(),
            kind: AuthKind::ApiTokenHeader,
        }
    }

    fn state(burst: Option<u32>, budget: Option<u64>) -> SimState {
        SimState::new(Limits {
            burst,
            oauth_burst: Some(80),
            search_burst: Some(10),
            daily_budget: budget,
            token_headers: true,
        })
    }

    fn header<'a>(h: &'a [(&'static str, String)], name: &str) -> &'a str {
        h.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn costs_match_the_spec() {
        assert_eq!(lookup(&Method::GET, "/api/v2/persons").unwrap().cost, 10);
        assert_eq!(
            lookup(&Method::GET, "/api/v2/persons/{id}").unwrap().cost,
            1
        );
        assert_eq!(lookup(&Method::POST, "/api/v2/persons").unwrap().cost, 5);
        assert_eq!(
            lookup(&Method::PATCH, "/api/v2/persons/{id}").unwrap().cost,
            5
        );
        assert_eq!(
            lookup(&Method::DELETE, "/api/v2/persons/{id}")
                .unwrap()
                .cost,
            3
        );
        assert_eq!(
            lookup(&Method::GET, "/api/v2/persons/search").unwrap().cost,
            20
        );
        assert_eq!(
            lookup(&Method::PUT, "/api/v1/persons/{id}/merge")
                .unwrap()
                .cost,
            40
        );
        assert_eq!(lookup(&Method::GET, "/api/v1/users/me").unwrap().cost, 2);
        assert_eq!(
            lookup(&Method::DELETE, "/api/v1/webhooks/{id}")
                .unwrap()
                .cost,
            6
        );
        assert!(lookup(&Method::PUT, "/api/v2/persons/{id}").is_none());
    }

    #[test]
    fn burst_window_rolls() {
        let mut st = state(Some(2), None);
        let op = lookup(&Method::GET, "/api/v2/persons/{id}").unwrap();
        let t0 = Instant::now();
        let (d, h) = admit(&mut st, &principal(), op, false, t0);
        assert_eq!(d, Admission::Ok);
        assert_eq!(header(&h, "x-ratelimit-remaining"), "1");
        assert_eq!(header(&h, "x-ratelimit-limit"), "2");
        assert_eq!(admit(&mut st, &principal(), op, false, t0).0, Admission::Ok);
        let (d, h) = admit(
            &mut st,
            &principal(),
            op,
            false,
            t0 + Duration::from_millis(500),
        );
        assert_eq!(d, Admission::Burst);
        assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
        assert_eq!(header(&h, "x-ratelimit-reset"), "2");
        let (d, _) = admit(
            &mut st,
            &principal(),
            op,
            false,
            t0 + Duration::from_millis(2001),
        );
        assert_eq!(d, Admission::Ok);
        // Another token has its own window.
        let other = Principal {
            token: "u".into(),
            kind: AuthKind::ApiTokenHeader,
        };
        assert_eq!(admit(&mut st, &other, op, false, t0).0, Admission::Ok);
    }

    #[test]
    fn daily_budget_is_never_exceeded() {
        let mut st = state(None, Some(25));
        let list = lookup(&Method::GET, "/api/v2/persons").unwrap();
        let get = lookup(&Method::GET, "/api/v2/persons/{id}").unwrap();
        let now = Instant::now();
        assert_eq!(
            admit(&mut st, &principal(), list, false, now).0,
            Admission::Ok
        );
        let (d, h) = admit(&mut st, &principal(), list, false, now);
        assert_eq!(d, Admission::Ok);
        assert_eq!(header(&h, "x-daily-ratelimit-token-remaining"), "5");
        assert_eq!(
            admit(&mut st, &principal(), list, false, now).0,
            Admission::Daily
        );
        assert_eq!(
            admit(&mut st, &principal(), get, false, now).0,
            Admission::Ok
        );
        assert_eq!(st.daily_tokens, 21);
        st.reset_day();
        assert_eq!(
            admit(&mut st, &principal(), list, false, now).0,
            Admission::Ok
        );
    }

    #[test]
    fn daily_counters_reset_at_simulated_midnight() {
        let mut st = state(None, Some(10));
        let list = lookup(&Method::GET, "/api/v2/persons").unwrap();
        let now = Instant::now();
        assert_eq!(
            admit(&mut st, &principal(), list, false, now).0,
            Admission::Ok
        );
        assert_eq!(
            admit(&mut st, &principal(), list, false, now).0,
            Admission::Daily
        );
        st.clock_offset = chrono::Duration::days(1);
        assert_eq!(
            admit(&mut st, &principal(), list, false, now).0,
            Admission::Ok
        );
    }

    #[test]
    fn search_has_its_own_window() {
        let mut st = state(Some(100), None);
        let search = lookup(&Method::GET, "/api/v2/persons/search").unwrap();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(
                admit(&mut st, &principal(), search, false, now).0,
                Admission::Ok
            );
        }
        let (d, h) = admit(&mut st, &principal(), search, false, now);
        assert_eq!(d, Admission::Burst);
        assert_eq!(header(&h, "x-ratelimit-limit"), "10");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("ada%40example.com"), "ada@example.com");
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }
}
