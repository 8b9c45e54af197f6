//! Client-side pacing: a rolling-window limiter per tenant × provider, and the daily-quota latch.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Allows at most `max` acquisitions in any `window` (a rolling window, like HubSpot's
/// ten-secondly and Pipedrive's two-secondly burst limits). Waiters sleep; they never spin.
#[derive(Debug)]
pub struct RollingWindow {
    max: usize,
    window: Duration,
    stamps: Mutex<VecDeque<Instant>>,
}

impl RollingWindow {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1) as usize,
            window,
            stamps: Mutex::new(VecDeque::new()),
        }
    }

    /// How long until a slot is free, taking it when free now.
    fn try_take(&self, now: Instant) -> Option<Duration> {
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        while stamps
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            stamps.pop_front();
        }
        if stamps.len() < self.max {
            stamps.push_back(now);
            None
        } else {
            let oldest = *stamps.front().expect("non-empty");
            Some(self.window.saturating_sub(now.duration_since(oldest)) + Duration::from_millis(1))
        }
    }

    /// Waits for a slot.
    pub async fn acquire(&self) {
        while let Some(wait) = self.try_take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Blocks new acquisitions for `pause` (after a 429 whose window we misjudged).
    pub fn back_off(&self, pause: Duration) {
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + pause;
        // Fill the window with stamps that expire at `until`.
        let stamp = until.checked_sub(self.window).unwrap_or_else(Instant::now);
        stamps.clear();
        for _ in 0..self.max {
            stamps.push_back(stamp);
        }
    }
}

/// Remembers that a provider's daily quota is spent, so no call is made until the reset.
#[derive(Debug, Default)]
pub struct QuotaLatch {
    until: Mutex<Option<DateTime<Utc>>>,
}

impl QuotaLatch {
    pub fn spent_until(&self) -> Option<DateTime<Utc>> {
        let mut g = self.until.lock().unwrap_or_else(|p| p.into_inner());
        match *g {
            Some(t) if t > Utc::now() => Some(t),
            Some(_) => {
                *g = None;
                None
            }
            None => None,
        }
    }

    pub fn set(&self, until: DateTime<Utc>) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }
}

/// The next midnight UTC (daily quotas reset at midnight in the account's zone; UTC is the
/// conservative guess when the response does not say).
pub fn next_midnight_utc(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now.date_naive().succ_opt().unwrap_or(now.date_naive());
    tomorrow
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rolling_window_spaces_bursts() {
        let w = RollingWindow::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..3 {
            w.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(5));
        w.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_blocks_for_the_pause() {
        let w = RollingWindow::new(5, Duration::from_secs(2));
        let start = Instant::now();
        w.back_off(Duration::from_secs(3));
        w.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[test]
    fn quota_latch_expires() {
        let q = QuotaLatch::default();
        assert_eq!(q.spent_until(), None);
        let later = Utc::now() + chrono::Duration::hours(1);
        q.set(later);
        assert_eq!(q.spent_until(), Some(later));
        q.set(Utc::now() - chrono::Duration::seconds(1));
        assert_eq!(q.spent_until(), None);
    }

    #[test]
    fn midnight() {
        let t = "2026-11-27T13:45:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            next_midnight_utc(t).to_rfc3339(),
            "2026-11-28T00:00:00+00:00"
        );
    }
}
