//! The shared limits ([`SharedLimits`]) laid out over the key-value port, so the embedded store
//! and DynamoDB keep them alike: one `limits#<provider>` item in the tenant's partition holds,
//! per lane, the send times of the requests still in its window and a back-off, and the day's
//! spend against our own budget. Every admission is one conditional read-modify-write: two
//! workers never take the same place.
//!
//! A CRM counts a request when it arrives, a little after we sent it. A lane's shared window is
//! therefore a margin longer than the CRM's (a twentieth, at least 100 ms): sends spaced so never
//! arrive closer together than the CRM allows. Each process also holds a request's place from
//! send to answer in its own window ([`crate::crm::pacer::RollingWindow`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::state::StateKv;
use crate::crm::pacer::next_midnight_utc;
use crate::domain::{Provider, TenantId};
use crate::error::StoreError;
use crate::ports::{Admission, LaneLimit, SharedLimits};

#[derive(Debug, Default, Serialize, Deserialize)]
struct LaneState {
    /// Send times (ms since the epoch) of the requests in the window, oldest first.
    #[serde(default)]
    sent: Vec<i64>,
    /// No request before this time (ms), after a 429.
    #[serde(default)]
    blocked_until: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LimitsState {
    #[serde(default)]
    lanes: BTreeMap<String, LaneState>,
    #[serde(default)]
    day: Option<NaiveDate>,
    #[serde(default)]
    spent: u64,
}

fn key(provider: Provider) -> String {
    format!("limits#{provider}")
}

fn parse(current: Option<&str>) -> Result<LimitsState, StoreError> {
    match current {
        Some(s) => serde_json::from_str(s).map_err(|e| StoreError::Backend(format!("limits: {e}"))),
        None => Ok(LimitsState::default()),
    }
}

fn render(state: &LimitsState) -> Result<Option<String>, StoreError> {
    serde_json::to_string(state)
        .map(Some)
        .map_err(|e| StoreError::Backend(format!("limits: {e}")))
}

/// The shared window of a lane: the CRM's, plus the margin for the way to the CRM.
fn shared_window(limit: &LaneLimit) -> i64 {
    let w = limit.window.as_millis() as i64;
    w + (w / 20).max(100)
}

/// The decision for one request at `now` (ms), and the state to store when it goes.
fn decide(
    state: &mut LimitsState,
    lanes: &[LaneLimit],
    cost: u64,
    budget: Option<u64>,
    now: DateTime<Utc>,
) -> Admission {
    decide_leased(state, lanes, cost, budget, now, 0, Duration::ZERO).0
}

/// [`decide`], and when the request goes, up to `extra` more places for sends within `lease`
/// from now, while every lane stays at most half full (a lease: fewer store round trips at low
/// load, none taken when places are scarce). Answers how many extra places it took.
///
/// A leased place is stamped at the end of the lease, `now + lease`: whenever within the lease
/// its send goes, every window it can share with another send is one that holds that stamp as
/// long as the other send's admission can look (the send comes no later than its stamp), so a
/// later admission counts it and an earlier one was counted by it.
fn decide_leased(
    state: &mut LimitsState,
    lanes: &[LaneLimit],
    cost: u64,
    budget: Option<u64>,
    now: DateTime<Utc>,
    extra: u32,
    lease: Duration,
) -> (Admission, u32) {
    let now_ms = now.timestamp_millis();
    let today = now.date_naive();
    if state.day != Some(today) {
        state.day = Some(today);
        state.spent = 0;
    }
    if budget.is_some_and(|b| state.spent + cost > b) {
        return (Admission::Spent(next_midnight_utc(now)), 0);
    }
    let mut wait_ms = 0i64;
    for limit in lanes {
        let lane = state.lanes.entry(limit.lane.to_string()).or_default();
        let window = shared_window(limit);
        lane.sent.retain(|t| now_ms - t < window);
        if lane.blocked_until > now_ms {
            wait_ms = wait_ms.max(lane.blocked_until - now_ms);
        }
        if lane.sent.len() >= limit.max.max(1) as usize {
            let oldest = lane.sent.iter().min().copied().unwrap_or(now_ms);
            wait_ms = wait_ms.max(oldest + window - now_ms);
        }
    }
    if wait_ms > 0 {
        return (
            Admission::Wait(Duration::from_millis(wait_ms as u64 + 1)),
            0,
        );
    }
    let room = lanes
        .iter()
        .map(|limit| {
            let used = state.lanes.get(limit.lane).map_or(0, |l| l.sent.len()) + 1;
            (limit.max as usize / 2).saturating_sub(used)
        })
        .min()
        .unwrap_or(0);
    let extra = if lanes.is_empty() {
        0
    } else {
        (extra as usize).min(room)
    };
    let leased_until = now_ms + lease.as_millis() as i64;
    for limit in lanes {
        if let Some(lane) = state.lanes.get_mut(limit.lane) {
            lane.sent.push(now_ms);
            lane.sent.extend(std::iter::repeat_n(leased_until, extra));
        }
    }
    state.spent += cost;
    (Admission::Go, extra as u32)
}

#[async_trait]
impl<K: StateKv> SharedLimits for K {
    async fn admit(
        &self,
        tenant: &TenantId,
        provider: Provider,
        lanes: &[LaneLimit],
        cost: u64,
        daily_budget: Option<u64>,
    ) -> Result<Admission, StoreError> {
        let outcome = Mutex::new(Admission::Go);
        self.kv_update(tenant.as_str(), &key(provider), &|current| {
            let mut state = parse(current)?;
            let decision = decide(&mut state, lanes, cost, daily_budget, Utc::now());
            *outcome.lock().unwrap_or_else(|p| p.into_inner()) = decision;
            match decision {
                Admission::Go => render(&state),
                Admission::Wait(_) | Admission::Spent(_) => Ok(None),
            }
        })
        .await?;
        Ok(outcome.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    async fn admit_leased(
        &self,
        tenant: &TenantId,
        provider: Provider,
        lanes: &[LaneLimit],
        extra: u32,
        lease: Duration,
    ) -> Result<(Admission, u32), StoreError> {
        let outcome = Mutex::new((Admission::Go, 0));
        self.kv_update(tenant.as_str(), &key(provider), &|current| {
            let mut state = parse(current)?;
            let decision = decide_leased(&mut state, lanes, 0, None, Utc::now(), extra, lease);
            *outcome.lock().unwrap_or_else(|p| p.into_inner()) = decision;
            match decision.0 {
                Admission::Go => render(&state),
                Admission::Wait(_) | Admission::Spent(_) => Ok(None),
            }
        })
        .await?;
        Ok(outcome.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    async fn back_off(
        &self,
        tenant: &TenantId,
        provider: Provider,
        lanes: &[&'static str],
        pause: Duration,
    ) -> Result<(), StoreError> {
        let until = Utc::now().timestamp_millis() + pause.as_millis() as i64;
        self.kv_update(tenant.as_str(), &key(provider), &|current| {
            let mut state = parse(current)?;
            for lane in lanes {
                let l = state.lanes.entry((*lane).to_string()).or_default();
                l.blocked_until = l.blocked_until.max(until);
            }
            render(&state)
        })
        .await
    }

    async fn spent_today(&self, tenant: &TenantId, provider: Provider) -> Result<u64, StoreError> {
        let state = parse(
            self.kv_get(tenant.as_str(), &key(provider))
                .await?
                .as_deref(),
        )?;
        Ok(if state.day == Some(Utc::now().date_naive()) {
            state.spent
        } else {
            0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BURST: LaneLimit = LaneLimit {
        lane: "general",
        max: 3,
        window: Duration::from_secs(2),
    };

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_780_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_full_lane_waits_for_its_oldest_send_to_leave_the_shared_window() {
        let mut s = LimitsState::default();
        for t in [0, 10, 20] {
            assert_eq!(decide(&mut s, &[BURST], 1, None, at(t)), Admission::Go);
        }
        // 2 s window + 100 ms margin from the first send.
        assert_eq!(
            decide(&mut s, &[BURST], 1, None, at(100)),
            Admission::Wait(Duration::from_millis(2_001))
        );
        assert_eq!(decide(&mut s, &[BURST], 1, None, at(2_100)), Admission::Go);
    }

    #[test]
    fn the_day_s_budget_is_shared_and_starts_again_at_midnight_utc() {
        let mut s = LimitsState::default();
        let lanes: [LaneLimit; 0] = [];
        assert_eq!(decide(&mut s, &lanes, 6, Some(10), at(0)), Admission::Go);
        assert!(matches!(
            decide(&mut s, &lanes, 6, Some(10), at(1)),
            Admission::Spent(_)
        ));
        assert_eq!(s.spent, 6, "a refused request costs nothing");
        let tomorrow = next_midnight_utc(at(0));
        assert_eq!(decide(&mut s, &lanes, 6, Some(10), tomorrow), Admission::Go);
        assert_eq!(s.spent, 6);
    }

    #[test]
    fn a_lease_takes_places_stamped_at_its_end_and_only_while_the_lane_is_half_empty() {
        const LANE: LaneLimit = LaneLimit {
            lane: "general",
            max: 10,
            window: Duration::from_secs(10),
        };
        let lease = Duration::from_secs(1);
        let mut s = LimitsState::default();
        assert_eq!(
            decide_leased(&mut s, &[LANE], 1, None, at(0), 2, lease),
            (Admission::Go, 2)
        );
        let stamps = s.lanes["general"].sent.clone();
        assert_eq!(
            stamps,
            vec![
                at(0).timestamp_millis(),
                at(1_000).timestamp_millis(),
                at(1_000).timestamp_millis()
            ]
        );
        // 3 of 10 taken: one more and one extra keep it at half.
        assert_eq!(
            decide_leased(&mut s, &[LANE], 1, None, at(10), 4, lease),
            (Admission::Go, 1)
        );
        // Half full: places go one at a time.
        assert_eq!(
            decide_leased(&mut s, &[LANE], 1, None, at(20), 4, lease),
            (Admission::Go, 0)
        );
        for t in 30..34 {
            assert_eq!(decide(&mut s, &[LANE], 1, None, at(t)), Admission::Go);
        }
        // Full: the first stamps leave the shared window (10 s + 500 ms) at 10.5 s, but the
        // leased ones (stamped at 1 s) only at 11.5 s.
        assert_eq!(
            decide(&mut s, &[LANE], 1, None, at(100)),
            Admission::Wait(Duration::from_millis(10_401))
        );
        assert_eq!(decide(&mut s, &[LANE], 1, None, at(10_500)), Admission::Go);
        assert!(matches!(
            decide(&mut s, &[LANE], 1, None, at(10_501)),
            Admission::Wait(_)
        ));
    }

    #[test]
    fn a_back_off_holds_the_lane() {
        let mut s = LimitsState::default();
        s.lanes.entry("general".into()).or_default().blocked_until = at(500).timestamp_millis();
        assert_eq!(
            decide(&mut s, &[BURST], 1, None, at(0)),
            Admission::Wait(Duration::from_millis(501))
        );
        assert_eq!(decide(&mut s, &[BURST], 1, None, at(500)), Admission::Go);
    }
}
