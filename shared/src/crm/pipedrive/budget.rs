//! Pipedrive's token budget: every request costs the tokens its operation's `x-token-cost`
//! says, counted against our own daily budget and the server's daily limit; a request the day
//! cannot pay for is not sent. What Pipedrive's answers say about its limits (the
//! [`RatePolicy`]):
//!
//! - Pipedrive documents (developers.pipedrive.com, "Rate limiting") a burst limit per rolling
//!   2-second window, reported on every answer by `x-ratelimit-limit`, `x-ratelimit-remaining`
//!   and `x-ratelimit-reset` (seconds until the window resets), and a daily token budget per
//!   company: "Once the budget is used up, all further API requests will be rejected with a 429
//!   (Too Many Requests)"; it "resets at midnight at server's timezone".
//! - So a 429 whose `x-ratelimit-remaining` is 0 is the burst window: wait `x-ratelimit-reset`.
//!   A 429 while the window still has room (`x-ratelimit-remaining` above 0) is the daily
//!   budget: stop calling. The body says nothing documented either way and is not read.
//! - `x-daily-ratelimit-token-remaining` (not in the docs; reported by third parties, and
//!   missing at times) is used when it is there: 0, or less than a call costs, spends the day.
//! - A 429 with none of these headers cannot be told: the first ones back off as a burst, and
//!   when they keep coming the client pauses, longer each time, instead of storming.
//! - The server's "midnight" is in a time zone it does not tell: a spent day is probed again at
//!   the top of each hour (one request an hour), our own daily budget counts UTC days.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;
use tracing::warn;

use crate::crm::pacer::next_midnight_utc;
use crate::crm::transport::{RatePolicy, Throttle, header_u64};

#[derive(Default)]
pub(super) struct Ledger {
    day: Option<NaiveDate>,
    /// Tokens spent today as far as we know (our own costs, or the server's count when its
    /// headers say more).
    spent: u64,
    /// The server's `x-daily-ratelimit-token-remaining` from the last answer, and until when
    /// it holds (the server's day may end at any hour).
    server_remaining: Option<(u64, DateTime<Utc>)>,
}

impl Ledger {
    fn roll(&mut self, today: NaiveDate) {
        if self.day != Some(today) {
            *self = Ledger {
                day: Some(today),
                ..Default::default()
            };
        }
    }
}

/// The daily budget of one Pipedrive client.
pub(super) struct Budget {
    /// Tokens we allow ourselves per UTC day (`None`: only the server's answers count).
    daily: Option<u64>,
    ledger: Mutex<Ledger>,
    /// Tokens of the requests the server admitted (spec costs), since start.
    spent_total: Mutex<u64>,
    /// 429s in a row that no header explained.
    unexplained: Mutex<u32>,
}

/// Unexplained 429s in a row that back off as bursts; the ones after them pause the client.
const UNEXPLAINED_AS_BURST: u32 = 2;
/// The longest pause after unexplained 429s.
const MAX_UNEXPLAINED_PAUSE: Duration = Duration::from_secs(3600);

/// When to ask the server again after its daily budget ran out: the top of the next hour (its
/// midnight is at some whole hour of UTC in almost every time zone), half a minute past.
pub(super) fn next_probe(now: DateTime<Utc>) -> DateTime<Utc> {
    let secs = now.timestamp();
    let next_hour = secs - secs.rem_euclid(3600) + 3600 + 30;
    DateTime::from_timestamp(next_hour, 0).unwrap_or(now)
}

impl Budget {
    pub(super) fn new(daily: Option<u64>) -> Self {
        Self {
            daily,
            ledger: Mutex::default(),
            spent_total: Mutex::new(0),
            unexplained: Mutex::new(0),
        }
    }

    pub(super) fn daily(&self) -> Option<u64> {
        self.daily
    }

