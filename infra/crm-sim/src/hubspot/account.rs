//! `GET /account-info/v3/details`: the portal's settings, of which a client needs the time zone
//! (HubSpot's daily limit "resets at midnight based on your time zone setting").

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{Offset, Utc};
use chrono_tz::Tz;
use serde_json::json;

use super::HubSpotSim;

/// The portal's time zone, parsed from the configured IANA name (UTC when it does not parse).
pub(crate) fn zone(name: &str) -> Tz {
    name.parse().unwrap_or(Tz::UTC)
}

/// The `utcOffset` string HubSpot shows, e.g. `-05:00`.
fn offset_string(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    format!("{sign}{:02}:{:02}", s / 3600, (s % 3600) / 60)
}

pub(crate) async fn details(State(sim): State<HubSpotSim>) -> Response {
    let cfg = sim.config();
    let tz = zone(&cfg.portal_time_zone);
    let offset = Utc::now()
        .with_timezone(&tz)
        .offset()
        .fix()
        .local_minus_utc();
    (
        StatusCode::OK,
        axum::Json(json!({
            "portalId": cfg.portal_id,
            "accountType": "STANDARD",
            "timeZone": cfg.portal_time_zone,
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": offset_string(offset),
            "utcOffsetMilliseconds": i64::from(offset) * 1000,
            "uiDomain": "app.hubspot.com",
            "dataHostingLocation": "na1",
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_read_like_hubspot_s() {
        assert_eq!(offset_string(-5 * 3600), "-05:00");
        assert_eq!(offset_string(5 * 3600 + 1800), "+05:30");
        assert_eq!(offset_string(0), "+00:00");
        assert_eq!(zone("US/Eastern"), Tz::US__Eastern);
        assert_eq!(zone("not a zone"), Tz::UTC);
    }
}
