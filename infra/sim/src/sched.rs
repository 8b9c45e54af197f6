//! The scheduler: one seeded generator decides everything, and the workers take turns.
//!
//! Every port call a worker makes (store, queue, CRM) first waits at a *boundary* for the
//! scheduler's grant; between two boundaries exactly one worker runs, so a run is a sequence of
//! decisions the seed fixed: which worker steps next, which fault hits which call, how far the
//! virtual clock moves. The workers are ordinary tokio tasks on a current-thread runtime; a
//! worker dropped by the scheduler is aborted at its boundary, as a Lambda cut off between two
//! calls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::oneshot;

tokio::task_local! {
    /// The worker a task is, for the boundaries it reaches.
    static WORKER: usize;
}

/// Fault rates while faults are on (per call, or per scheduler step for drops).
#[derive(Debug, Clone, Copy)]
pub struct FaultRates {
    /// A call fails before it has any effect (an outage, a 5xx, a 429).
    pub before: f64,
    /// A write takes effect but its answer is lost (a timeout after the backend acted).
    pub answer_lost: f64,
    /// A worker is cut off at a boundary (its messages come back after the visibility timeout).
    pub drop_worker: f64,
}

impl Default for FaultRates {
    fn default() -> Self {
        Self {
            before: 0.02,
            answer_lost: 0.01,
            drop_worker: 0.002,
        }
    }
}

/// What a call's fault roll decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Before,
    AnswerLost,
}

struct State {
    rng: fastrand::Rng,
    clock_ms: i64,
    parked: BTreeMap<usize, oneshot::Sender<()>>,
    faults_on: bool,
    rates: FaultRates,
    /// A digest of every decision, so two runs of one seed can be compared.
    trace: u64,
}

/// The scheduler and the virtual clock, shared by the world's ports.
#[derive(Clone)]
pub struct Sched(Arc<Mutex<State>>);

/// The virtual clock's origin.
fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap()
}

impl Sched {
    pub fn new(seed: u64, rates: FaultRates) -> Self {
        Self(Arc::new(Mutex::new(State {
            rng: fastrand::Rng::with_seed(seed),
            clock_ms: 0,
            parked: BTreeMap::new(),
            faults_on: true,
            rates,
            trace: seed,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The virtual time.
    pub fn now(&self) -> DateTime<Utc> {
        epoch() + chrono::Duration::milliseconds(self.state().clock_ms)
    }

    pub fn now_ms(&self) -> i64 {
        self.state().clock_ms
    }

    pub fn advance(&self, ms: i64) {
        self.state().clock_ms += ms;
    }

    pub fn set_faults(&self, on: bool) {
        self.state().faults_on = on;
    }

    /// Records a decision in the trace digest.
    pub fn note(&self, what: u64) {
        let mut s = self.state();
        s.trace = (s.trace ^ what)
            .wrapping_mul(0x100_0000_01b3)
            .rotate_left(7);
    }

    pub fn trace(&self) -> u64 {
        self.state().trace
    }

    /// A seeded draw in `0..n` (n > 0).
    pub fn below(&self, n: usize) -> usize {
        let v = self.state().rng.usize(0..n.max(1));
        self.note(v as u64);
        v
    }

    /// A seeded draw in `lo..=hi`.
    pub fn between(&self, lo: i64, hi: i64) -> i64 {
        let v = self.state().rng.i64(lo..=hi);
        self.note(v as u64);
        v
    }

    /// True with probability `p`.
    pub fn chance(&self, p: f64) -> bool {
        let v = self.state().rng.f64() < p;
        self.note(u64::from(v));
        v
    }

    /// The fault for one call (`write`: whether an answer can be lost after the effect).
    pub fn roll(&self, write: bool) -> Fault {
        let (on, rates) = {
            let s = self.state();
            (s.faults_on, s.rates)
        };
        if !on {
            return Fault::None;
        }
        if self.chance(rates.before) {
            Fault::Before
        } else if write && self.chance(rates.answer_lost) {
            Fault::AnswerLost
        } else {
            Fault::None
        }
    }

    /// Whether the scheduler cuts a worker off at this step.
    pub fn drop_now(&self) -> bool {
        let (on, p) = {
            let s = self.state();
            (s.faults_on, s.rates.drop_worker)
        };
        on && self.chance(p)
    }

    /// The worker running now, if the caller is one.
    pub fn current_worker() -> Option<usize> {
        WORKER.try_with(|w| *w).ok()
    }

    /// Waits for the scheduler's grant, if called by a worker (the driver's own calls, standing
    /// for users and webhooks, pass at once).
    pub async fn boundary(&self) {
        let Ok(id) = WORKER.try_with(|w| *w) else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        self.state().parked.insert(id, tx);
        // A dropped sender means the worker is being aborted: it never runs on.
        let _ = rx.await;
    }

    /// The workers waiting at a boundary.
    pub fn parked(&self) -> Vec<usize> {
        self.state().parked.keys().copied().collect()
    }

    /// Lets one parked worker run to its next boundary.
    pub fn grant(&self, id: usize) {
        let granted = self.state().parked.remove(&id);
        if let Some(tx) = granted {
            self.note(id as u64 + 1);
            let _ = tx.send(());
        }
    }

    /// Forgets a worker's place (it is aborted).
    pub fn forget(&self, id: usize) {
        self.state().parked.remove(&id);
    }

    /// Runs `f` as worker `id`.
    pub async fn as_worker<F: std::future::Future>(id: usize, f: F) -> F::Output {
        WORKER.scope(id, f).await
    }
}
