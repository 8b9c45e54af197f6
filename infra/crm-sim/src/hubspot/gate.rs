//! What stands in front of every HubSpot API route: the outage switch, Bearer authentication
//! (static private-app tokens and OAuth access tokens), the 10-second burst window, the daily
//! counter, the search limit and the rate-limit headers (HubSpot's "API usage guidelines" and
//! its OAuth and private-app authentication guides). Also the OAuth
//! token endpoint.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::HubSpotSim;
use super::error::{ApiError, correlation_id};
use super::query::parse_pairs;

pub(crate) const SEARCH_PATH: &str = "/crm/v3/objects/contacts/search";
const BURST_WINDOW: Duration = Duration::from_secs(10);
const SEARCH_WINDOW: Duration = Duration::from_secs(1);
const OAUTH_BUCKET: &str = "oauth-app";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ident {
    /// One burst window per app: each static token is its own private app; all OAuth tokens
    /// belong to the one public app.
    pub bucket: String,
    pub oauth: bool,
}

#[derive(Debug)]
pub(crate) struct GateState {
    pub outage: bool,
    pub burst_limit: Option<u32>,
    pub daily_limit: Option<u32>,
    pub search_per_second: u32,
    windows: HashMap<String, VecDeque<Instant>>,
    search_window: VecDeque<Instant>,
    daily_count: u64,
    daily_date: NaiveDate,
    /// The portal's time zone: its day ends at midnight there.
    zone: Tz,
    /// OAuth access token → expiry.
    oauth_tokens: HashMap<String, Instant>,
    pub refresh_tokens: HashSet<String>,
    pub auth_codes: HashSet<String>,
}

impl GateState {
    pub fn new(
        zone: Tz,
        burst_limit: Option<u32>,
        daily_limit: Option<u32>,
        search_per_second: u32,
        refresh_tokens: &[String],
        auth_codes: &[String],
    ) -> Self {
        Self {
            outage: false,
            burst_limit,
            daily_limit,
            search_per_second,
            windows: HashMap::new(),
            search_window: VecDeque::new(),
            daily_count: 0,
            daily_date: Utc::now().with_timezone(&zone).date_naive(),
            zone,
            oauth_tokens: HashMap::new(),
            refresh_tokens: refresh_tokens.iter().cloned().collect(),
            auth_codes: auth_codes.iter().cloned().collect(),
        }
    }

    /// Forgets counted requests (the limits themselves stay).
    pub fn reset_counters(&mut self) {
        self.windows.clear();
        self.search_window.clear();
        self.daily_count = 0;
    }

    pub fn issue_token(&mut self, ttl: Duration) -> String {
        let token = format!("sim-oauth-{}", uuid::Uuid::new_v4().simple());
        self.oauth_tokens
            .insert(token.clone(), Instant::now() + ttl);
        token
    }

    pub fn expire_oauth_tokens(&mut self) {
        let now = Instant::now();
        for expiry in self.oauth_tokens.values_mut() {
            if *expiry > now {
                *expiry = now;
            }
        }
    }

    fn roll_day(&mut self) {
        self.roll_day_at(Utc::now());
    }

    /// Starts a new day once `now` is past midnight in the portal's time zone.
    fn roll_day_at(&mut self, now: DateTime<Utc>) {
        let today = now.with_timezone(&self.zone).date_naive();
        if today != self.daily_date {
            self.daily_date = today;
            self.daily_count = 0;
        }
    }

