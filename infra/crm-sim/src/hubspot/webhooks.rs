//! Webhook events for contact subscriptions: batching, signing, delivery and retries
//! (HubSpot's "Webhooks API" guide and "Validating requests from HubSpot").
//!
//! Events are collected for `webhook_batch_window_ms`, sent as JSON arrays of at most 100, with
//! at most `webhook_max_concurrency` requests in flight. A delivery fails on a connection error,
//! a non-2xx answer or no answer within `webhook_timeout_ms`; it is then retried after the
//! configured delays (the last delay repeats) until `webhook_max_attempts` attempts were made,
//! `attemptNumber` counting up from 0. Real HubSpot spreads up to 10 retries over 24 hours; the
//! simulator's defaults are seconds so tests stay fast.

use std::sync::{
    Arc, Mutex, RwLock,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use super::signing::{v1_signature, v3_signature};

/// Largest number of events in one POST.
pub const MAX_EVENTS_PER_REQUEST: usize = 100;

/// One webhook notification, serialised exactly as sent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    pub event_id: u64,
    pub subscription_id: u64,
    pub portal_id: u64,
    pub app_id: u64,
    pub occurred_at: i64,
    pub subscription_type: String,
    pub attempt_number: u32,
    pub object_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_flag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_object_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_object_ids: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_object_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_of_properties_moved: Option<u64>,
}

/// Delivery settings, fixed at start-up.
#[derive(Debug, Clone)]
pub(crate) struct DeliverySettings {
    pub client_secret: String,
    pub window: Duration,
    pub retry_delays: Vec<Duration>,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub max_concurrency: usize,
}

/// State shared between the simulator and the delivery task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub url: RwLock<Option<String>>,
    pub enabled: AtomicBool,
    pub deliveries: AtomicU64,
    pub failures: AtomicU64,
    pub events_delivered: AtomicU64,
    pub events_dropped: AtomicU64,
    pub in_flight: AtomicU64,
    pub settings: DeliverySettings,
}

impl Shared {
    fn current_url(&self) -> Option<String> {
        self.url.read().expect("webhook url lock").clone()
    }
}

pub(crate) struct WebhookHub {
    pub shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<WebhookEvent>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<WebhookEvent>>>,
}

impl WebhookHub {
    pub fn new(url: Option<String>, settings: DeliverySettings) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            shared: Arc::new(Shared {
                url: RwLock::new(url),
                enabled: AtomicBool::new(true),
                deliveries: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                events_delivered: AtomicU64::new(0),
                events_dropped: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
                settings,
            }),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    pub fn set_url(&self, url: Option<String>) {
        *self.shared.url.write().expect("webhook url lock") = url;
    }

    pub fn url(&self) -> Option<String> {
        self.shared.current_url()
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.shared.enabled.store(enabled, Ordering::SeqCst);
    }

    pub fn enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::SeqCst)
    }

    /// Queues events for delivery, or drops them when no URL is set or delivery is paused.
    pub fn enqueue(&self, events: Vec<WebhookEvent>) {
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        if !self.enabled() || self.url().is_none() {
            self.shared.events_dropped.fetch_add(n, Ordering::SeqCst);
            return;
        }
        self.shared.in_flight.fetch_add(n, Ordering::SeqCst);
        for e in events {
            if self.tx.send(e).is_err() {
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.shared.events_dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.ensure_dispatcher();
    }

    /// Starts the delivery task on the current Tokio runtime the first time one is available.
    fn ensure_dispatcher(&self) {
        let mut slot = self.rx.lock().expect("webhook receiver lock");
        if slot.is_none() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let rx = slot.take().expect("checked above");
            handle.spawn(dispatch(self.shared.clone(), rx));
        }
    }
}

