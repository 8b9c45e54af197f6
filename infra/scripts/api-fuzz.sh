#!/usr/bin/env bash
# Schema-driven fuzzing of the running service: starts the local runner (its own data folder,
# free ports, the in-process simulators) and runs schemathesis against its GET /openapi.json —
# every operation, positive and negative data, the stateful phase along the document's links
# (create → read → replace → delete) — with every check. Fails on any 5xx, any response the
# document does not allow, or a request the document forbids that is accepted.
#
# Usage: bash infra/scripts/api-fuzz.sh [schemathesis options]
#   API_FUZZ_EXAMPLES  examples per operation and phase (default 25: the test command's budget)
#   API_FUZZ_SEED      the run's seed (default 20261207, so the test command is repeatable;
#                      `API_FUZZ_SEED=random` draws one; the seed is printed either way)
# A longer run: API_FUZZ_EXAMPLES=1000 bash infra/scripts/api-fuzz.sh --max-time 1800
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"

venv="$(bash infra/scripts/venv.sh)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"; sim_port="$(free_port)"
data="$(mktemp -d)"
app="http://127.0.0.1:$port"

cargo build -q -p contact-sync-local --locked
bin="${CARGO_TARGET_DIR:-$root/target}/debug/contact-sync-local"
# Every credential the routes check is set, so the webhook routes are reached past their
# signature checks too (the hooks sign what schemathesis sends, see api_fuzz_hooks.py).
export API_FUZZ_APP_SECRET="fuzz-app-secret-$RANDOM$RANDOM"
export API_FUZZ_HUBSPOT_SECRET="fuzz-hubspot-secret-$RANDOM$RANDOM"
export API_FUZZ_PIPEDRIVE_USER="fuzz-hook-user" API_FUZZ_PIPEDRIVE_PASSWORD="fuzz-hook-password-$RANDOM"
export API_FUZZ_PORTAL=62515 API_FUZZ_COMPANY=8112 API_FUZZ_BASE_URL="$app"
PORT="$port" SIM_PORT="$sim_port" CONTACT_SYNC_DATA_DIR="$data" POLL_INTERVAL_SECS=3600 RUST_LOG=warn \
  APP_WEBHOOK_SECRET="$API_FUZZ_APP_SECRET" HUBSPOT_CLIENT_SECRET="$API_FUZZ_HUBSPOT_SECRET" \
  HUBSPOT_PORTAL_ID="$API_FUZZ_PORTAL" PIPEDRIVE_COMPANY_ID="$API_FUZZ_COMPANY" \
  PIPEDRIVE_WEBHOOK_USER="$API_FUZZ_PIPEDRIVE_USER" PIPEDRIVE_WEBHOOK_PASSWORD="$API_FUZZ_PIPEDRIVE_PASSWORD" \
  "$bin" > "$data/runner.log" 2>&1 &
runner=$!
trap 'kill $runner 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 200); do curl -sf "$app/health" >/dev/null && break; sleep 0.1; done

seed="${API_FUZZ_SEED:-20261207}"
if [ "$seed" = random ]; then seed="$RANDOM$RANDOM"; fi
echo "schemathesis against $app/openapi.json, seed $seed (rerun: API_FUZZ_SEED=$seed bash infra/scripts/api-fuzz.sh)"
status=0
SCHEMATHESIS_HOOKS=api_fuzz_hooks PYTHONPATH="$root/infra/scripts" \
  "$venv/bin/st" --config-file "$root/infra/scripts/schemathesis.toml" run "$app/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "${API_FUZZ_EXAMPLES:-25}" \
    --seed "$seed" \
    --request-timeout 10 \
    --warnings off \
    "$@" || status=$?
if [ "$status" != 0 ]; then
  echo "schemathesis failed (seed $seed); the runner's log:" >&2
  tail -n 40 "$data/runner.log" >&2
fi
if grep -q "panicked" "$data/runner.log"; then
  echo "the runner panicked:" >&2; grep -A5 "panicked" "$data/runner.log" >&2; status=1
fi
exit "$status"