    fn headers(&self, ident: &Ident, used_in_window: usize) -> Vec<(HeaderName, HeaderValue)> {
        let mut h = Vec::new();
        let mut put = |name: &'static str, v: u64| {
            h.push((HeaderName::from_static(name), HeaderValue::from(v)));
        };
        if let Some(max) = self.burst_limit {
            put("x-hubspot-ratelimit-interval-milliseconds", 10_000);
            put("x-hubspot-ratelimit-max", u64::from(max));
            put(
                "x-hubspot-ratelimit-remaining",
                u64::from(max).saturating_sub(used_in_window as u64),
            );
        }
        if !ident.oauth
            && let Some(daily) = self.daily_limit
        {
            put("x-hubspot-ratelimit-daily", u64::from(daily));
            put(
                "x-hubspot-ratelimit-daily-remaining",
                u64::from(daily).saturating_sub(self.daily_count),
            );
        }
        h
    }

    /// Counts a (non-search) API call, or refuses it with the policy that was hit.
    pub fn admit(&mut self, ident: &Ident) -> Result<Vec<(HeaderName, HeaderValue)>, ApiError> {
        self.roll_day();
        let now = Instant::now();
        let window = self.windows.entry(ident.bucket.clone()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= BURST_WINDOW)
        {
            window.pop_front();
        }
        let used = window.len();
        if !ident.oauth
            && let Some(daily) = self.daily_limit
            && self.daily_count >= u64::from(daily)
        {
            let mut err = rate_limit_error("DAILY", "You have reached your daily limit.");
            err.headers = self.headers(ident, used);
            return Err(err);
        }
        if let Some(max) = self.burst_limit
            && used >= max as usize
        {
            let mut err = rate_limit_error(
                "TEN_SECONDLY_ROLLING",
                "You have reached your ten_secondly_rolling limit.",
            );
            err.headers = self.headers(ident, used);
            return Err(err);
        }
        self.windows
            .get_mut(&ident.bucket)
            .expect("created above")
            .push_back(now);
        if !ident.oauth {
            self.daily_count += 1;
        }
        Ok(self.headers(ident, used + 1))
    }

    /// Counts a search call against the per-second search limit.
    pub fn admit_search(&mut self, ident: &Ident) -> Result<(), ApiError> {
        self.roll_day();
        if !ident.oauth
            && let Some(daily) = self.daily_limit
            && self.daily_count >= u64::from(daily)
        {
            return Err(rate_limit_error(
                "DAILY",
                "You have reached your daily limit.",
            ));
        }
        if self.search_per_second > 0 {
            let now = Instant::now();
            while self
                .search_window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= SEARCH_WINDOW)
            {
                self.search_window.pop_front();
            }
            if self.search_window.len() >= self.search_per_second as usize {
                return Err(rate_limit_error(
                    "SECONDLY",
                    "You have reached your secondly limit.",
                ));
            }
            self.search_window.push_back(now);
        }
        if !ident.oauth {
            self.daily_count += 1;
        }
        Ok(())
    }

    /// Checks a Bearer token.
    pub fn authenticate(
        &self,
        static_tokens: &[String],
        headers: &HeaderMap,
    ) -> Result<Ident, ApiError> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_string())
            })
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(unauthenticated());
        };
        if static_tokens.contains(&token) {
            return Ok(Ident {
                bucket: format!("private-app:{token}"),
                oauth: false,
            });
        }
        match self.oauth_tokens.get(&token) {
            Some(expiry) => {
                let now = Instant::now();
                if *expiry > now {
                    Ok(Ident {
                        bucket: OAUTH_BUCKET.into(),
                        oauth: true,
                    })
                } else {
                    let ago = now.duration_since(*expiry).as_secs();
                    Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "EXPIRED_AUTHENTICATION",
                        format!(
                            "The OAuth token used to make this call expired {ago} second(s) ago."
                        ),
                    ))
                }
            }
            None => Err(unauthenticated()),
        }
    }
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
    )
}

fn rate_limit_error(policy: &str, message: &str) -> ApiError {
    ApiError::raw(
        StatusCode::TOO_MANY_REQUESTS,
        json!({
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": policy,
            "requestId": correlation_id(),
        }),
    )
}