/// Collects events into batches and hands each batch to its own delivery task.
async fn dispatch(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<WebhookEvent>) {
    let client = match reqwest::Client::builder()
        .timeout(shared.settings.timeout)
        .build()
    {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(%err, "cannot build the webhook HTTP client");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(shared.settings.max_concurrency.max(1)));
    while let Some(first) = rx.recv().await {
        let mut buf = vec![first];
        let deadline = tokio::time::Instant::now() + shared.settings.window;
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(e) => buf.push(e),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        while let Ok(e) = rx.try_recv() {
            buf.push(e);
        }
        for chunk in buf.chunks(MAX_EVENTS_PER_REQUEST) {
            let batch = chunk.to_vec();
            let shared = shared.clone();
            let client = client.clone();
            let permits = permits.clone();
            tokio::spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                deliver(&shared, &client, batch).await;
            });
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Sends one batch, retrying until it is accepted or the attempts run out.
async fn deliver(shared: &Shared, client: &reqwest::Client, mut batch: Vec<WebhookEvent>) {
    let n = batch.len() as u64;
    let settings = &shared.settings;
    let max_attempts = settings.max_attempts.max(1);
    let mut outcome_delivered = false;
    for attempt in 0..max_attempts {
        if !shared.enabled.load(Ordering::SeqCst) {
            break;
        }
        let Some(url) = shared.current_url() else {
            break;
        };
        for e in &mut batch {
            e.attempt_number = attempt;
        }
        let body = match serde_json::to_vec(&batch) {
            Ok(b) => b,
            Err(err) => {
                tracing::error!(%err, "cannot serialise webhook batch");
                break;
            }
        };
        let ts = now_ms().to_string();
        let secret = &settings.client_secret;
        let result = client
            .post(&url)
            .header("Content-Type", "application/json")
            .header("X-HubSpot-Signature", v1_signature(secret, &body))
            .header("X-HubSpot-Signature-Version", "v1")
            .header(
                "X-HubSpot-Signature-v3",
                v3_signature(secret, "POST", &url, &body, &ts),
            )
            .header("X-HubSpot-Request-Timestamp", &ts)
            .body(body)
            .send()
            .await;
        match result {
            Ok(resp) if resp.status().is_success() => {
                shared.deliveries.fetch_add(1, Ordering::SeqCst);
                outcome_delivered = true;
                break;
            }
            Ok(resp) => {
                shared.failures.fetch_add(1, Ordering::SeqCst);
                tracing::debug!(status = %resp.status(), attempt, "webhook delivery rejected");
            }
            Err(err) => {
                shared.failures.fetch_add(1, Ordering::SeqCst);
                tracing::debug!(%err, attempt, "webhook delivery failed");
            }
        }
        if attempt + 1 < max_attempts {
            let delay = settings
                .retry_delays
                .get(attempt as usize)
                .or(settings.retry_delays.last())
                .copied()
                .unwrap_or(Duration::from_secs(1));
            tokio::time::sleep(delay).await;
        }
    }
    if outcome_delivered {
        shared.events_delivered.fetch_add(n, Ordering::SeqCst);
    } else {
        shared.events_dropped.fetch_add(n, Ordering::SeqCst);
    }
    shared.in_flight.fetch_sub(n, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_serialises_like_hubspot() {
        let e = WebhookEvent {
            event_id: 1,
            subscription_id: 12345,
            portal_id: 62515,
            app_id: 54321,
            occurred_at: 1564113600000,
            subscription_type: "contact.creation".into(),
            attempt_number: 0,
            object_id: 123,
            property_name: None,
            property_value: None,
            change_flag: Some("NEW".into()),
            change_source: Some("CRM".into()),
            source_id: None,
            primary_object_id: None,
            merged_object_ids: None,
            new_object_id: None,
            number_of_properties_moved: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"eventId":1,"subscriptionId":12345,"portalId":62515,"appId":54321,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeFlag":"NEW","changeSource":"CRM"}"#
        );
    }

    #[test]
    fn paused_or_unconfigured_hub_drops_events() {
        let settings = DeliverySettings {
            client_secret: "s".into(),
            window: Duration::from_millis(1),
            retry_delays: vec![],
            max_attempts: 1,
            timeout: Duration::from_secs(1),
            max_concurrency: 1,
        };
        let hub = WebhookHub::new(None, settings);
        let e = WebhookEvent {
            event_id: 1,
            subscription_id: 1,
            portal_id: 1,
            app_id: 1,
            occurred_at: 0,
            subscription_type: "contact.creation".into(),
            attempt_number: 0,
            object_id: 1,
            property_name: None,
            property_value: None,
            change_flag: None,
            change_source: None,
            source_id: None,
            primary_object_id: None,
            merged_object_ids: None,
            new_object_id: None,
            number_of_properties_moved: None,
        };
        hub.enqueue(vec![e.clone()]);
        hub.set_url(Some("http://127.0.0.1:9/".into()));
        hub.set_enabled(false);
        hub.enqueue(vec![e]);
        assert_eq!(hub.shared.events_dropped.load(Ordering::SeqCst), 2);
        assert_eq!(hub.shared.in_flight.load(Ordering::SeqCst), 0);
    }
}
