//! HubSpot's batch read, by record id or by a unique property.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{BATCH_LIMIT, HubSpotClient, Lane, error_for, mapping};
use crate::domain::{CrmRecord, CustomField};
use crate::error::CrmError;
use crate::ports::CrmContext;

impl HubSpotClient {
    /// `POST /crm/v3/objects/contacts/batch/read`, 100 inputs per call, by record id or by a
    /// unique property (`id_property`). Inputs that match nothing are absent (HubSpot's 207).
    pub(super) async fn batch_read(
        &self,
        ctx: &CrmContext,
        inputs: &[String],
        id_property: Option<&str>,
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let key = ctx.field(CustomField::Pronouns);
        let mut out = Vec::new();
        for chunk in inputs.chunks(BATCH_LIMIT) {
            let mut body = json!({
                "properties": mapping::read_properties(key),
                "propertiesWithHistory": [],
                "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            });
            if let Some(property) = id_property {
                body["idProperty"] = json!(property);
            }
            let (status, body) = self
                .call(
                    Lane::Standard,
                    Method::POST,
                    "/crm/v3/objects/contacts/batch/read",
                    &[],
                    Some(&body),
                )
                .await?;
            if !(status == StatusCode::OK || status == StatusCode::MULTI_STATUS) {
                return Err(error_for(status, &body));
            }
            for item in body["results"].as_array().into_iter().flatten() {
                out.push(Self::parse_object(item.clone(), key)?);
            }
        }
        Ok(out)
    }
}
