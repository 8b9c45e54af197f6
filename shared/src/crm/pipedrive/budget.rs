//! Pipedrive's token budget: every request costs the tokens its operation's `x-token-cost`
//! says, counted against our own daily budget and the server's daily limit; a request the day
//! cannot pay for is not sent. What Pipedrive's answers say about its limits (the
//! [`RatePolicy`]): `x-daily-ratelimit-token-remaining` of 0, or a daily 429, spends the day;
//! a burst 429 waits for `x-ratelimit-reset`; a full shared window (`x-ratelimit-remaining: 0`)
//! waits for its reset too.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;
use tracing::warn;

use super::error_message;
use crate::crm::pacer::next_midnight_utc;
use crate::crm::transport::{RatePolicy, Throttle, header_u64};

#[derive(Default)]
pub(super) struct Ledger {
    day: Option<NaiveDate>,
    /// Tokens spent today as far as we know (our own costs, or the server's count when its
    /// headers say more).
    spent: u64,
    /// The server's `x-daily-ratelimit-token-remaining` from the last answer.
    server_remaining: Option<u64>,
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
}

impl Budget {
    pub(super) fn new(daily: Option<u64>) -> Self {
        Self {
            daily,
            ledger: Mutex::default(),
            spent_total: Mutex::new(0),
        }
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
        let over_server = l.server_remaining.is_some_and(|r| r < cost);
        if over_ours || over_server {
            warn!(
                spent = l.spent,
                "Pipedrive daily token budget spent; pausing until midnight"
            );
            return Err(next_midnight_utc(now));
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
            if remaining.is_some() {
                l.server_remaining = remaining;
            }
        }
        *self.spent_total.lock().unwrap_or_else(|p| p.into_inner()) += cost;
        if remaining == Some(0) {
            return Some(Throttle::Daily(next_midnight_utc(Utc::now())));
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

    fn on_429(&self, headers: &HeaderMap, body: &Value, cost: u64) -> Throttle {
        let daily_left = header_u64(headers, "x-daily-ratelimit-token-remaining");
        let says_daily = error_message(body).to_lowercase().contains("daily");
        if says_daily || daily_left.is_some_and(|r| r < cost) {
            return Throttle::Daily(next_midnight_utc(Utc::now()));
        }
        Throttle::Burst(Duration::from_secs(
            header_u64(headers, "x-ratelimit-reset")
                .unwrap_or(2)
                .clamp(1, 60),
        ))
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
        l.server_remaining = Some(3);
        l.roll(d1);
        assert_eq!(l.spent, 500);
        l.roll(d1.succ_opt().unwrap());
        assert_eq!((l.spent, l.server_remaining), (0, None));
    }
}