/// Middleware on every HubSpot API route.
pub(crate) async fn gate(State(sim): State<HubSpotSim>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    sim.count_request(&format!("{} {}", req.method(), template));
    if sim.gate_state().outage {
        return ApiError::unavailable().into_response();
    }
    if path.starts_with("/oauth/") {
        return next.run(req).await;
    }
    let ident = {
        let gate = sim.gate_state();
        gate.authenticate(&sim.config().access_tokens, req.headers())
    };
    let ident = match ident {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    if req.method() == Method::POST && path == SEARCH_PATH {
        let admitted = sim.gate_state().admit_search(&ident);
        return match admitted {
            Ok(()) => next.run(req).await,
            Err(e) => {
                sim.count_rate_limited();
                e.into_response()
            }
        };
    }
    let admitted = sim.gate_state().admit(&ident);
    match admitted {
        Ok(headers) => {
            let mut resp = next.run(req).await;
            for (k, v) in headers {
                resp.headers_mut().insert(k, v);
            }
            resp
        }
        Err(e) => {
            sim.count_rate_limited();
            e.into_response()
        }
    }
}

fn oauth_error(status: &str, message: &str, oauth_error: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "status": status,
            "message": message,
            "correlationId": correlation_id(),
            "requestId": correlation_id(),
            "error": oauth_error,
            "error_description": message,
        })),
    )
        .into_response()
}

