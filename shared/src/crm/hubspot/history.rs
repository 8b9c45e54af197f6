//! A contact read with the history of some of its properties (`propertiesWithHistory`), to see
//! what our writes replaced.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{HubSpotClient, mapping};
use crate::domain::{CrmRecord, CustomField, Field, Reported};
use crate::error::CrmError;
use crate::ports::CrmContext;

impl HubSpotClient {
    /// `GET /crm/v3/objects/contacts/{id}?properties=…&propertiesWithHistory=…`: the record and
    /// the values of `fields` set at or after `since`, in one request.
    pub(super) async fn read_with_history(
        &self,
        ctx: &CrmContext,
        id: &str,
        fields: &[Field],
        since: DateTime<Utc>,
    ) -> Result<(Option<CrmRecord>, Vec<Reported>), CrmError> {
        let key = ctx.field(CustomField::Pronouns);
        let with_history: Vec<String> = fields
            .iter()
            .filter_map(|f| mapping::property_name(*f, key))
            .collect();
        let mut extra = Vec::new();
        if !with_history.is_empty() {
            extra.push(("propertiesWithHistory", with_history.join(",")));
        }
        let Some(mut body) = self.read_object(ctx, id, extra).await? else {
            return Ok((None, Vec::new()));
        };
        let history = match body.get("propertiesWithHistory") {
            Some(Value::Object(h)) => mapping::history(h, key, fields, since),
            _ => Vec::new(),
        };
        if let Value::Object(o) = &mut body {
            o.remove("propertiesWithHistory");
        }
        Ok((Some(Self::parse_object(body, key)?), history))
    }
}
