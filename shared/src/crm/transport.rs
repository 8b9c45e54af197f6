//! The HTTP transport every CRM client shares: pacing (a request holds a place in each of its
//! rolling windows until its answer arrived), the JSON answer, 429 handling (a burst waits for
//! the CRM's reset and retries; a spent daily quota latches the CRM until its reset, with no
//! request meanwhile), a budget checked before each request, and credentials that stay fresh
//! (OAuth tokens refreshed a minute before expiry, one refresh at a time; one retry when the CRM
//! refuses a token early).
//!
//! What a CRM's answers mean differs: each brings a [`RatePolicy`] and its [`Credentials`].

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex as AsyncMutex;

use super::pacer::{QuotaLatch, RollingWindow};
use crate::domain::{Provider, TenantId};
use crate::error::CrmError;
use crate::ports::{Admission, LaneLimit, SharedLimits};

/// What a rate-limit answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The daily quota is spent until then: stop calling.
    Daily(DateTime<Utc>),
    /// The burst window is full: wait this long and retry.
    Burst(Duration),
}

/// How one CRM counts and limits requests.
pub trait RatePolicy: Send + Sync {
    /// Before a request of `cost` (in the CRM's units): refuse it when a budget of ours cannot
    /// pay for it, with the time it can again.
    fn admit(&self, _cost: u64) -> Result<(), DateTime<Utc>> {
        Ok(())
    }
    /// After an answer that is not a 429: what its headers say (a quota the answer spent, a
    /// window someone else shares).
    fn on_answer(&self, _headers: &HeaderMap, _cost: u64) -> Option<Throttle> {
        None
    }
    /// What a 429 means.
    fn on_429(&self, headers: &HeaderMap, body: &Value, cost: u64) -> Throttle;
    /// Our own daily budget in the CRM's units, counted by every worker of the tenant.
    fn daily_budget(&self) -> Option<u64> {
        None
    }
}

/// Where a request goes and how it authenticates.
#[async_trait]
pub trait Credentials: Send + Sync {
    /// The base URL and the auth header (name, value) for the next request.
    async fn current(&self) -> Result<(String, &'static str, String), CrmError>;
    /// The CRM refused the credentials (401): forget a cached token; true when a retry with
    /// fresh ones may succeed.
    async fn refused(&self) -> bool {
        false
    }
}

/// An OAuth access token and when it expires.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub access_token: String,
    pub expires_at: DateTime<Utc>,
    /// The API root the token is for, when the token response says (Pipedrive's `api_domain`).
    pub api_domain: Option<String>,
}

/// The current OAuth access token: refreshed a minute before it expires, by one caller at a
/// time (the others wait for that refresh instead of starting their own).
#[derive(Default)]
pub struct TokenCache(AsyncMutex<Option<AccessToken>>);

impl TokenCache {
    /// The cached token while it is good for another minute, else `refresh()`'s.
    pub async fn get<F, Fut>(&self, refresh: F) -> Result<AccessToken, CrmError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<AccessToken, CrmError>>,
    {
        let mut cached = self.0.lock().await;
        if let Some(t) = cached.as_ref()
            && t.expires_at - chrono::Duration::seconds(60) > Utc::now()
        {
            return Ok(t.clone());
        }
        let fresh = refresh().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forgets the token (the CRM refused it).
    pub async fn clear(&self) {
        *self.0.lock().await = None;
    }
}

/// One request.
pub struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub query: &'a [(&'a str, String)],
    pub body: Option<&'a Value>,
    /// The windows it must pass (e.g. the burst window, and the search window for a search).
    pub lanes: &'a [&'a RollingWindow],
    /// What it costs against the CRM's budget (Pipedrive's tokens; 1 elsewhere).
    pub cost: u64,
}

/// Counters of what the transport did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub requests: u64,
    pub rate_limited: u64,
}

/// A request is not sent when less than this is left before the job's deadline.
const MIN_CALL_TIME: Duration = Duration::from_secs(1);

/// Why the shared limits did not let a request go.
enum Refusal {
    /// Our daily budget is spent until then.
    Spent(DateTime<Utc>),
    /// The wait for a place would cross the job's deadline.
    Late(Duration),
}

/// The job runs again after `wait`: it would have crossed its deadline.
fn out_of_time(provider: Provider, wait: Duration) -> CrmError {
    CrmError::OutOfTime {
        provider,
        resume_at: Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
    }
}

/// An HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Where a built request goes instead of the network: a CRM in process (the deterministic
/// simulation runs the real clients against the simulators this way, on its virtual clock).
/// An `Err` is a transport failure (no answer), with its message.
#[async_trait]
pub trait Exchange: Send + Sync {
    async fn exchange(&self, request: reqwest::Request) -> Result<Answer, String>;
}

/// A client's requests sent through an [`Exchange`], and its time read from a clock.
struct InProcess {
    exchange: Arc<dyn Exchange>,
    clock: crate::ports::Clock,
}

/// The limits a client shares with every other worker of its tenant.
struct Shared {
    limits: Arc<dyn SharedLimits>,
    tenant: TenantId,
}

