//! The four Lambda bootstraps as `cargo lambda build --release` leaves them: each one's size
//! zipped (as deployed), and its cold init: from process start to its first
//! `GET /2018-06-01/runtime/invocation/next` on a Lambda Runtime API emulator started here.
//! No AWS call is made at init (registered tenants are read when first named), so fake
//! credentials and names suffice.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use axum::Router;
use axum::routing::get;
use tokio::sync::Notify;

use crate::Figure;

pub const FUNCTIONS: [&str; 4] = ["api", "pipedrive-poll", "sync-worker", "webhook-ingest"];
/// The goals.
const ZIP_GOAL_MB: f64 = 8.0;
const INIT_GOAL_MS: f64 = 30.0;
/// Cold starts measured per function (the median counts).
const STARTS: usize = 7;

/// Where cargo-lambda puts the bootstraps: `<target>/lambda/<function>/bootstrap`, beside this
/// binary's `<target>/release`.
fn lambda_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?;
    Ok(target.join("lambda"))
}

/// Builds the bootstraps with cargo-lambda (incremental) where it is installed; else uses the
/// ones there are. Whether they were built now; `None` when there are none to measure.
fn build(dir: &Path) -> anyhow::Result<Option<bool>> {
    let installed = Command::new("cargo")
        .args(["lambda", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        let there = FUNCTIONS
            .iter()
            .all(|f| dir.join(f).join("bootstrap").exists());
        return Ok(there.then_some(false));
    }
    let mut cmd = Command::new("cargo");
    cmd.args(["lambda", "build", "--release", "--compiler", "cargo"]);
    for f in FUNCTIONS {
        cmd.args(["--package", f]);
    }
    ensure!(cmd.status()?.success(), "cargo lambda build failed");
    Ok(Some(true))
}

/// The bootstrap deflated into a zip, as a deployment package: its size in bytes.
fn zipped_size(bootstrap: &Path) -> anyhow::Result<u64> {
    let bytes = std::fs::read(bootstrap)?;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(9))
            .unix_permissions(0o755);
        zip.start_file("bootstrap", options)?;
        zip.write_all(&bytes)?;
        zip.finish()?;
    }
    Ok(buf.into_inner().len() as u64)
}

/// A Runtime API emulator that notes the first `GET /next` and never hands out an event.
async fn emulator() -> anyhow::Result<(String, Arc<Notify>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let next = Arc::new(Notify::new());
    let seen = next.clone();
    let app = Router::new().route(
        "/2018-06-01/runtime/invocation/next",
        get(move || {
            let seen = seen.clone();
            async move {
                seen.notify_one();
                std::future::pending::<()>().await;
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr.to_string(), next, task))
}

/// Process start to the first `GET /next`.
async fn cold_init(bootstrap: &Path) -> anyhow::Result<Duration> {
    let (api, next, task) = emulator().await?;
    let started = Instant::now();
    let mut child = Command::new(bootstrap)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("CONTACTS_TABLE", "Contacts")
        .env("LINKS_TABLE", "ContactLinks")
        .env("STATE_TABLE", "SyncState")
        .env("SYNC_QUEUE_URL", "http://127.0.0.1:9/queue/sync")
        .env("SYNC_DLQ_URL", "http://127.0.0.1:9/queue/dlq")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bootstrap.display()))?;
    let waited = tokio::time::timeout(Duration::from_secs(10), next.notified()).await;
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    task.abort();
    waited.with_context(|| format!("{} never asked for an event", bootstrap.display()))?;
    Ok(took)
}

pub async fn run() -> anyhow::Result<(Vec<Figure>, Vec<String>)> {
    let dir = lambda_dir()?;
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let Some(built) = build(&dir)? else {
        notes.push(
            "lambda: not measured: cargo-lambda is not on PATH and there are no bootstraps \
             (bash infra/scripts/check-template.sh installs it in its venv and builds them)"
                .into(),
        );
        return Ok((figures, notes));
    };
    if !built {
        notes.push(format!(
            "lambda: cargo-lambda not on PATH; measured the bootstraps already in {} \
             (they may be older than the code)",
            dir.display()
        ));
    }
    for f in FUNCTIONS {
        let bootstrap = dir.join(f).join("bootstrap");
        let zipped = zipped_size(&bootstrap)? as f64 / 1e6;
        let mut inits = Vec::with_capacity(STARTS);
        for _ in 0..STARTS {
            inits.push(cold_init(&bootstrap).await?);
        }
        inits.sort();
        let median = inits[STARTS / 2].as_secs_f64() * 1000.0;
        figures.push(Figure::lower(
            format!("lambda {f}: bootstrap zipped"),
            zipped,
            "MB",
            ZIP_GOAL_MB,
        ));
        figures.push(Figure::lower(
            format!("lambda {f}: cold init, median of {STARTS}"),
            median,
            "ms",
            INIT_GOAL_MS,
        ));
        notes.push(format!(
            "lambda {f}: init {:.1}–{:.1} ms over {STARTS} starts; bootstrap {:.1} MB unzipped",
            inits[0].as_secs_f64() * 1000.0,
            inits[STARTS - 1].as_secs_f64() * 1000.0,
            std::fs::metadata(&bootstrap)?.len() as f64 / 1e6
        ));
    }
    Ok((figures, notes))
}
