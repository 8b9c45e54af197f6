//! Steady state: what one edit of a linked contact costs each CRM once everything it sets off
//! has settled (the write, its echo coming back as a webhook, any check), counted by the
//! simulators. An edit in one place should cost one write to each other place and nothing for
//! its echoes: a second write anywhere would be a ping-pong.

use std::time::Duration;

use anyhow::{Context, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Figure;
use crate::runner::{Runner, Scratch};

const WAIT: Duration = Duration::from_secs(60);

/// Counters of both simulators at one moment.
#[derive(Default, Clone, Copy)]
struct Counts {
    hs_requests: f64,
    hs_writes: f64,
    pd_requests: f64,
    pd_writes: f64,
    pd_tokens: f64,
}

impl Counts {
    async fn read(runner: &Runner) -> anyhow::Result<Self> {
        let hs = runner.sim_get("/_sim/hubspot/stats").await?;
        let pd = runner.sim_get("/_sim/pipedrive/stats").await?;
        let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0) as f64;
        Ok(Self {
            hs_requests: n(&hs, "requests"),
            hs_writes: n(&hs, "write_calls"),
            pd_requests: n(&pd, "requests"),
            pd_writes: n(&pd, "write_calls"),
            pd_tokens: n(&pd, "tokens_used"),
        })
    }

    fn since(self, before: Self, per: f64) -> Self {
        Self {
            hs_requests: (self.hs_requests - before.hs_requests) / per,
            hs_writes: (self.hs_writes - before.hs_writes) / per,
            pd_requests: (self.pd_requests - before.pd_requests) / per,
            pd_writes: (self.pd_writes - before.pd_writes) / per,
            pd_tokens: (self.pd_tokens - before.pd_tokens) / per,
        }
    }
}

/// One edit of each kind per contact, `n` contacts; the cost per edit.
pub async fn run(bin: &std::path::Path, n: usize) -> anyhow::Result<(Vec<Figure>, Vec<String>)> {
    let scratch = Scratch::new("steady");
    let runner = Runner::start(bin, &scratch.0, &[]).await?;
    let runner = &runner;
    runner.post("/setup/pronouns-fields", &json!({})).await?;
    let mut linked = Vec::new();
    for i in 0..n {
        let c = runner
            .post(
                "/contacts",
                &json!({"email": format!("steady{i}@example.com"), "first_name": "Steady",
                        "last_name": "State", "pronouns": "she/her"}),
            )
            .await?;
        linked.push(c["id"].as_str().context("no id")?.to_string());
    }
    runner.settled(WAIT).await?;
    let mut ids = Vec::new();
    for id in &linked {
        let c = runner.get(&format!("/contacts/{id}")).await?;
        let crm = |name: &str| {
            c["sync"]["crms"][name]["external_id"]
                .as_str()
                .map(str::to_owned)
        };
        ids.push((
            id.clone(),
            crm("hubspot").context("not in HubSpot")?,
            crm("pipedrive").context("not in Pipedrive")?,
        ));
    }

    let mut rows = Vec::new();
    for kind in ["app edit", "HubSpot edit", "Pipedrive edit"] {
        let before = Counts::read(runner).await?;
        for (i, (app, hs, pd)) in ids.iter().enumerate() {
            let value = format!("{kind} {i}").replace(' ', "-");
            match kind {
                "app edit" => {
                    let mut c = runner.get(&format!("/contacts/{app}")).await?;
                    c["last_name"] = json!(value);
                    let res = runner
                        .http
                        .put(format!("{}/contacts/{app}", runner.app))
                        .bearer_auth(crate::runner::KEY)
                        .json(&json!({"email": c["email"], "first_name": c["first_name"],
                                      "last_name": value, "pronouns": c["pronouns"]}))
                        .send()
                        .await?;
                    ensure!(res.status().is_success(), "PUT /contacts: {}", res.status());
                }
                "HubSpot edit" => {
                    runner
                        .sim_send(
                            Method::PATCH,
                            &format!("/_sim/hubspot/contacts/{hs}"),
                            &json!({"properties": {"lastname": value}}),
                        )
                        .await?;
                }
                _ => {
                    runner
                        .sim_send(
                            Method::PATCH,
                            &format!("/_sim/pipedrive/persons/{pd}"),
                            &json!({"last_name": value}),
                        )
                        .await?;
                }
            }
            runner.settled(WAIT).await?;
            let c = runner.get(&format!("/contacts/{app}")).await?;
            ensure!(
                c["last_name"] == value.as_str(),
                "{kind} {i} did not reach the app"
            );
        }
        let per = Counts::read(runner).await?.since(before, n as f64);
        rows.push((kind, per));
    }

    let mut figures = Vec::new();
    let mut notes = Vec::new();
    for (kind, c) in rows {
        // The edited side is written by the user (the simulator's UI edits are not API calls):
        // one write to each other CRM, none to the edited one.
        let (hs_writes, pd_writes) = match kind {
            "HubSpot edit" => (0.0, 1.0),
            "Pipedrive edit" => (1.0, 0.0),
            _ => (1.0, 1.0),
        };
        figures.push(Figure::lower(
            format!("steady: {kind}: HubSpot writes per edit"),
            c.hs_writes,
            "",
            hs_writes,
        ));
        figures.push(Figure::lower(
            format!("steady: {kind}: Pipedrive writes per edit"),
            c.pd_writes,
            "",
            pd_writes,
        ));
        // Tokens: a PATCH (5) and at most one read (1) where Pipedrive is written; at most
        // one read where it is the edited side; nothing for echoes.
        figures.push(Figure::lower(
            format!("steady: {kind}: Pipedrive tokens per edit"),
            c.pd_tokens,
            "tok",
            if pd_writes > 0.0 { 6.0 } else { 1.0 },
        ));
        notes.push(format!(
            "steady {kind} (n={n}, per edit, settled, echoes included): HubSpot {:.2} requests \
             ({:.2} writes); Pipedrive {:.2} requests ({:.2} writes, {:.2} tokens)",
            c.hs_requests, c.hs_writes, c.pd_requests, c.pd_writes, c.pd_tokens
        ));
    }
    Ok((figures, notes))
}
