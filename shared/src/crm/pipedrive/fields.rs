//! Person fields: our custom fields (pronouns; a job title where the account has no standard
//! `job_title` field), found or created, and the keys they live under.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tracing::info;

use super::mapping::STANDARD_JOB_TITLE;
use super::{
    JOB_TITLE_FIELD, MAX_PAGE, Op, PRONOUNS_FIELD, PipedriveClient, error_for, shape_error,
};
use crate::domain::CustomField;
use crate::error::CrmError;
use crate::ports::CrmContext;

impl PipedriveClient {
    /// All person fields (`GET /api/v2/personFields`, every page).
    async fn list_fields(&self) -> Result<Vec<Value>, CrmError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut query = vec![("limit", MAX_PAGE.to_string())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let (status, body) = self
                .call(Op::ListFields, "/api/v2/personFields", &query, None)
                .await?;
            if status != StatusCode::OK {
                return Err(error_for(status, &body));
            }
            out.extend(body["data"].as_array().cloned().unwrap_or_default());
            match body["additional_data"]["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    fn custom_field_named<'a>(fields: &'a [Value], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .filter(|f| f["is_custom_field"].as_bool() != Some(false))
            .find(|f| {
                f["field_name"]
                    .as_str()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
            })
            .and_then(|f| f["field_code"].as_str())
    }

    fn job_title_in(fields: &[Value]) -> Option<String> {
        let standard = fields.iter().any(|f| {
            f["field_code"].as_str() == Some(STANDARD_JOB_TITLE)
                && f["is_custom_field"].as_bool() != Some(true)
        });
        if standard {
            return Some(STANDARD_JOB_TITLE.to_string());
        }
        Self::custom_field_named(fields, JOB_TITLE_FIELD).map(str::to_owned)
    }

    async fn create_field(&self, name: &str) -> Result<String, CrmError> {
        let body = json!({"field_name": name, "field_type": "varchar"});
        let (status, body) = self
            .call(Op::AddField, "/api/v2/personFields", &[], Some(&body))
            .await?;
        if !status.is_success() {
            return Err(error_for(status, &body));
        }
        body["data"]["field_code"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| shape_error("person field"))
    }

    /// Where job titles live for this tenant: the standard `job_title` field when the account
    /// has it (contact sync set up), else our `job_title` custom field, created when missing.
    /// The answer is cached per tenant; store it (field-key map) so that `CrmContext` carries
    /// it and no lookup is needed after a restart.
    async fn ensure_job_title_field(&self, ctx: &CrmContext) -> Result<String, CrmError> {
        if let Some(k) = ctx.field(CustomField::JobTitle) {
            return Ok(k.to_string());
        }
        let mut known = self.fields.lock().await;
        if let Some(k) = known.get(&ctx.tenant) {
            return Ok(k.clone());
        }
        let fields = self.list_fields().await?;
        let key = match Self::job_title_in(&fields) {
            Some(k) => k,
            None => {
                let k = self.create_field(JOB_TITLE_FIELD).await?;
                info!(tenant = %ctx.tenant, key = %k, "created the Pipedrive job_title person field");
                k
            }
        };
        known.insert(ctx.tenant.clone(), key.clone());
        Ok(key)
    }

    pub(super) async fn slots(
        &self,
        ctx: &CrmContext,
    ) -> Result<(Option<String>, String), CrmError> {
        let job = self.ensure_job_title_field(ctx).await?;
        Ok((ctx.field(CustomField::Pronouns).map(str::to_owned), job))
    }

    pub(super) async fn ensure_custom_field(
        &self,
        ctx: &CrmContext,
        field: CustomField,
    ) -> Result<String, CrmError> {
        if field == CustomField::JobTitle {
            return self.ensure_job_title_field(ctx).await;
        }
        // Under the fields lock: two setups at once must not create two fields.
        let mut known = self.fields.lock().await;
        let fields = self.list_fields().await?;
        if ctx.field(CustomField::JobTitle).is_none()
            && !known.contains_key(&ctx.tenant)
            && let Some(k) = Self::job_title_in(&fields)
        {
            known.insert(ctx.tenant.clone(), k);
        }
        if let Some(k) = Self::custom_field_named(&fields, PRONOUNS_FIELD) {
            return Ok(k.to_string());
        }
        let key = self.create_field(PRONOUNS_FIELD).await?;
        info!(tenant = %ctx.tenant, key = %key, "created the Pipedrive pronouns person field");
        Ok(key)
    }

    pub(super) async fn find_custom_field(
        &self,
        _ctx: &CrmContext,
        field: CustomField,
    ) -> Result<Option<String>, CrmError> {
        let fields = self.list_fields().await?;
        Ok(match field {
            CustomField::Pronouns => {
                Self::custom_field_named(&fields, PRONOUNS_FIELD).map(str::to_owned)
            }
            CustomField::JobTitle => Self::job_title_in(&fields),
        })
    }
}