/// `POST /oauth/v1/token` and `POST /oauth/v3/token` (form-encoded).
pub(crate) async fn oauth_token(
    State(sim): State<HubSpotSim>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v3 = uri.path().starts_with("/oauth/v3/");
    let query = uri.query().unwrap_or_default();
    if v3 && !query.is_empty() {
        return oauth_error(
            "BAD_REQUEST",
            "OAuth v3 parameters must be sent in the form-encoded request body, not in the query string",
            "invalid_request",
        );
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !body.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return oauth_error(
            "BAD_REQUEST",
            "Content-Type must be application/x-www-form-urlencoded",
            "invalid_request",
        );
    }
    let mut params = parse_pairs(&String::from_utf8_lossy(&body));
    if !v3 {
        params.extend(parse_pairs(query));
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let config = sim.config();
    let grant = get("grant_type");
    if !matches!(grant, Some("refresh_token" | "authorization_code")) {
        return oauth_error(
            "BAD_GRANT_TYPE",
            "grant_type must be one of: authorization_code, refresh_token",
            "unsupported_grant_type",
        );
    }
    if get("client_id") != Some(config.client_id.as_str()) {
        return oauth_error(
            "BAD_CLIENT_ID",
            "missing or unknown client id",
            "invalid_client",
        );
    }
    if get("client_secret") != Some(config.client_secret.as_str()) {
        return oauth_error(
            "BAD_CLIENT_SECRET",
            "missing or invalid client secret",
            "invalid_client",
        );
    }
    let ttl = Duration::from_secs(config.access_token_ttl_secs);
    let mut gate = sim.gate_state();
    let refresh_token = if grant == Some("refresh_token") {
        match get("refresh_token") {
            Some(t) if gate.refresh_tokens.contains(t) => t.to_string(),
            _ => {
                return oauth_error(
                    "BAD_REFRESH_TOKEN",
                    "missing or unknown refresh token",
                    "invalid_grant",
                );
            }
        }
    } else {
        match get("code") {
            Some(code) if gate.auth_codes.remove(code) => {
                let t = format!("sim-refresh-{}", uuid::Uuid::new_v4().simple());
                gate.refresh_tokens.insert(t.clone());
                t
            }
            _ => {
                return oauth_error(
                    "BAD_AUTH_CODE",
                    "missing or unknown auth code",
                    "invalid_grant",
                );
            }
        }
    };
    let access_token = gate.issue_token(ttl);
    drop(gate);
    if grant == Some("refresh_token") {
        sim.count_refresh();
    }
    let body: Value = json!({
        "token_type": "bearer",
        "access_token": access_token,
        "refresh_token": refresh_token,
        "expires_in": config.access_token_ttl_secs,
        "hub_id": config.portal_id,
        "token_use": "access_token",
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(oauth: bool) -> Ident {
        Ident {
            bucket: if oauth {
                OAUTH_BUCKET.into()
            } else {
                "t".into()
            },
            oauth,
        }
    }

    fn header<'a>(h: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn burst_window_then_429() {
        let mut g = GateState::new(Tz::UTC, Some(3), Some(100), 5, &[], &[]);
        for remaining in ["2", "1", "0"] {
            let h = g.admit(&ident(false)).unwrap();
            assert_eq!(header(&h, "x-hubspot-ratelimit-remaining"), Some(remaining));
            assert_eq!(header(&h, "x-hubspot-ratelimit-daily"), Some("100"));
        }
        let err = g.admit(&ident(false)).unwrap_err();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.body["policyName"], "TEN_SECONDLY_ROLLING");
        // Another app has its own window.
        assert!(
            g.admit(&Ident {
                bucket: "other".into(),
                oauth: false
            })
            .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn burst_window_rolls() {
        let mut g = GateState::new(Tz::UTC, Some(2), None, 5, &[], &[]);
        g.admit(&ident(true)).unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        g.admit(&ident(true)).unwrap();
        assert!(g.admit(&ident(true)).is_err());
        tokio::time::advance(Duration::from_secs(4)).await;
        // The first call left the window.
        let h = g.admit(&ident(true)).unwrap();
        assert_eq!(header(&h, "x-hubspot-ratelimit-remaining"), Some("0"));
        assert_eq!(header(&h, "x-hubspot-ratelimit-daily"), None);
    }

    #[tokio::test]
    async fn daily_limit() {
        let mut g = GateState::new(Tz::UTC, None, Some(2), 5, &[], &[]);
        g.admit(&ident(false)).unwrap();
        g.admit(&ident(false)).unwrap();
        let err = g.admit(&ident(false)).unwrap_err();
        assert_eq!(err.body["policyName"], "DAILY");
        assert_eq!(err.body["message"], "You have reached your daily limit.");
        // OAuth apps have no daily limit.
        assert!(g.admit(&ident(true)).is_ok());
    }

    /// The day ends at midnight in the portal's zone: 04:59 UTC is still yesterday in New
    /// York (EST), 05:00 UTC is the new day.
    #[tokio::test]
    async fn the_daily_count_resets_at_the_portal_s_midnight() {
        let mut g = GateState::new(Tz::America__New_York, None, Some(2), 5, &[], &[]);
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        g.roll_day_at(at("2026-12-01T12:00:00Z"));
        g.daily_count = 2;
        g.roll_day_at(at("2026-12-02T00:30:00Z"));
        g.roll_day_at(at("2026-12-02T04:59:00Z"));
        assert_eq!(g.daily_count, 2, "UTC midnight is not the portal's");
        g.roll_day_at(at("2026-12-02T05:00:00Z"));
        assert_eq!(g.daily_count, 0);
    }

    #[tokio::test]
    async fn search_limit() {
        let mut g = GateState::new(Tz::UTC, Some(1), None, 2, &[], &[]);
        g.admit_search(&ident(false)).unwrap();
        g.admit_search(&ident(false)).unwrap();
        let err = g.admit_search(&ident(false)).unwrap_err();
        assert_eq!(err.body["policyName"], "SECONDLY");
        // Search did not use the burst window.
        assert!(g.admit(&ident(false)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn oauth_tokens_expire() {
        let mut g = GateState::new(Tz::UTC, None, None, 5, &[], &[]);
        let t = g.issue_token(Duration::from_secs(30));
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        assert!(g.authenticate(&[], &h).unwrap().oauth);
        tokio::time::advance(Duration::from_secs(32)).await;
        let err = g.authenticate(&[], &h).unwrap_err();
        assert_eq!(err.body["category"], "EXPIRED_AUTHENTICATION");
        assert_eq!(
            err.body["message"],
            "The OAuth token used to make this call expired 2 second(s) ago."
        );
        h.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer nope".parse().unwrap(),
        );
        assert_eq!(
            g.authenticate(&["ok".into()], &h).unwrap_err().body["category"],
            "INVALID_AUTHENTICATION"
        );
    }
}
