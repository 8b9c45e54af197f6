#!/usr/bin/env bash
# Runs every check and test of contact-sync, installing what it needs on a fresh machine:
# the Rust crates, a Python venv with moto server (AWS APIs), openapi-core (Pipedrive spec
# checks) and schemathesis (API fuzzing), one with aws-sam-cli + cargo-lambda (template checks, Lambda builds), Debian's
# chromium and playwright-core from npm (the dashboard's browser test).
# Usage: bash infra/scripts/test-all.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: $(cargo --version)"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "python tools (moto server, openapi-core, schemathesis)"
venv="$(bash infra/scripts/venv.sh)"
export CONTACT_SYNC_PYTHON="$venv/bin/python"

step "moto server"
moto_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" > "${TMPDIR:-/tmp}/contact-sync-moto.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$moto_port/moto-api/')" 2>/dev/null; then
    break
  fi
  sleep 0.2
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
echo "moto server on $AWS_ENDPOINT_URL"

step "tests"
cargo test --workspace --locked

step "schema-driven fuzzing of the running service (schemathesis against GET /openapi.json)"
bash infra/scripts/api-fuzz.sh

step "simulation: 200 seeds, real clients against the simulators (release)"
cargo test --release -p contact-sync-sim --locked -- --nocapture

step "browser test (Debian chromium + playwright-core)"
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
(cd infra/browser-test && npm ci --no-audit --no-fund --loglevel=error)
target_dir="${CARGO_TARGET_DIR:-$root/target}"
cargo build -p contact-sync-local --locked
(cd infra/browser-test && CONTACT_SYNC_LOCAL_BIN="$target_dir/debug/contact-sync-local" node --test dashboard.test.mjs)
echo "screenshots: test-artifacts/dashboard.png, test-artifacts/dashboard-outage.png"

step "README demo"
bash infra/scripts/demo.sh

step "template checks and Lambda release builds"
bash infra/scripts/check-template.sh

echo
echo "all checks passed"
