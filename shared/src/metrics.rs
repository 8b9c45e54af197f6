//! Metrics as CloudWatch embedded metric format (EMF) lines: in Lambda every such line on
//! stdout becomes metrics of the namespace `ContactSync`, by tenant and CRM and in total (the
//! template's alarms watch the totals). Off unless enabled (the Lambda functions enable it);
//! locally the same counts are in `GET /sync/status` and `GET /sync/health`.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value, json};

use crate::domain::{Provider, TenantId};

pub const NAMESPACE: &str = "ContactSync";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Writes the metric lines from now on (in Lambda).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// One sync job's outcome with one CRM: `Synced`, `Failed`, `Conflicts` (counts) and
/// `SyncLatencyMs` (from the change to its sync), by tenant and CRM.
pub fn sync_outcome(
    tenant: &TenantId,
    provider: Provider,
    failed: bool,
    conflicts: usize,
    latency_ms: Option<i64>,
) {
    let mut values = vec![
        ("Synced", "Count", if failed { 0.0 } else { 1.0 }),
        ("Failed", "Count", if failed { 1.0 } else { 0.0 }),
        ("Conflicts", "Count", conflicts as f64),
    ];
    if let Some(ms) = latency_ms {
        values.push(("SyncLatencyMs", "Milliseconds", ms.max(0) as f64));
    }
    emit(tenant, provider, &values);
}

/// Whether a CRM's webhooks look broken for a tenant (1) or not (0), after each poll.
pub fn webhooks_broken(tenant: &TenantId, provider: Provider, broken: bool) {
    emit(
        tenant,
        provider,
        &[("WebhooksBroken", "Count", if broken { 1.0 } else { 0.0 })],
    );
}

fn emit(tenant: &TenantId, provider: Provider, values: &[(&str, &str, f64)]) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    println!(
        "{}",
        line(
            tenant,
            provider,
            values,
            chrono::Utc::now().timestamp_millis()
        )
    );
}

/// The EMF document: the metrics under both dimension sets (tenant and CRM; none, the total).
fn line(tenant: &TenantId, provider: Provider, values: &[(&str, &str, f64)], at_ms: i64) -> String {
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": at_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Tenant", "Provider"], []],
                "Metrics": values.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    doc.insert("Tenant".into(), Value::String(tenant.to_string()));
    doc.insert("Provider".into(), Value::String(provider.to_string()));
    for (name, _, v) in values {
        doc.insert((*name).into(), json!(v));
    }
    Value::Object(doc).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_an_emf_document_with_the_tenant_the_crm_and_the_total() {
        let l = line(
            &TenantId::new("acme"),
            Provider::HubSpot,
            &[
                ("Synced", "Count", 1.0),
                ("SyncLatencyMs", "Milliseconds", 120.0),
            ],
            1_765_000_000_000,
        );
        let v: Value = serde_json::from_str(&l).unwrap();
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_765_000_000_000i64);
        assert_eq!(m["Namespace"], "ContactSync");
        assert_eq!(m["Dimensions"], json!([["Tenant", "Provider"], []]));
        assert_eq!(
            m["Metrics"][1],
            json!({"Name": "SyncLatencyMs", "Unit": "Milliseconds"})
        );
        assert_eq!(
            (&v["Tenant"], &v["Provider"]),
            (&json!("acme"), &json!("hubspot"))
        );
        assert_eq!(
            (&v["Synced"], &v["SyncLatencyMs"]),
            (&json!(1.0), &json!(120.0))
        );
    }
}
