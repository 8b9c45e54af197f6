//! The soak command: runs any number of seeds and prints what each checked.
//!
//! `cargo run -p contact-sync-sim --release -- --seeds 1000 --from 0 --ops 300 --workers 4`

use std::time::Instant;

use clap::Parser;
use contact_sync_sim::{Config, run};

#[derive(Parser)]
#[command(about = "Deterministic simulation of contact-sync: seeds, workers, faults, invariants")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// User operations per seed.
    #[arg(long, default_value_t = 300)]
    ops: usize,
    /// Concurrent workers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Print every violation of a failing seed (not only the first five).
    #[arg(long)]
    verbose: bool,
    /// Log the users' operations and the service's own log lines (`RUST_LOG` filters).
    #[arg(long)]
    trace: bool,
    /// Make link writes blind (their version condition dropped): a mutation the invariants
    /// must catch in some seeds.
    #[arg(long)]
    blind_link_writes: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.trace {
        shared::logging::init("shared=info,contact_sync_sim=info")?;
    }
    let started = Instant::now();
    let (mut failed, mut checked, mut steps, mut ops) = (0u64, 0usize, 0u64, 0usize);
    let (mut overwritten, mut unreported) = (0usize, 0usize);
    let mut kinds: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for seed in args.from..args.from + args.seeds {
        let cfg = Config {
            blind_link_writes: args.blind_link_writes,
            ..Config::new(seed, args.ops, args.workers)
        };
        let out = run(&cfg);
        checked += out.checked;
        steps += out.steps;
        overwritten += out.overwrites;
        unreported += out.overwrites_unreported;
        for (kind, n) in &out.ops {
            *kinds.entry(kind).or_default() += n;
        }
        ops += args.ops;
        if !out.violations.is_empty() {
            failed += 1;
            println!(
                "seed {seed} FAILED ({} violations, digest {:016x}); replay: {}",
                out.violations.len(),
                out.digest,
                out.replay_command(&cfg)
            );
            let shown = if args.verbose { usize::MAX } else { 5 };
            for v in out.violations.iter().take(shown) {
                println!("  {v}");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds from {} × {} ops, {} workers: {failed} failed; {checked} invariant checks, {steps} worker steps; {overwritten} CRM users' edits overwritten by a concurrent write of ours, {unreported} of them with their webhook dropped (found by the echo or a history check); {:.0} ops/s, {:.2} s",
        args.seeds,
        args.from,
        args.ops,
        args.workers,
        ops as f64 / secs,
        secs
    );
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("user operations: {}", kinds.join(", "));
    if failed > 0 {
        // A failure is the seeds printed above, not an error of this command.
        std::process::exit(1);
    }
    Ok(())
}
