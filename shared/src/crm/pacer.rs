//! Client-side pacing: a rolling-window limiter per tenant × provider, and the daily-quota latch.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::ports::LaneLimit;
use tokio::time::Instant;

/// Allows at most `max` requests in any `window` (a rolling window, like HubSpot's
/// ten-secondly and Pipedrive's two-secondly burst limits). Waiters sleep; they never spin.
///
/// The CRM counts a request when it arrives, somewhere between our send and its answer. So a
/// request holds its place in the window from when it is sent until `window` after its answer
/// came back ([`Slot`] moves the stamp when dropped): however the network delays requests, the
/// CRM never sees more than `max` in any of its windows.
#[derive(Debug)]
pub struct RollingWindow {
    /// The lane's name in the limits shared with other workers.
    lane: &'static str,
    max: usize,
    window: Duration,
    stamps: Mutex<Stamps>,
}

#[derive(Debug, Default)]
struct Stamps {
    next_id: u64,
    /// `(slot id, when it counts from)`, oldest first.
    at: VecDeque<(u64, Instant)>,
}

/// A place in the window, held while the request is under way.
#[must_use = "a slot counts from when it is dropped: hold it until the answer has arrived"]
pub struct Slot<'a> {
    window: &'a RollingWindow,
    id: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut stamps = self.window.lock();
        let now = Instant::now();
        if let Some(stamp) = stamps.at.iter_mut().find(|(id, _)| *id == self.id) {
            stamp.1 = now;
        }
    }
}

impl RollingWindow {
    pub fn new(max: u32, window: Duration) -> Self {
        Self::named("main", max, window)
    }

    /// A window for the lane `lane` (its name where workers share the limit).
    pub fn named(lane: &'static str, max: u32, window: Duration) -> Self {
        Self {
            lane,
            max: max.max(1) as usize,
            window,
            stamps: Mutex::new(Stamps::default()),
        }
    }

    /// The limit this window keeps, as the shared limits count it.
    pub fn limit(&self) -> LaneLimit {
        LaneLimit {
            lane: self.lane,
            max: self.max as u32,
            window: self.window,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stamps> {
        self.stamps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place when one is free now (its id), else says how long to wait.
    fn try_take(&self, now: Instant) -> Result<u64, Duration> {
        let mut stamps = self.lock();
        // Stamps moved by finished slots can stand behind a newer one: drop every expired one.
        stamps
            .at
            .retain(|(_, t)| now.saturating_duration_since(*t) < self.window);
        if stamps.at.len() < self.max {
            stamps.next_id += 1;
            let id = stamps.next_id;
            stamps.at.push_back((id, now));
            Ok(id)
        } else {
            let oldest = stamps.at.iter().map(|(_, t)| *t).min().expect("non-empty");
            Err(self
                .window
                .saturating_sub(now.saturating_duration_since(oldest))
                + Duration::from_millis(1))
        }
    }

    /// Waits for a place in the window; hold the slot until the request's answer arrived.
    /// `Err(wait)`: the wait would cross the job's deadline ([`crate::deadline`]), so none is
    /// taken.
    pub async fn acquire(&self) -> Result<Slot<'_>, Duration> {
        loop {
            match self.try_take(Instant::now()) {
                Ok(id) => return Ok(Slot { window: self, id }),
                Err(wait) if crate::deadline::would_cross(wait) => return Err(wait),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Blocks new acquisitions for `pause` (after a 429 whose window we misjudged).
    pub fn back_off(&self, pause: Duration) {
        let mut stamps = self.lock();
        let until = Instant::now() + pause;
        // Fill the window with stamps that expire at `until`.
        let stamp = until.checked_sub(self.window).unwrap_or_else(Instant::now);
        stamps.at.clear();
        for _ in 0..self.max {
            stamps.next_id += 1;
            let id = stamps.next_id;
            stamps.at.push_back((id, stamp));
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

/// The next midnight UTC (our own daily budgets count UTC days).
pub fn next_midnight_utc(now: DateTime<Utc>) -> DateTime<Utc> {
    next_midnight_in(now, Tz::UTC)
}

/// The next midnight in `zone` (a CRM's daily quota resets at midnight in the account's time
/// zone), as UTC. Where a DST change skips midnight, the day starts at the first hour that
/// exists.
pub fn next_midnight_in(now: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
    let today = now.with_timezone(&zone).date_naive();
    let tomorrow = today.succ_opt().unwrap_or(today);
    let midnight = tomorrow.and_hms_opt(0, 0, 0).expect("midnight exists");
    (0..3)
        .find_map(|h| {
            zone.from_local_datetime(&(midnight + chrono::Duration::hours(h)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| midnight.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rolling_window_spaces_bursts() {
        let w = RollingWindow::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..3 {
            let _ = w.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(5));
        let _ = w.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_blocks_for_the_pause() {
        let w = RollingWindow::new(5, Duration::from_secs(2));
        let start = Instant::now();
        w.back_off(Duration::from_secs(3));
        let _ = w.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    /// A slow request counts from its answer: the next window starts then, not at its send.
    #[tokio::test(start_paused = true)]
    async fn a_slot_counts_until_its_answer_arrived() {
        let w = RollingWindow::new(1, Duration::from_secs(1));
        let start = Instant::now();
        {
            let _slot = w.acquire().await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await; // the request is under way
        }
        let _ = w.acquire().await;
        assert!(start.elapsed() >= Duration::from_millis(1400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_takes_no_place() {
        let w = RollingWindow::new(1, Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        crate::deadline::within(deadline, async {
            let held = w.acquire().await.unwrap();
            drop(held);
            let wait = w
                .acquire()
                .await
                .err()
                .expect("a 10 s wait crosses the deadline");
            assert!(wait > Duration::from_secs(9));
        })
        .await;
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

    #[test]
    fn midnight_in_the_portal_s_zone() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let ny = Tz::America__New_York;
        // 03:00 UTC on the 28th is still the 27th in New York (EST, -5): midnight is 05:00 UTC.
        assert_eq!(
            next_midnight_in(at("2026-11-28T03:00:00Z"), ny).to_rfc3339(),
            "2026-11-28T05:00:00+00:00"
        );
        // In summer (EDT, -4).
        assert_eq!(
            next_midnight_in(at("2026-07-01T12:00:00Z"), ny).to_rfc3339(),
            "2026-07-02T04:00:00+00:00"
        );
        // East of UTC: Tokyo's midnight is 15:00 UTC the day before.
        assert_eq!(
            next_midnight_in(at("2026-11-28T16:00:00Z"), Tz::Asia__Tokyo).to_rfc3339(),
            "2026-11-29T15:00:00+00:00"
        );
        // Santiago skips 00:00 on the day DST begins (2026-09-06): the day starts at 01:00.
        let t = next_midnight_in(at("2026-09-05T12:00:00Z"), Tz::America__Santiago);
        assert_eq!(t.to_rfc3339(), "2026-09-06T04:00:00+00:00");
    }
}
