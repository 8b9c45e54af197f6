//! `bench`: contact-sync's figures, each printed beside its bound and the ratio, measured in
//! one run on one machine. Figures, never assertions (nothing here fails on a slow machine).
//!
//! Parts (all by default, or those named with `--only a,b`):
//! - `backfill`: the first sync of N app contacts into both simulators at their real limits,
//!   through the release local runner, counted by the simulators.
//! - `budget`: a first sync of N contacts larger than a day's Pipedrive budget, up to the
//!   pause, and what status then says.
//! - `steady`: what one edit of a linked contact costs each CRM, in each direction, echoes
//!   included.
//! - `latency`: sync latency in each direction, p50/p95/max, with 1 and 4 sync workers.
//! - `throughput`: changes/s 4 workers sync with the CRMs' limits off, and where the time goes.
//! - `ingest`: webhook ingest throughput in process, per core.
//! - `aws`: DynamoDB and SQS requests per contact change, on moto through the real adapters.
//! - `lambda`: the four bootstraps zipped, and their cold init on a Runtime API emulator.
//!
//! Usage: `cargo run --release -p contact-sync-bench -- [--contacts N] [--latency N]
//! [--events N] [--workers N] [--markdown] [--only backfill,budget,steady,latency,throughput,ingest,aws,lambda]`

mod aws;
mod backfill;
mod budget;
mod cost;
mod ingest;
mod lambda;
mod latency;
mod runner;
mod steady;
mod throughput;

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
    /// A figure whose goal is at most `bound`.
    pub fn lower(name: impl Into<String>, value: f64, unit: &'static str, bound: f64) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
            bound,
            higher_is_better: false,
        }
    }

    /// A figure whose goal is at least `bound`.
    pub fn higher(name: impl Into<String>, value: f64, unit: &'static str, bound: f64) -> Self {
        Self {
            higher_is_better: true,
            ..Self::lower(name, value, unit, bound)
        }
    }

    /// How far from the bound: ≤ 1 meets it. A bound of zero is met only by zero.
    fn ratio(&self) -> f64 {
        match (self.higher_is_better, self.bound == 0.0) {
            (false, true) if self.value == 0.0 => 0.0,
            (false, true) => f64::INFINITY,
            (true, _) => self.bound / self.value,
            (false, false) => self.value / self.bound,
        }
    }
}

/// A number with as many decimals as its size needs.
fn num(v: f64) -> String {
    if v.is_infinite() {
        "∞".into()
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn print(figures: &[Figure], notes: &[String], markdown: bool) {
    if markdown {
        println!("| figure | measured | bound | ratio |");
        println!("| --- | ---: | ---: | ---: |");
        for f in figures {
            let cmp = if f.higher_is_better { "≥" } else { "≤" };
            println!(
                "| {} | {} {} | {cmp} {} | {}× |",
                f.name,
                num(f.value),
                f.unit,
                num(f.bound),
                num(f.ratio())
            );
        }
        println!();
        for n in notes {
            println!("- {n}");
        }
        return;
    }
    println!(
        "{:<66} {:>12} {:>12} {:>8}",
        "figure", "measured", "bound", "ratio"
    );
    for f in figures {
        let cmp = if f.higher_is_better { "≥" } else { "≤" };
        println!(
            "{:<66} {:>8} {:<4} {} {:>9} {:>7}×",
            f.name,
            num(f.value),
            f.unit,
            cmp,
            num(f.bound),
            num(f.ratio())
        );
    }
    println!("(ratio: how far from the bound; ≤ 1× meets it)");
    for n in notes {
        println!("- {n}");
    }
}

struct Args {
    contacts: usize,
    latency: usize,
    events: usize,
    workers: usize,
    only: Option<Vec<String>>,
    markdown: bool,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let mut out = Args {
            contacts: 10_000,
            latency: 50,
            events: 100_000,
            workers: 4,
            only: None,
            markdown: false,
        };
        let mut args = std::env::args().skip(1);
        let number = |v: Option<String>, name: &str| -> anyhow::Result<usize> {
            v.with_context(|| format!("{name} takes a number"))?
                .parse()
                .with_context(|| format!("{name} takes a number"))
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--contacts" => out.contacts = number(args.next(), "--contacts")?,
                "--latency" => out.latency = number(args.next(), "--latency")?,
                "--events" => out.events = number(args.next(), "--events")?,
                "--workers" => out.workers = number(args.next(), "--workers")?,
                "--markdown" => out.markdown = true,
                "--only" => {
                    out.only = Some(
                        args.next()
                            .context("--only takes a list, e.g. backfill,ingest")?
                            .split(',')
                            .map(str::to_owned)
                            .collect(),
                    )
                }
                other => anyhow::bail!(
                    "unknown argument {other:?} (usage: bench [--contacts N] [--latency N] \
                     [--events N] [--workers N] [--markdown] [--only backfill,budget,steady,latency,throughput,ingest,aws,lambda])"
                ),
            }
        }
        Ok(out)
    }

    fn wants(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == part))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let rt = tokio::runtime::Runtime::new()?;
    let bin = if ["backfill", "budget", "steady", "latency", "throughput"]
        .iter()
        .any(|p| args.wants(p))
    {
        Some(runner::build()?)
    } else {
        None
    };
    if let (true, Some(bin)) = (args.wants("backfill"), &bin) {
        let b = rt.block_on(backfill::run(bin, args.contacts, args.workers))?;
        figures.extend(b.figures);
        notes.extend(b.notes);
    }
    if let (true, Some(bin)) = (args.wants("budget"), &bin) {
        let (f, n) = rt.block_on(budget::run(bin, args.contacts))?;
        figures.extend(f);
        notes.extend(n);
    }
    if let (true, Some(bin)) = (args.wants("steady"), &bin) {
        let (f, n) = rt.block_on(steady::run(bin, 10))?;
        figures.extend(f);
        notes.extend(n);
    }
    if let (true, Some(bin)) = (args.wants("latency"), &bin) {
        // Paced under the CRMs' limits with 1 and 4 workers, then unpaced with 4.
        let pace = Some(std::time::Duration::from_secs(1));
        for (workers, pace) in [(1, pace), (4, pace), (4, None)] {
            let (f, n) = rt
                .block_on(latency::run(bin, args.latency, workers, pace))?
                .report();
            figures.extend(f);
            notes.extend(n);
        }
    }
    if let (true, Some(bin)) = (args.wants("throughput"), &bin) {
        notes.extend(rt.block_on(throughput::run(bin, 500))?);
    }
    if args.wants("ingest") {
        // One core: a current-thread runtime.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        figures.extend(rt.block_on(ingest::run(args.events))?);
    }
    if args.wants("aws") {
        let (f, n) = rt.block_on(aws::run(
            std::env::var("BENCH_AWS_N")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(20),
        ))?;
        figures.extend(f);
        notes.extend(n);
    }
    if args.wants("lambda") {
        let (f, n) = rt.block_on(lambda::run())?;
        figures.extend(f);
        notes.extend(n);
    }
    print(&figures, &notes, args.markdown);
    Ok(())
}