/// Places this process took in the shared limits ahead of use, for lanes with no daily budget
/// to pay from: `left` sends before `until`.
#[derive(Debug, Clone, Copy)]
struct Lease {
    left: u32,
    until: std::time::Instant,
}

/// How many places a request takes ahead (a sync's read, its write and its check), and for how
/// long: a CRM round trip or three.
const LEASE_EXTRA: u32 = 2;
const LEASE: Duration = Duration::from_secs(1);
/// A leased place is given up this long before its lease ends (the send must be on its way).
const LEASE_MARGIN: Duration = Duration::from_millis(100);

/// The shared transport of one CRM client.
pub struct Transport {
    provider: Provider,
    http: reqwest::Client,
    quota: QuotaLatch,
    max_rate_limit_retries: u32,
    stats: Mutex<TransportStats>,
    shared: OnceLock<Shared>,
    in_process: OnceLock<InProcess>,
    /// Leased places, by the lanes they are in.
    leases: Mutex<std::collections::BTreeMap<Vec<&'static str>, Lease>>,
}

impl Transport {
    pub fn new(provider: Provider, http: reqwest::Client, max_rate_limit_retries: u32) -> Self {
        Self {
            provider,
            http,
            quota: QuotaLatch::default(),
            max_rate_limit_retries,
            stats: Mutex::default(),
            shared: OnceLock::new(),
            in_process: OnceLock::new(),
            leases: Mutex::default(),
        }
    }

    /// From now on requests go through `exchange` instead of the network, and the client's
    /// notion of now is `clock` (set once; later calls are ignored).
    pub fn exchange_through(&self, exchange: Arc<dyn Exchange>, clock: crate::ports::Clock) {
        let _ = self.in_process.set(InProcess { exchange, clock });
    }

    /// The time: the clock set with [`Transport::exchange_through`], else the system's.
    pub fn now(&self) -> DateTime<Utc> {
        self.in_process.get().map_or_else(Utc::now, |p| (p.clock)())
    }

