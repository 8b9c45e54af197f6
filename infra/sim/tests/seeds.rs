//! The simulation in the suite: 200 seeds × 300 user operations with four concurrent workers,
//! every invariant checked at quiescence; a failure prints its seed and the command that
//! replays it. Also: a run is a function of its seed, and the invariants do catch a store
//! whose writes are not conditional.
//!
//! The real clients and simulators make a run a few times slower unoptimised, so the test
//! command runs these in release (`cargo test --release -p contact-sync-sim`); a debug
//! `cargo test` skips them.

use contact_sync_sim::{Config, run};

fn failures(cfgs: impl Iterator<Item = Config>) -> (usize, usize, Vec<String>) {
    let (mut runs, mut checked, mut failed) = (0, 0, Vec::new());
    for cfg in cfgs {
        let out = run(&cfg);
        runs += 1;
        checked += out.checked;
        if !out.violations.is_empty() {
            failed.push(format!(
                "seed {} ({} violations, first: {}); replay: {}",
                cfg.seed,
                out.violations.len(),
                out.violations[0],
                out.replay_command(&cfg)
            ));
        }
    }
    (runs, checked, failed)
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow unoptimised: cargo test --release -p contact-sync-sim"
)]
fn two_hundred_seeds_keep_every_invariant() {
    let started = std::time::Instant::now();
    let (runs, checked, failed) = failures((0..200).map(|seed| Config::new(seed, 300, 4)));
    println!(
        "{runs} seeds × 300 ops, 4 workers: {checked} invariant checks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(checked > runs * 300, "the checks ran ({checked})");
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow unoptimised: cargo test --release -p contact-sync-sim"
)]
fn a_seed_replays_exactly() {
    for seed in [7, 1234] {
        let cfg = Config::new(seed, 150, 4);
        let (a, b) = (run(&cfg), run(&cfg));
        assert_eq!(a.digest, b.digest, "seed {seed}");
        assert_eq!(a.steps, b.steps, "seed {seed}");
        assert_eq!(a.violations, b.violations, "seed {seed}");
        assert_ne!(a.digest, run(&Config::new(seed + 1, 150, 4)).digest);
    }
}

/// The invariants are not vacuous: with link writes made blind (the version condition
/// dropped, as a store without conditional writes would), concurrent workers lose updates or
/// link a contact twice, and the simulation says so.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow unoptimised: cargo test --release -p contact-sync-sim"
)]
fn blind_link_writes_are_caught() {
    let (_, _, failed) = failures((0..100).map(|seed| Config {
        blind_link_writes: true,
        ..Config::new(seed, 300, 4)
    }));
    assert!(!failed.is_empty(), "no seed caught blind link writes");
    println!(
        "{} of 100 seeds caught blind link writes, e.g. {}",
        failed.len(),
        failed[0]
    );
}
