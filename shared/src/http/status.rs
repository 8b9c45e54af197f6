//! `GET /sync/status`: per-CRM health of a tenant.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

use utoipa::{IntoParams, ToSchema};

use super::errors::{ApiError, ErrorBody};
use super::{AppState, Tenant};
use crate::domain::{ConflictRecord, CustomField, Job, LinkStatus, Provider, TenantId};
use crate::ports::{DepthScope, SyncNowProgress};

#[derive(Debug, Serialize, ToSchema)]
pub struct CrmStatus {
    pub provider: Provider,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub synced_contacts: usize,
    pub pending: usize,
    pub errors: usize,
    pub total_errors: u64,
    pub conflicts: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// "ok", or "paused" while the CRM's daily quota is spent.
    #[schema(pattern = "^(ok|paused)$")]
    pub quota: String,
    pub paused_until: Option<DateTime<Utc>>,
    pub pronouns_field: bool,
    /// Whether the CRM's webhooks reach us (`GET /sync/health` has the details).
    pub webhooks: crate::sync::WebhookState,
    /// Why some data does not reach this CRM (the pronouns field is missing), or not at once
    /// (its webhooks look broken).
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStatus {
    pub tenant: TenantId,
    /// Sync jobs waiting or in flight.
    pub queue_depth: usize,
    /// Dead-lettered sync jobs (`POST /dlq/replay` moves the tenant's back).
    pub dlq_depth: usize,
    /// Whose jobs the two depths count: `tenant` (the embedded queue), or `deployment` (SQS
    /// counts whole queues, so on AWS these are every tenant's jobs together).
    pub queue_scope: DepthScope,
    pub crms: Vec<CrmStatus>,
    /// The last (or running) Sync Now.
    pub sync_now: Option<SyncNowProgress>,
}

/// The answer to Sync Now.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Queued {
    /// Always `queued`.
    #[schema(pattern = "^queued$")]
    pub status: String,
}

/// The answer to a DLQ replay.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Replayed {
    /// Dead-lettered jobs moved back to the sync queue.
    pub moved: usize,
}

/// The conflict log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConflictPage {
    pub items: Vec<ConflictRecord>,
}

/// Sync Now: queues a reconcile of the whole tenant; progress shows in `GET /sync/status`
/// under `sync_now`.
#[utoipa::path(post, path = "/sync", tag = "sync", operation_id = "syncNow",
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Queued", body = Queued),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 503, description = "The sync queue is unavailable (retry)", body = ErrorBody),
    ))]
pub async fn sync_now(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<(axum::http::StatusCode, Json<Queued>), ApiError> {
    let job = Job::Reconcile {
        tenant: tenant.clone(),
        round: 1,
    };
    state.queue.enqueue(&[job]).await?;
    tracing::info!(%tenant, "sync now queued");
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(Queued {
            status: "queued".into(),
        }),
    ))
}

/// Per CRM: last sync, errors, conflicts, pending contacts, quota; queue and DLQ depth; the
/// last Sync Now.
#[utoipa::path(get, path = "/sync/status", tag = "sync", operation_id = "syncStatus",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The tenant's sync status", body = SyncStatus),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
        (status = 503, description = "The sync queue is unavailable (retry)", body = ErrorBody),
    ))]
pub async fn sync_status(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<SyncStatus>, ApiError> {
    let svc = &state.service;
    let links = svc.links.links_for_tenant(&tenant).await?;
    let mut crms = Vec::new();
    for provider in svc.tenants.providers(&tenant) {
        let stats = svc.state.stats(&tenant, provider).await?;
        let count = |s: LinkStatus| {
            links
                .iter()
                .filter(|l| l.provider == provider)
                // A record being created counts as pending.
                .filter(|l| match l.status {
                    LinkStatus::Creating => s == LinkStatus::Pending,
                    other => other == s,
                })
                .count()
        };
        let paused = stats.paused_until.filter(|u| *u > Utc::now());
        let pronouns_field = svc
            .state
            .field_key(&tenant, provider, CustomField::Pronouns)
            .await?
            .is_some();
        let health = svc.crm_health(&tenant, provider, &links).await?;
        let mut warnings = if pronouns_field {
            Vec::new()
        } else {
            vec![crate::engine::pronouns_warning(provider)]
        };
        warnings.extend(health.warning);
        crms.push(CrmStatus {
            provider,
            last_sync_at: stats.last_sync_at,
            synced_contacts: count(LinkStatus::Synced),
            pending: count(LinkStatus::Pending),
            errors: count(LinkStatus::Error),
            total_errors: stats.errors,
            conflicts: stats.conflicts,
            last_error: stats.last_error,
            last_error_at: stats.last_error_at,
            quota: if paused.is_some() { "paused" } else { "ok" }.into(),
            paused_until: paused,
            pronouns_field,
            webhooks: health.webhooks,
            warnings,
        });
    }
    let queue = state.queue.depth(&tenant).await?;
    let dlq = state.queue.dlq_depth(&tenant).await?;
    Ok(Json(SyncStatus {
        queue_depth: queue.jobs,
        dlq_depth: dlq.jobs,
        queue_scope: queue.scope,
        sync_now: svc.sync_now_progress(&tenant).await?,
        tenant,
        crms,
    }))
}

/// Moves the tenant's dead-lettered sync jobs back to the sync queue.
#[utoipa::path(post, path = "/dlq/replay", tag = "sync", operation_id = "replayDlq",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Replayed", body = Replayed),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 503, description = "The sync queue is unavailable (retry)", body = ErrorBody),
    ))]
pub async fn replay_dlq(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<Replayed>, ApiError> {
    let moved = state.queue.replay_dlq(&tenant).await?;
    tracing::info!(%tenant, moved, "DLQ replayed");
    Ok(Json(Replayed { moved }))
}

#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConflictQuery {
    /// How many, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// The conflict log, newest first, with the base, both values and the winner.
#[utoipa::path(get, path = "/conflicts", tag = "sync", operation_id = "listConflicts",
    params(ConflictQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Conflicts, newest first", body = ConflictPage),
        (status = 400, description = "A bad query (limit out of range)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
    ))]
pub async fn conflicts(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Result<axum::extract::Query<ConflictQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConflictPage>, ApiError> {
    let axum::extract::Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let items = state.service.state.conflicts(&tenant, limit).await?;
    Ok(Json(ConflictPage { items }))
}
