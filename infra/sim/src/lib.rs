//! Deterministic simulation of contact-sync: the real sync service, worker, engine and CRM
//! clients, with K concurrent workers over ports that model DynamoDB and SQS and the CRM
//! simulators in process (faults at every call, lagging indexes, late and doubled webhooks),
//! under user operations on all three sides.
//! One seed drives everything; a failing seed replays exactly. See the README's "Simulation".

pub mod check;
pub mod crm;
pub mod queue;
pub mod sched;
pub mod seen;
pub mod store;
pub mod workload;
pub mod world;

pub use world::Config;

/// What one seed's run did and found.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub steps: u64,
    pub drops: u64,
    /// A digest of every decision and of the end state: the same seed gives the same digest.
    pub digest: u64,
    pub checked: usize,
    pub violations: Vec<String>,
    /// CRM users' edits a concurrent write of ours overwrote, and how many of them had their
    /// webhook dropped (found only by the write's echo or a check of the record's history).
    pub overwrites: usize,
    pub overwrites_unreported: usize,
    pub ops: std::collections::BTreeMap<&'static str, usize>,
}

impl Outcome {
    /// The command that replays this run.
    pub fn replay_command(&self, cfg: &Config) -> String {
        format!(
            "cargo run -p contact-sync-sim --release -- --from {} --seeds 1 --ops {} --workers {}",
            self.seed, cfg.ops, cfg.workers
        )
    }
}

/// Runs one seed on a fresh current-thread runtime: the workload with faults, then quiescence
/// (faults off, webhooks delivered, one Sync Now, the DLQ replayed), then the invariants.
pub fn run(cfg: &Config) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(run_async(cfg.clone()))
}

async fn run_async(cfg: Config) -> Outcome {
    let mut world = world::World::new(cfg.clone()).await;
    let mut oracle = workload::Oracle::default();
    let mut op = 0;
    while op < cfg.ops {
        // About one user operation per four worker steps.
        if world.sched.chance(0.25) {
            world.step().await;
            workload::user_op(&world, &mut oracle, op).await;
            op += 1;
        } else {
            world.step().await;
        }
    }
    // Quiescence: no more faults; everything in flight lands, then Sync Now and the DLQ.
    world.sched.set_faults(false);
    let mut violations = Vec::new();
    let budget = 200_000;
    if !world.drain(budget).await {
        violations.push("did not quiesce after the workload (a loop?)".to_string());
    }
    world.queue.send(
        shared::domain::Job::Reconcile {
            tenant: world::tenant(),
            round: 0,
        },
        0,
    );
    if !world.drain(budget).await {
        violations.push("did not quiesce after Sync Now".to_string());
    }
    let replayed = {
        use shared::ports::JobQueue;
        world.queue.replay_dlq(&world::tenant()).await.unwrap_or(0)
    };
    if replayed > 0 && !world.drain(budget).await {
        violations.push("did not quiesce after the DLQ replay".to_string());
    }
    world.stop().await;
    if let Some(stuck) = world.stuck.take() {
        violations.push(stuck);
    }
    let report = check::invariants(&world, &oracle).await;
    violations.extend(report.violations);
    world.sched.note(world.steps);
    world.sched.note(world.drops);
    Outcome {
        seed: cfg.seed,
        steps: world.steps,
        drops: world.drops,
        digest: world.sched.trace(),
        checked: report.checked,
        violations,
        overwrites: report.overwrites,
        overwrites_unreported: report.overwrites_unreported,
        ops: oracle.counts,
    }
}
