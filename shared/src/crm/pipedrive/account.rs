//! The account behind the credentials (`GET /v1/users/me`: our API user and its company) and
//! our webhook subscription (`/v1/webhooks`, v1 only: v2 has no twin).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Op, PipedriveClient, WEBHOOK_NAME, error_for, mapping, shape_error};
use crate::error::CrmError;
use reqwest::StatusCode;

/// The API user the client acts as (`GET /v1/users/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnUser {
    pub id: u64,
    pub company_id: u64,
    pub company_domain: Option<String>,
}

/// Outcome of [`PipedriveClient::ensure_webhook`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRegistration {
    pub webhook_id: u64,
    /// False when a matching webhook existed already.
    pub created: bool,
    /// Outdated webhooks to our URL (other credentials or version) that were removed.
    pub removed: usize,
}

impl PipedriveClient {
    /// The user the credentials belong to (`GET /v1/users/me`), fetched once and cached.
    pub async fn own_user(&self) -> Result<OwnUser, CrmError> {
        self.own_user
            .get_or_try_init(|| async {
                let (status, body) = self
                    .call(Op::CurrentUser, "/api/v1/users/me", &[], None)
                    .await?;
                if status != StatusCode::OK {
                    return Err(error_for(status, &body));
                }
                let d = &body["data"];
                Ok(OwnUser {
                    id: mapping::parse_id(&d["id"]).ok_or_else(|| shape_error("user"))?,
                    company_id: mapping::parse_id(&d["company_id"])
                        .ok_or_else(|| shape_error("user"))?,
                    company_domain: d["company_domain"].as_str().map(str::to_owned),
                })
            })
            .await
            .cloned()
    }

    /// Makes sure one webhooks-v2 subscription for all person events points at
    /// `subscription_url` with these Basic auth credentials. Idempotent: lists first, keeps a
    /// matching webhook, replaces outdated ones to the same URL, creates one only when none
    /// matches.
    pub async fn ensure_webhook(
        &self,
        subscription_url: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<WebhookRegistration, CrmError> {
        let (status, body) = self
            .call(Op::ListWebhooks, "/api/v1/webhooks", &[], None)
            .await?;
        if status != StatusCode::OK {
            return Err(error_for(status, &body));
        }
        let same_url: Vec<&Value> = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["subscription_url"].as_str() == Some(subscription_url))
            .collect();
        let matches = |w: &Value| {
            let s = |k: &str| w[k].as_str();
            matches!(s("event_object"), Some("person" | "*"))
                && s("event_action") == Some("*")
                && s("version") == Some("2.0")
                && s("http_auth_user") == user
                // The password is only compared when the API shows it.
                && (w["http_auth_password"].is_null() || s("http_auth_password") == password)
                && w["is_active"].as_u64().is_none_or(|a| a != 0)
        };
        if let Some(w) = same_url.iter().find(|w| matches(w)) {
            let id = mapping::parse_id(&w["id"]).ok_or_else(|| shape_error("webhook"))?;
            return Ok(WebhookRegistration {
                webhook_id: id,
                created: false,
                removed: 0,
            });
        }
        let mut removed = 0;
        for w in same_url {
            if let Some(id) = mapping::parse_id(&w["id"]) {
                let (status, body) = self
                    .call(
                        Op::DeleteWebhook,
                        &format!("/api/v1/webhooks/{id}"),
                        &[],
                        None,
                    )
                    .await?;
                if status.is_success() || status == StatusCode::NOT_FOUND {
                    removed += 1;
                } else {
                    return Err(error_for(status, &body));
                }
            }
        }
        let mut req = json!({
            "subscription_url": subscription_url,
            "event_action": "*",
            "event_object": "person",
            "name": WEBHOOK_NAME,
            "version": "2.0",
        });
        if let Some(u) = user {
            req["http_auth_user"] = json!(u);
            req["http_auth_password"] = json!(password.unwrap_or(""));
        }
        let (status, body) = self
            .call(Op::AddWebhook, "/api/v1/webhooks", &[], Some(&req))
            .await?;
        if !status.is_success() {
            return Err(error_for(status, &body));
        }
        let id = mapping::parse_id(&body["data"]["id"]).ok_or_else(|| shape_error("webhook"))?;
        Ok(WebhookRegistration {
            webhook_id: id,
            created: true,
            removed,
        })
    }
}
