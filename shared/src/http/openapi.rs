//! The app API's OpenAPI 3.1 document, generated from the routes and the types they read and
//! write (`utoipa`): every route is registered through [`utoipa_axum`], so a route cannot be
//! served without being in the document. Served at `GET /openapi.json`, without a key.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::errors::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "contact-sync",
        description = "Two-way contact sync between an app and HubSpot and Pipedrive. App routes \
            take `Authorization: Bearer <API key>`; the webhook routes authenticate their sender \
            (HubSpot signatures, Pipedrive HTTP Basic auth, the app's HMAC). Every error is \
            `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody)),
    tags(
        (name = "contacts", description = "The app's contacts, each with its sync status"),
        (name = "sync", description = "Sync status, Sync Now, the DLQ and the conflict log"),
        (name = "setup", description = "The pronouns custom field in each CRM"),
        (name = "settings", description = "The tenant's field rules: direction and conflict winner per field"),
        (name = "webhooks", description = "Change notifications from the CRMs and the app"),
        (name = "service", description = "Health, this document and the dashboard"),
    )
)]
pub(super) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The tenant's API key"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "pipedrive_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The login registered with the tenant's Pipedrive webhooks",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "hubspot_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-HubSpot-Signature-v3",
                "HubSpot's request signature (v3 with X-HubSpot-Request-Timestamp, or v1/v2 in \
                 X-HubSpot-Signature), keyed with the app's client secret",
            ))),
        );
        components.add_security_scheme(
            "app_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Webhook-Signature",
                "hex(HMAC-SHA256(the tenant's app webhook secret, raw body))",
            ))),
        );
    }
}

/// Internally tagged enums whose variants take no other fields (`#[serde(tag = ...,
/// deny_unknown_fields)]`): utoipa closes structs so, not the variants of an enum.
const CLOSED_ENUMS: [&str; 1] = ["AppEvent"];

struct ClosedVariants;

impl Modify for ClosedVariants {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        for name in CLOSED_ENUMS {
            let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(name) else {
                panic!("{name} is not a oneOf schema: CLOSED_ENUMS is out of date");
            };
            for item in &mut one_of.items {
                if let RefOr::T(Schema::Object(variant)) = item {
                    variant.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
}

/// The whole document: every route of the app API and the webhook receivers.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = super::all_routes().split_for_parts().1;
    // After the routes are in: their schemas are collected from them.
    ClosedVariants.modify(&mut doc);
    doc
}

fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .expect("the generated document is JSON")
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "service", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        content_type = "application/json", body = Object)))]
pub async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}