    pub(super) fn tokens_spent(&self) -> u64 {
        *self.spent_total.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RatePolicy for Budget {
    /// Refuses a call that the daily budget cannot pay for.
    fn admit(&self, cost: u64) -> Result<(), DateTime<Utc>> {
        let now = Utc::now();
        let mut l = self.ledger();
        l.roll(now.date_naive());
        let over_ours = self.daily.is_some_and(|b| l.spent + cost > b);
        if over_ours {
            warn!(
                spent = l.spent,
                "our daily Pipedrive token budget is spent; pausing until midnight UTC"
            );
            return Err(next_midnight_utc(now));
        }
        if let Some((left, until)) = l.server_remaining
            && left < cost
            && until > now
        {
            warn!(left, "Pipedrive's daily token budget is spent; pausing");
            return Err(until);
        }
        Ok(())
    }

    /// Counts an admitted request against the day and reads the budget headers.
    fn on_answer(&self, headers: &HeaderMap, cost: u64) -> Option<Throttle> {
        let remaining = header_u64(headers, "x-daily-ratelimit-token-remaining");
        let limit = header_u64(headers, "x-daily-ratelimit-token-limit");
        {
            let mut l = self.ledger();
            l.roll(Utc::now().date_naive());
            l.spent += cost;
            if let (Some(limit), Some(rem)) = (limit, remaining) {
                l.spent = l.spent.max(limit.saturating_sub(rem));
            }
            if let Some(left) = remaining {
                l.server_remaining = Some((left, next_probe(Utc::now())));
            }
        }
        *self.spent_total.lock().unwrap_or_else(|p| p.into_inner()) += cost;
        *self.unexplained.lock().unwrap_or_else(|p| p.into_inner()) = 0;
        if remaining == Some(0) {
            return Some(Throttle::Daily(next_probe(Utc::now())));
        }
        if header_u64(headers, "x-ratelimit-remaining") == Some(0) {
            // Someone else shares the token's window: wait for it to roll.
            let reset = header_u64(headers, "x-ratelimit-reset")
                .unwrap_or(2)
                .min(60);
            return Some(Throttle::Burst(Duration::from_secs(reset)));
        }
        None
    }

    fn daily_budget(&self) -> Option<u64> {
        self.daily
    }

    /// Tells the daily budget from the burst window by the documented headers (see the
    /// module docs); the body is not read.
    fn on_429(&self, headers: &HeaderMap, _body: &Value, cost: u64) -> Throttle {
        let now = Utc::now();
        if header_u64(headers, "x-daily-ratelimit-token-remaining").is_some_and(|r| r < cost) {
            return Throttle::Daily(next_probe(now));
        }
        let mut unexplained = self.unexplained.lock().unwrap_or_else(|p| p.into_inner());
        match header_u64(headers, "x-ratelimit-remaining") {
            Some(0) => {
                *unexplained = 0;
                Throttle::Burst(Duration::from_secs(
                    header_u64(headers, "x-ratelimit-reset")
                        .unwrap_or(2)
                        .clamp(1, 60),
                ))
            }
            // The window had room, yet the request was refused: the day's budget is used up.
            Some(_) => {
                *unexplained = 0;
                Throttle::Daily(next_probe(now))
            }
            None => {
                *unexplained += 1;
                let n = *unexplained;
                if n <= UNEXPLAINED_AS_BURST {
                    return Throttle::Burst(Duration::from_secs(1u64 << n));
                }
                // 1, 2, 4, … minutes, at most an hour.
                let pause = Duration::from_secs(60u64 << (n - UNEXPLAINED_AS_BURST - 1).min(6))
                    .min(MAX_UNEXPLAINED_PAUSE);
                warn!(
                    in_a_row = n,
                    ?pause,
                    "Pipedrive keeps answering 429 with no rate-limit headers; pausing"
                );
                Throttle::Daily(now + pause)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_rolls_over_at_midnight() {
        let mut l = Ledger::default();
        let d1 = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        l.roll(d1);
        l.spent = 500;
        l.server_remaining = Some((3, Utc::now()));
        l.roll(d1);
        assert_eq!(l.spent, 500);
        l.roll(d1.succ_opt().unwrap());
        assert_eq!((l.spent, l.server_remaining), (0, None));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_429_is_told_by_the_documented_headers() {
        let b = Budget::new(None);
        let burst = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "2")]);
        assert_eq!(
            b.on_429(&burst, &Value::Null, 1),
            Throttle::Burst(Duration::from_secs(2))
        );
        let daily = headers(&[("x-ratelimit-remaining", "7"), ("x-ratelimit-reset", "2")]);
        assert!(matches!(
            b.on_429(&daily, &Value::Null, 1),
            Throttle::Daily(t) if t > Utc::now() && t <= Utc::now() + chrono::Duration::minutes(61)
        ));
    }

    #[test]
    fn unexplained_429s_back_off_then_pause_longer_each_time() {
        let b = Budget::new(None);
        let bare = HeaderMap::new();
        assert!(matches!(
            b.on_429(&bare, &Value::Null, 1),
            Throttle::Burst(_)
        ));
        assert!(matches!(
            b.on_429(&bare, &Value::Null, 1),
            Throttle::Burst(_)
        ));
        let pause = |t: Throttle| match t {
            Throttle::Daily(until) => (until - Utc::now()).num_seconds(),
            other => panic!("{other:?}"),
        };
        let p1 = pause(b.on_429(&bare, &Value::Null, 1));
        let p2 = pause(b.on_429(&bare, &Value::Null, 1));
        assert!((55..=60).contains(&p1), "{p1}");
        assert!((115..=120).contains(&p2), "{p2}");
        for _ in 0..10 {
            b.on_429(&bare, &Value::Null, 1);
        }
        assert!(pause(b.on_429(&bare, &Value::Null, 1)) <= 3600);
        // An answer ends the run.
        b.on_answer(&HeaderMap::new(), 1);
        assert!(matches!(
            b.on_429(&bare, &Value::Null, 1),
            Throttle::Burst(_)
        ));
    }

    #[test]
    fn a_spent_day_is_probed_at_the_next_hour() {
        let t = "2026-11-27T13:45:10Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(next_probe(t).to_rfc3339(), "2026-11-27T14:00:30+00:00");
    }
}
