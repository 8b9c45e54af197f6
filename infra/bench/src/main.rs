//! `bench`: contact-sync's figures, each printed beside its bound and the ratio. Figures, never
//! assertions (nothing here fails on a slow machine).
//!
//! So far: webhook ingest throughput in process, per core (issue "Benchmarks side by side with
//! their bounds"): each webhook route verifies the signature, parses, dedupes every event in the
//! store and enqueues, on the embedded store (SQLite, a file as the local runner keeps it).
//!
//! Usage: `cargo run --release -p contact-sync-bench -- [--events N]`

mod ingest;

use anyhow::Context;

/// One row of the table.
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The goal, and whether a larger value is better.
    pub bound: f64,
    pub higher_is_better: bool,
}

impl Figure {
    fn ratio(&self) -> f64 {
        if self.higher_is_better {
            self.bound / self.value
        } else {
            self.value / self.bound
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut events = 100_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => {
                events = args
                    .next()
                    .context("--events takes a number")?
                    .parse()
                    .context("--events takes a number")?
            }
            other => anyhow::bail!("unknown argument {other:?} (usage: bench [--events N])"),
        }
    }
    // One core: a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let figures = rt.block_on(ingest::run(events))?;
    println!(
        "{:<52} {:>14} {:>14} {:>8}",
        "figure", "measured", "bound", "ratio"
    );
    for f in &figures {
        let cmp = if f.higher_is_better { "≥" } else { "≤" };
        println!(
            "{:<52} {:>9.0} {:<4} {} {:>10.0} {:>7.2}×",
            f.name,
            f.value,
            f.unit,
            cmp,
            f.bound,
            f.ratio()
        );
    }
    println!("(ratio: how far from the bound; ≤ 1.00× meets it)");
    Ok(())
}
