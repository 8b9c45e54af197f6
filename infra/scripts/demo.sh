#!/usr/bin/env bash
# The product demo on the local runner with the in-process simulators, step by step:
# pronouns setup → a contact created in the app reaches HubSpot and Pipedrive with pronouns →
# an edit in HubSpot comes back to the app → the status shows the last sync and no errors →
# HubSpot goes down: the sync fails visibly → HubSpot comes back: it recovers.
# Usage: bash infra/scripts/demo.sh   (builds and starts its own runner; exits non-zero on failure)
set -euo pipefail
cd "$(dirname "$0")/../.."

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"; sim_port="$(free_port)"
data="$(mktemp -d)"
app="http://127.0.0.1:$port"; sim="http://127.0.0.1:$sim_port"
auth="Authorization: Bearer local-dev-key"

cargo build -q -p contact-sync-local
bin="${CARGO_TARGET_DIR:-target}/debug/contact-sync-local"
PORT="$port" SIM_PORT="$sim_port" CONTACT_SYNC_DATA_DIR="$data" POLL_INTERVAL_SECS=3600 RUST_LOG=warn "$bin" &
runner=$!
trap 'kill $runner 2>/dev/null || true; rm -rf "$data"' EXIT

say() { printf '\n## %s\n' "$*"; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
# check "description" URL PYTHON-CONDITION-ON-d [curl args...]: fails the demo unless it holds.
check() {
  local what="$1" url="$2" cond="$3"; shift 3
  curl -sf "$@" "$url" | python3 -c "import json, sys; d = json.load(sys.stdin); sys.exit(0 if ($cond) else 1)" ||
    { echo "FAILED: $what" >&2; exit 1; }
}
wait_until() { # wait_until "description" command...
  local what="$1"; shift
  for _ in $(seq 1 200); do if "$@" >/dev/null 2>&1; then return 0; fi; sleep 0.1; done
  echo "timed out: $what" >&2; return 1
}
wait_until "the runner" curl -sf "$app/health"

say "1. Set up the pronouns field in both CRMs"
curl -sf -X POST -H "$auth" "$app/setup/pronouns-fields" | json 'd["ready"], [(c["provider"], c["field_key"]) for c in d["crms"]]'

say "2. Create a contact in the app"
id="$(curl -sf -X POST -H "$auth" -H 'content-type: application/json' "$app/contacts" \
  -d '{"email":"grace@example.com","first_name":"Grace","last_name":"Brewster","pronouns":"she/her"}' | json 'd["id"]')"
echo "contact $id"

say "3. It is in HubSpot and Pipedrive, with pronouns"
in_hubspot() { curl -sf "$sim/_sim/hubspot/contacts" | python3 -c 'import json, sys; d = json.load(sys.stdin); sys.exit(0 if any(c["properties"].get("email") == "grace@example.com" and c["properties"].get("pronouns") == "she/her" for c in d["results"]) else 1)'; }
in_pipedrive() { curl -sf "$sim/_sim/pipedrive/persons" | grep -q 'grace@example.com'; }
wait_until "the contact in HubSpot" in_hubspot
wait_until "the person in Pipedrive" in_pipedrive
hs_id="$(curl -sf -H "$auth" "$app/contacts/$id" | json 'd["sync"]["crms"]["hubspot"]["external_id"]')"
curl -sf -H "$auth" "$app/contacts/$id" | json 'd["sync"]["badge"], {p: v["status"] for p, v in d["sync"]["crms"].items()}'

say "4. Edit it in HubSpot (a user in the HubSpot UI)"
curl -sf -X PATCH -H 'content-type: application/json' "$sim/_sim/hubspot/contacts/$hs_id" \
  -d '{"properties":{"lastname":"Hopper","jobtitle":"Rear Admiral"}}' >/dev/null
edited() { curl -sf -H "$auth" "$app/contacts/$id" | python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["last_name"] == "Hopper" else 1)'; }
wait_until "the HubSpot edit in the app" edited
curl -sf -H "$auth" "$app/contacts/$id" | json 'd["first_name"], d["last_name"], d["job_title"], d["pronouns"]'

say "5. Status: last sync and zero errors"
curl -sf -H "$auth" "$app/sync/status" | json '[(c["provider"], c["last_sync_at"], "errors", c["errors"]) for c in d["crms"]]'
curl -sf -H "$auth" "$app/sync/status" | python3 -c 'import json, sys; d = json.load(sys.stdin); sys.exit(0 if all(c["errors"] == 0 and c["last_sync_at"] for c in d["crms"]) else 1)'

say "6. HubSpot goes down; an app edit fails visibly"
curl -sf -X POST -H 'content-type: application/json' "$sim/_sim/hubspot/outage" -d '{"down":true}' >/dev/null
curl -sf -X PUT -H "$auth" -H 'content-type: application/json' "$app/contacts/$id" \
  -d '{"email":"grace@example.com","first_name":"Grace","last_name":"Hopper","job_title":"Commodore","pronouns":"she/her"}' >/dev/null
errored() { curl -sf -H "$auth" "$app/contacts/$id" | python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["sync"]["badge"] == "error" else 1)'; }
wait_until "the visible error" errored
curl -sf -H "$auth" "$app/contacts/$id" | json 'd["sync"]["badge"], d["sync"]["crms"]["hubspot"]["last_error"]'
check "the contact shows HubSpot's error" "$app/contacts/$id" \
  '"503" in (d["sync"]["crms"]["hubspot"]["last_error"] or "")' -H "$auth"

say "7. HubSpot is back; Sync Now recovers"
curl -sf -X POST -H 'content-type: application/json' "$sim/_sim/hubspot/outage" -d '{"down":false}' >/dev/null
curl -sf -X POST -H "$auth" "$app/sync" >/dev/null
recovered() { curl -sf -H "$auth" "$app/contacts/$id" | python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["sync"]["badge"] == "synced" else 1)'; }
wait_until "recovery" recovered
curl -sf "$sim/_sim/hubspot/contacts/$hs_id" | json 'd["properties"]["jobtitle"]'
check "the edit made during the outage reached HubSpot" "$sim/_sim/hubspot/contacts/$hs_id" \
  'd["properties"]["jobtitle"] == "Commodore"'
curl -sf -H "$auth" "$app/sync/status" | json '[(c["provider"], "errors", c["errors"]) for c in d["crms"]], "dlq", d["dlq_depth"]'
check "no errors remain and nothing is in the DLQ" "$app/sync/status" \
  'all(c["errors"] == 0 for c in d["crms"]) and d["dlq_depth"] == 0' -H "$auth"
echo
echo "demo passed"
