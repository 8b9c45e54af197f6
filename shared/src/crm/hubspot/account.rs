//! The portal's account details: its time zone, where HubSpot's daily limit resets ("at
//! midnight based on your time zone setting").

use chrono_tz::Tz;
use reqwest::{Method, StatusCode};

use super::HubSpotClient;
use super::errors::error_message;
use crate::crm::transport::Call;

impl HubSpotClient {
    /// The portal's time zone, from `GET /account-info/v3/details` (`timeZone`, an IANA name
    /// such as `US/Eastern`); asked once, before the client's first request. A refusal (4xx)
    /// or a name we cannot read settles on UTC; a failure to reach HubSpot asks again next time.
    pub async fn portal_time_zone(&self) -> Option<Tz> {
        let fetched = self
            .zone
            .get_or_try_init(|| async {
                let call = Call {
                    method: Method::GET,
                    path: "/account-info/v3/details",
                    query: &[],
                    body: None,
                    lanes: &[&self.burst],
                    cost: 1,
                };
                match self.transport.send(&call, self, &self.burst_policy).await {
                    Ok((StatusCode::OK, body)) => {
                        let name = body["timeZone"].as_str().unwrap_or_default();
                        Ok(name.parse::<Tz>().unwrap_or_else(|_| {
                            tracing::warn!(zone = name, "unknown portal time zone; using UTC");
                            Tz::UTC
                        }))
                    }
                    Ok((status, body)) if status.is_client_error() => {
                        tracing::warn!(
                            %status,
                            message = %error_message(&body),
                            "account details refused; daily resets assumed at midnight UTC"
                        );
                        Ok(Tz::UTC)
                    }
                    Ok(_) => Err(()),
                    Err(_) => Err(()),
                }
            })
            .await;
        fetched.ok().copied()
    }
}
