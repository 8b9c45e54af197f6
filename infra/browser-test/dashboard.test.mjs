// Headless Chromium (Debian's, driven by playwright-core) against the dashboard of the real
// local runner with its in-process CRM simulators: Setup Now, the first sync's preview, a
// contact created in the app turning synced, its sync history, the health, search, erasure,
// the field rules form, a CRM outage showing as an error and recovering, and a screenshot.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const runnerBin = process.env.CONTACT_SYNC_LOCAL_BIN || path.join(targetDir, "debug", "contact-sync-local");
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const artifacts = path.join(root, "test-artifacts");
const KEY = "local-dev-key";

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

async function waitFor(fn, what, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (_) { /* not yet */ }
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function json(url, init = {}) {
  const res = await fetch(url, init);
  return res.json();
}

test("dashboard: setup pronouns, sync a contact, survive a CRM outage", { timeout: 120000 }, async (t) => {
  assert.ok(fs.existsSync(runnerBin), "build the runner first: " + runnerBin);
  assert.ok(fs.existsSync(chromiumPath), "install Debian chromium: " + chromiumPath);
  const [port, simPort] = [await freePort(), await freePort()];
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "contact-sync-browser-"));
  const runner = spawn(runnerBin, [], {
    env: { ...process.env, PORT: String(port), SIM_PORT: String(simPort), CONTACT_SYNC_DATA_DIR: dataDir,
      POLL_INTERVAL_SECS: "3600", RUST_LOG: "warn" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  t.after(() => { runner.kill("SIGTERM"); fs.rmSync(dataDir, { recursive: true, force: true }); });
  const base = `http://127.0.0.1:${port}`;
  const sim = `http://127.0.0.1:${simPort}`;
  await waitFor(async () => (await fetch(base + "/health")).ok, "the local runner");

  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));

  // The page loads without a key and asks for one.
  await page.goto(base + "/");
  assert.equal(await page.title(), "contact-sync");
  await page.fill("#api-key", KEY);
  await page.click("#save-key");

  // Fresh simulators have no pronouns field: the banner shows; Setup Now creates the fields.
  await page.waitForSelector("#pronouns-banner:not([hidden])");
  assert.match(await page.textContent("#pronouns-missing"), /HubSpot and Pipedrive/);
  await page.click("#setup-now");
  await page.waitForSelector("#pronouns-banner", { state: "hidden" });
  const pronouns = await json(base + "/setup/pronouns-status", { headers: { Authorization: "Bearer " + KEY } });
  assert.equal(pronouns.ready, true);

  // Before the first Sync Now, the preview says what it would do, and writes nothing: a person
  // Pipedrive had before (its webhook lost) would be imported, and created in HubSpot too.
  await fetch(sim + "/_sim/pipedrive/webhooks", { method: "POST", headers: { "content-type": "application/json" }, body: '{"enabled":false}' });
  await fetch(sim + "/_sim/pipedrive/persons", { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "Ada Lovelace", emails: [{ value: "ada@example.com", primary: true }] }) });
  await fetch(sim + "/_sim/pipedrive/webhooks", { method: "POST", headers: { "content-type": "application/json" }, body: '{"enabled":true}' });
  const writesBefore = [(await json(sim + "/_sim/hubspot/stats")).write_calls, (await json(sim + "/_sim/pipedrive/stats")).write_calls];
  await page.waitForSelector("#preview-card:not([hidden])");
  await page.click("#preview-run");
  const count = (provider, kind) => `#preview-result [data-provider="${provider}"] [data-kind="${kind}"] .count`;
  await page.waitForSelector(count("pipedrive", "imported"));
  assert.equal(await page.textContent(count("pipedrive", "imported")), "1");
  assert.equal(await page.textContent(count("hubspot", "created_from_other_crms")), "1");
  await page.click(`#preview-result [data-provider="pipedrive"] [data-kind="imported"] summary`);
  assert.match(await page.textContent(`#preview-result [data-provider="pipedrive"] [data-kind="imported"]`), /Ada Lovelace · ada@example.com/);
  assert.match(await page.textContent(`#preview-result [data-provider="pipedrive"] .preview-cost`), /1 request\(s\), 10 tokens/);
  const writesAfter = [(await json(sim + "/_sim/hubspot/stats")).write_calls, (await json(sim + "/_sim/pipedrive/stats")).write_calls];
  assert.deepEqual(writesAfter, writesBefore, "the preview wrote nothing in either CRM");
  fs.mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, "dashboard-preview.png"), fullPage: true });

  // A contact created in the app turns synced after Sync Now.
  await page.fill("#new-contact input[name=email]", "grace@example.com");
  await page.fill("#new-contact input[name=first_name]", "Grace");
  await page.fill("#new-contact input[name=last_name]", "Hopper");
  await page.fill("#new-contact input[name=pronouns]", "she/her");
  await page.click("#new-contact button[type=submit]");
  await page.waitForSelector('tr[data-email="grace@example.com"]');
  await page.click("#sync-now");
  const badge = 'tr[data-email="grace@example.com"] td:nth-child(4) .badge';
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "synced", badge, { timeout: 30000 });
  const hubspot = await json(sim + "/_sim/hubspot/contacts");
  const inHubSpot = hubspot.results.find((c) => c.properties.email === "grace@example.com");
  assert.equal(inHubSpot.properties.pronouns, "she/her");
  const persons = await json(sim + "/_sim/pipedrive/persons");
  assert.ok(JSON.stringify(persons).includes("grace@example.com"), "the contact is in Pipedrive too");
  await page.waitForSelector('tr[data-email="ada@example.com"]');

  // The contact's detail view: its sync history, newest first — created in both CRMs from the
  // app; then a HubSpot user's edit comes back into the app.
  await page.click('tr[data-email="grace@example.com"]');
  await page.waitForSelector('#contact-detail:not([hidden]) #history tr[data-trigger="app"][data-provider="hubspot"]');
  assert.match(await page.textContent('#history tr[data-trigger="app"][data-provider="hubspot"]'), /created/);
  assert.match(await page.textContent('#history tr[data-trigger="app"][data-provider="pipedrive"]'), /→ Pipedrive first_name: ∅ → Grace/);
  await fetch(sim + "/_sim/hubspot/contacts/" + inHubSpot.id, { method: "PATCH", headers: { "content-type": "application/json" },
    body: JSON.stringify({ properties: { phone: "+1 555 0100" } }) });
  await page.waitForSelector('#history tr[data-trigger="webhook"][data-provider="hubspot"]', { timeout: 30000 });
  assert.match(await page.textContent('#history tr[data-trigger="webhook"][data-provider="hubspot"]'), /→ app phone: ∅ → \+1 555 0100/);
  await page.screenshot({ path: path.join(artifacts, "dashboard-history.png"), fullPage: true });
  await page.click("#detail-close");
  await page.waitForSelector("#contact-detail", { state: "hidden" });

  // The health of each CRM: webhooks come in.
  await page.waitForFunction(() => document.querySelector('[data-provider="hubspot"] .webhooks')?.textContent === "ok");

  // Search: only the matching contacts are listed.
  await page.fill("#contact-search", "lovelace");
  await page.waitForFunction(() => document.querySelectorAll("#contacts tr.contact-row").length === 1);
  assert.equal(await page.getAttribute("#contacts tr.contact-row", "data-email"), "ada@example.com");
  assert.match(await page.textContent("#contacts-page"), /matching .lovelace./);
  await page.fill("#contact-search", "");
  await page.waitForSelector('tr[data-email="grace@example.com"]');
  await page.waitForFunction(() => document.querySelector('[data-provider="hubspot"] .last-sync')?.textContent !== "never");
  assert.equal(await page.textContent('[data-provider="hubspot"] .errors'), "0");

  // HubSpot goes down: an app edit fails visibly, without breaking the page...
  await fetch(sim + "/_sim/hubspot/outage", { method: "POST", headers: { "content-type": "application/json" }, body: '{"down":true}' });
  const row = await page.getAttribute('tr[data-email="grace@example.com"]', "data-id");
  const put = await fetch(`${base}/contacts/${row}`, {
    method: "PUT", headers: { Authorization: "Bearer " + KEY, "content-type": "application/json" },
    body: JSON.stringify({ email: "grace@example.com", first_name: "Grace", last_name: "Hopper", job_title: "Rear Admiral", pronouns: "she/her" }),
  });
  assert.equal(put.status, 200);
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "error", badge, { timeout: 30000 });
  await page.waitForSelector('[data-provider="hubspot"] .last-error');
  fs.mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, "dashboard-outage.png"), fullPage: true });

  // ...and recovers once HubSpot is back (retry, or Sync Now re-queues failed contacts).
  await fetch(sim + "/_sim/hubspot/outage", { method: "POST", headers: { "content-type": "application/json" }, body: '{"down":false}' });
  await page.click("#sync-now");
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "synced", badge, { timeout: 60000 });
  const after = await json(sim + "/_sim/hubspot/contacts");
  assert.equal(after.results.find((c) => c.properties.email === "grace@example.com").properties.jobtitle, "Rear Admiral");
  await page.waitForFunction(() => document.querySelector('[data-provider="hubspot"] .errors')?.textContent === "0");

  // Field rules: the form stores a direction and a winner per field; the email's is fixed.
  await page.selectOption('#rules tr[data-field="phone"] select[name=direction]', "app_to_crms");
  await page.selectOption('#rules tr[data-field="job_title"] select[name=winner]', "newest");
  await page.click("#rules-save");
  await page.waitForFunction(() => document.querySelector("#rules-line")?.textContent.startsWith("Saved."));
  const stored = await json(base + "/settings/fields", { headers: { Authorization: "Bearer " + KEY } });
  assert.equal(stored.fields.phone.direction, "app_to_crms");
  assert.equal(stored.fields.job_title.winner, "newest");
  assert.equal(stored.fields.first_name.direction, "two_way");
  assert.equal(await page.isDisabled('#rules tr[data-field="email"] select[name=direction]'), true);

  // Erasure from the contact's detail view, confirmed: gone from the app and from HubSpot.
  await page.click('tr[data-email="ada@example.com"]');
  await page.waitForSelector("#contact-detail:not([hidden])");
  page.once("dialog", (d) => d.accept());
  await page.click("#detail-erase");
  await page.waitForSelector('tr[data-email="ada@example.com"]', { state: "detached", timeout: 30000 });
  await waitFor(async () => !JSON.stringify(await json(sim + "/_sim/hubspot/contacts")).includes("ada@example.com"), "Ada erased in HubSpot");

  const shot = path.join(artifacts, "dashboard.png");
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 10000, "screenshot written");
  assert.deepEqual(pageErrors, [], "no JavaScript errors on the page");
  assert.equal(await page.isHidden("#error"), true, "no error banner after recovery");
});
