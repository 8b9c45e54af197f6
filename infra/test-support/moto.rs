//! moto server for the AWS adapter tests: `AWS_ENDPOINT_URL` when the test command started one,
//! otherwise one started here (from the venv `infra/scripts/venv.sh` makes) that stops when the
//! test process ends. There is no silent skip: without moto these tests fail.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

/// The repository root: the nearest folder above the test's crate that holds the venv script
/// (this file is used by the tests of several crates).
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("infra/scripts/venv.sh").is_file())
        .expect("the repository root above the crate")
        .to_path_buf()
}

fn start_moto() -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("infra/scripts/venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run infra/scripts/venv.sh");
    assert!(
        out.status.success(),
        "creating the Python venv for moto failed"
    );
    let venv = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A watchdog shell: moto lives as long as this test process.
    let script = format!(
        "'{venv}/bin/moto_server' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
         while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $m",
        parent = std::process::id()
    );
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    std::thread::spawn(move || watchdog.wait());
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start on {url}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    url
}

/// The moto endpoint (started once per test process when needed).
pub fn endpoint() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("AWS_ENDPOINT_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => start_moto(),
    })
}

/// SDK configuration pointed at moto with dummy credentials.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let url = tokio::task::spawn_blocking(endpoint).await.unwrap();
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .load()
        .await
}

/// A fresh sync queue with its DLQ (redrive after 3 receives) on moto: `(client, queue URL,
/// DLQ URL)`.
#[allow(dead_code)]
pub async fn sync_queues(visibility: i32) -> (aws_sdk_sqs::Client, String, String) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let cfg = sdk_config().await;
    let client = aws_sdk_sqs::Client::new(&cfg);
    let name = format!("sync-{}", uuid::Uuid::new_v4().simple());
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let url = client
        .create_queue()
        .queue_name(&name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility.to_string(),
        )
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    (client, url, dlq_url)
}