    /// Sends a built request through the exchange, or over the network.
    async fn execute(&self, request: reqwest::Request) -> Result<Answer, CrmError> {
        let provider = self.provider;
        let unavailable = |e| unavailable(provider, e);
        if let Some(p) = self.in_process.get() {
            return p
                .exchange
                .exchange(request)
                .await
                .map_err(|message| CrmError::Unavailable { provider, message });
        }
        let resp = self.http.execute(request).await.map_err(unavailable)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(unavailable)?.to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// From now on every request also takes its place in the limits `limits` keeps for
    /// `tenant`, which every worker of the tenant shares (set once; later calls are ignored).
    pub fn share_limits(&self, limits: Arc<dyn SharedLimits>, tenant: TenantId) {
        let _ = self.shared.set(Shared { limits, tenant });
    }

    /// Takes the request's place in the shared limits, waiting while they are full (not past
    /// the job's deadline).
    async fn admit_shared(&self, call: &Call<'_>, policy: &dyn RatePolicy) -> Result<(), Refusal> {
        let Some(shared) = self.shared.get() else {
            return Ok(());
        };
        let lanes: Vec<LaneLimit> = call.lanes.iter().map(|l| l.limit()).collect();
        // With no budget of ours to pay from, a place leased earlier serves without a store
        // round trip (a budget is paid per request, so it is never leased).
        let leasing = policy.daily_budget().is_none() && !lanes.is_empty();
        let names: Vec<&'static str> = lanes.iter().map(|l| l.lane).collect();
        if leasing && self.take_leased(&names) {
            return Ok(());
        }
        loop {
            let asked = std::time::Instant::now();
            let admitted = if leasing {
                shared
                    .limits
                    .admit_leased(&shared.tenant, self.provider, &lanes, LEASE_EXTRA, LEASE)
                    .await
            } else {
                shared
                    .limits
                    .admit(
                        &shared.tenant,
                        self.provider,
                        &lanes,
                        call.cost,
                        policy.daily_budget(),
                    )
                    .await
                    .map(|a| (a, 0))
            };
            match admitted {
                Ok((Admission::Go, extra)) => {
                    if extra > 0 {
                        self.leases
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(
                                names,
                                Lease {
                                    left: extra,
                                    until: asked + LEASE - LEASE_MARGIN,
                                },
                            );
                    }
                    return Ok(());
                }
                Ok((Admission::Wait(wait), _)) => {
                    if crate::deadline::would_cross(wait) {
                        return Err(Refusal::Late(wait));
                    }
                    let jitter =
                        Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 32));
                    tokio::time::sleep(wait + jitter).await;
                }
                Ok((Admission::Spent(until), _)) => return Err(Refusal::Spent(until)),
                Err(e) => {
                    // The CRM's own 429s still pace us: better late limits than no sync.
                    tracing::warn!(provider = %self.provider, tenant = %shared.tenant, error = %e, "shared limits unreachable; pacing by this worker alone");
                    return Ok(());
                }
            }
        }
    }

    /// Spends a place leased for exactly these lanes, if one is left and its lease runs.
    fn take_leased(&self, names: &[&'static str]) -> bool {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        leases.retain(|_, l| l.left > 0 && l.until > now);
        match leases.get_mut(names) {
            Some(l) => {
                l.left -= 1;
                true
            }
            None => false,
        }
    }

    /// Holds every worker's requests in the call's lanes back for `pause`.
    async fn back_off_shared(&self, call: &Call<'_>, pause: Duration) {
        // The places leased before the CRM said stop are given up.
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for lane in call.lanes {
            lane.back_off(pause);
        }
        if let Some(shared) = self.shared.get() {
            let names: Vec<&'static str> = call.lanes.iter().map(|l| l.limit().lane).collect();
            if let Err(e) = shared
                .limits
                .back_off(&shared.tenant, self.provider, &names, pause)
                .await
            {
                tracing::warn!(provider = %self.provider, error = %e, "could not share a back-off");
            }
        }
    }

    pub fn stats(&self) -> TransportStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self, f: impl FnOnce(&mut TransportStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The HTTP client (for calls outside the API, such as a token refresh).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn spent(&self, until: DateTime<Utc>) -> CrmError {
        self.quota.set(until);
        CrmError::QuotaExhausted {
            provider: self.provider,
            until,
        }
    }

    /// Sends one request, paced and with fresh credentials, riding out burst 429s. Returns the
    /// status and the JSON body (`Null` when empty, a string when not JSON).
    pub async fn send(
        &self,
        call: &Call<'_>,
        credentials: &dyn Credentials,
        policy: &dyn RatePolicy,
    ) -> Result<(StatusCode, Value), CrmError> {
        let provider = self.provider;
        let unavailable = |e| unavailable(provider, e);
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            if let Some(until) = self.quota.spent_until() {
                return Err(CrmError::QuotaExhausted { provider, until });
            }
            if let Err(until) = policy.admit(call.cost) {
                return Err(self.spent(until));
            }
            // A request that could not be answered before the job's deadline is not sent.
            if crate::deadline::remaining().is_some_and(|left| left < MIN_CALL_TIME) {
                return Err(out_of_time(provider, Duration::ZERO));
            }
            // Held until the answer is read: the windows count from then.
            let mut slots = Vec::with_capacity(call.lanes.len());
            for lane in call.lanes {
                slots.push(
                    lane.acquire()
                        .await
                        .map_err(|wait| out_of_time(provider, wait))?,
                );
            }
            // Then the place every worker sees, right before the send.
            match self.admit_shared(call, policy).await {
                Ok(()) => {}
                Err(Refusal::Spent(until)) => return Err(self.spent(until)),
                Err(Refusal::Late(wait)) => return Err(out_of_time(provider, wait)),
            }
            let (base, auth_name, auth_value) = credentials.current().await?;
            let mut req = self
                .http
                .request(call.method.clone(), format!("{base}{}", call.path))
                .header(auth_name, auth_value)
                .header(reqwest::header::ACCEPT, "application/json")
                .query(call.query);
            if let Some(b) = call.body {
                req = req.json(b);
            }
            self.bump(|s| s.requests += 1);
            let started = crate::timing::start();
            let Answer {
                status,
                headers,
                body: bytes,
            } = self.execute(req.build().map_err(unavailable)?).await?;
            crate::timing::crm(started);
            drop(slots);
            let json: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            if status != StatusCode::TOO_MANY_REQUESTS {
                match policy.on_answer(&headers, call.cost) {
                    Some(Throttle::Daily(until)) => {
                        self.quota.set(until);
                        tracing::warn!(%provider, %until, "daily quota spent; pausing until the reset");
                    }
                    Some(Throttle::Burst(wait)) => self.back_off_shared(call, wait).await,
                    None => {}
                }
                if status == StatusCode::UNAUTHORIZED
                    && !reauthenticated
                    && credentials.refused().await
                {
                    // The access token was revoked or expired early: refresh once.
                    reauthenticated = true;
                    continue;
                }
                return Ok((status, json));
            }
            self.bump(|s| s.rate_limited += 1);
            match policy.on_429(&headers, &json, call.cost) {
                Throttle::Daily(until) => {
                    tracing::warn!(%provider, %until, "daily quota spent (429); pausing until the reset");
                    return Err(self.spent(until));
                }
                Throttle::Burst(wait) => {
                    attempt += 1;
                    if attempt > self.max_rate_limit_retries {
                        return Err(CrmError::RateLimited {
                            provider,
                            retry_after: wait,
                        });
                    }
                    let jitter =
                        Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_bytes()[0]));
                    tracing::debug!(%provider, ?wait, attempt, "burst limit hit; waiting");
                    self.back_off_shared(call, wait + jitter).await;
                }
            }
        }
    }
}

/// A header's value as a number.
pub fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A request that got no answer (or none readable), without its URL (it may carry a token).
fn unavailable(provider: Provider, e: reqwest::Error) -> CrmError {
    CrmError::Unavailable {
        provider,
        message: e.without_url().to_string(),
    }
}
