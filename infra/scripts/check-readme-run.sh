#!/usr/bin/env bash
# Checks the README's first command (the local run) exactly as a new user types it: takes the
# first command of the README's first bash block, runs it with PORT and CONTACT_SYNC_DATA_DIR set
# to a free port and a fresh folder, waits for GET /health, creates one contact, waits until it is
# in both simulated CRMs and the app shows it synced, then stops the command (SIGTERM).
# Usage: bash infra/scripts/check-readme-run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

# The first line of the first ```bash block that is neither empty nor a comment.
cmd="$(awk '/^```bash/ { inside = 1; next } inside && /^```/ { exit } inside && $0 !~ /^[[:space:]]*(#|$)/ { print; exit }' README.md)"
[ -n "$cmd" ] || { echo "no command found in README.md's first bash block" >&2; exit 1; }
echo "README run command: $cmd"

# A free port whose successor (the simulator's default port) is free as well.
port="$(python3 - <<'PY'
import socket
for _ in range(50):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        a.close(); continue
    a.close(); b.close(); print(p); break
PY
)"
data="$(mktemp -d)"
log="${TMPDIR:-/tmp}/contact-sync-readme-run.log"
base="http://127.0.0.1:$port"
sim="http://127.0.0.1:$((port + 1))"
auth="Authorization: Bearer local-dev-key"

PORT="$port" CONTACT_SYNC_DATA_DIR="$data" setsid bash -c "$cmd" > "$log" 2>&1 &
pid=$!
stop() {
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -rf "$data"
}
trap stop EXIT
fail() { echo "FAILED: $*" >&2; echo "--- its output:" >&2; tail -n 40 "$log" >&2; exit 1; }

# Up to 15 minutes: on a fresh machine the command compiles first.
for i in $(seq 1 1800); do
  curl -fsS "$base/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || fail "the command exited before serving /health"
  [ "$i" -lt 1800 ] || fail "no /health within 15 minutes"
  sleep 0.5
done
echo "serving /health on $base"

email="readme-$(date +%s)@example.com"
created="$(curl -fsS -X POST "$base/contacts" -H "$auth" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"first_name\":\"Ada\",\"last_name\":\"Lovelace\",\"pronouns\":\"she/her\"}")" ||
  fail "POST /contacts"
id="$(printf '%s' "$created" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')"

has() { # has URL PYTHON-EXPRESSION-ON-d
  curl -fsS -H "$auth" "$1" 2>/dev/null | python3 -c "import json, sys; d = json.load(sys.stdin); sys.exit(0 if ($2) else 1)" 2>/dev/null
}
for i in $(seq 1 200); do
  if has "$sim/_sim/hubspot/contacts" "any(c['properties'].get('email') == '$email' for c in d['results'])" &&
     has "$sim/_sim/pipedrive/persons" "any(any(e.get('value') == '$email' for e in p.get('emails') or []) for p in d['data'])" &&
     has "$base/contacts/$id" "d['sync']['badge'] == 'synced'"; then
    echo "contact $id is in HubSpot and Pipedrive, badge synced"
    exit 0
  fi
  sleep 0.1
done
fail "the contact did not reach both simulated CRMs within 20 s"
