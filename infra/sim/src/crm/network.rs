//! The network between the workers and a simulator: each request a scheduler boundary, then
//! refused before its effect, applied with its answer lost, or answered by the simulator's
//! router in process.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use shared::crm::transport::{Answer, Exchange};
use shared::domain::Provider;
use tower::ServiceExt;

use super::Feed;
use crate::sched::{Fault, Sched};

/// The network between the workers and one simulator.
pub struct SimExchange {
    router: axum::Router,
    feed: Arc<Feed>,
    sched: Sched,
}

impl SimExchange {
    pub fn new(router: axum::Router, feed: Arc<Feed>, sched: Sched) -> Self {
        Self {
            router,
            feed,
            sched,
        }
    }

    /// The simulator's answer to `request`, its webhooks put on their way.
    async fn dispatch(&self, request: reqwest::Request) -> Result<Answer, String> {
        let mut builder = axum::http::Request::builder()
            .method(request.method().as_str())
            .uri(request.url().as_str());
        for (name, value) in request.headers() {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
        let body = request
            .body()
            .and_then(|b| b.as_bytes())
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let req = builder.body(Body::from(body)).map_err(|e| e.to_string())?;
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = StatusCode::from_u16(resp.status().as_u16()).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        for (name, value) in resp.headers() {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_str().as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.append(n, v);
            }
        }
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| e.to_string())?;
        self.feed.pump();
        Ok(Answer {
            status,
            headers,
            body: bytes.to_vec(),
        })
    }

    /// A refusal before the request had any effect: the CRM's 429, a 503, or no connection.
    fn refusal(&self) -> Result<Answer, String> {
        let mut headers = HeaderMap::new();
        let (status, body) = match self.sched.below(3) {
            0 => {
                match self.feed.provider() {
                    Provider::HubSpot => {
                        headers.insert("retry-after", HeaderValue::from_static("1"));
                    }
                    Provider::Pipedrive => {
                        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
                        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1"));
                    }
                }
                let body = match self.feed.provider() {
                    Provider::HubSpot => json!({
                        "status": "error",
                        "message": "You have reached your ten_secondly_rolling limit.",
                        "errorType": "RATE_LIMIT",
                        "policyName": "TEN_SECONDLY_ROLLING",
                    }),
                    Provider::Pipedrive => json!({
                        "success": false,
                        "error": "Request over limit",
                    }),
                };
                (StatusCode::TOO_MANY_REQUESTS, body)
            }
            1 => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "error", "message": "simulated: service unavailable"}),
            ),
            _ => return Err("simulated: connection reset before the request was sent".into()),
        };
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        Ok(Answer {
            status,
            headers,
            body: body.to_string().into_bytes(),
        })
    }
}

#[async_trait]
impl Exchange for SimExchange {
    async fn exchange(&self, request: reqwest::Request) -> Result<Answer, String> {
        self.sched.boundary().await;
        let write = request.method() != reqwest::Method::GET;
        match self.sched.roll(write) {
            Fault::Before => self.refusal(),
            Fault::AnswerLost => {
                let applied = self.dispatch(request).await;
                tracing::info!(provider = %self.feed.provider(), worker = ?Sched::current_worker(), status = ?applied.as_ref().map(|a| a.status), "simulated CRM: answer lost");
                Err("simulated: timeout after the request was sent".into())
            }
            Fault::None => self.dispatch(request).await,
        }
    }
}
