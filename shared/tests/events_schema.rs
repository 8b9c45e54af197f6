//! The outcomes' JSON Schema in `docs/events.schema.json` is the one the types make: a change
//! of an outcome's shape changes the document in the same commit (`UPDATE_SCHEMAS=1` rewrites
//! it).

#[test]
fn the_documented_event_schema_is_the_one_the_types_make() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.schema.json");
    let made =
        serde_json::to_string_pretty(&shared::domain::json_schema_of_outcomes()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &made).unwrap();
    }
    let documented = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        documented, made,
        "docs/events.schema.json is out of date: run UPDATE_SCHEMAS=1 cargo test -p contact-sync-shared --test events_schema"
    );
    let v: serde_json::Value = serde_json::from_str(&documented).unwrap();
    let kinds: Vec<&str> = v["$defs"]["SyncOutcome"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["properties"]["type"]["enum"][0].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "contact_synced",
            "conflict_resolved",
            "sync_failed",
            "webhooks_broken",
            "quota_paused"
        ]
    );
}
