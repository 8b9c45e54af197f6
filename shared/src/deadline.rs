//! A job's deadline: the time by which its run must have ended (a Lambda invocation's deadline
//! less a margin, or the local runner's configured job time). Set around a run with [`within`];
//! a wait that would cross it (a full rate window, a 429's pause) ends the run instead, and the
//! job is re-queued with that wait as its delay ([`crate::error::CrmError::OutOfTime`]).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `f` with `deadline` as the deadline of every wait inside it.
pub async fn within<F: Future>(deadline: Instant, f: F) -> F::Output {
    DEADLINE.scope(deadline, f).await
}

/// The current run's deadline, if it has one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Whether a wait of `wait` from now would end after the deadline.
pub fn would_cross(wait: Duration) -> bool {
    current().is_some_and(|d| Instant::now() + wait > d)
}

/// Time left before the deadline (`None`: no deadline).
pub fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_is_told() {
        assert!(
            !would_cross(Duration::from_secs(3600)),
            "no deadline, no limit"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        within(deadline, async {
            assert!(!would_cross(Duration::from_secs(4)));
            assert!(would_cross(Duration::from_secs(6)));
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert!(would_cross(Duration::from_secs(4)));
            assert_eq!(remaining(), Some(Duration::from_secs(3)));
        })
        .await;
        assert_eq!(current(), None);
    }
}
