#!/usr/bin/env bash
# Checks template.yaml offline (sam validate, sam validate --lint, translate-then-cfn-lint) and
# builds the release bootstraps with cargo-lambda, printing each one's size.
# Usage: bash infra/scripts/check-template.sh [--no-build]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
venv="$(CONTACT_SYNC_VENV="${CONTACT_SYNC_SAM_VENV:-$HOME/.cache/contact-sync/sam-venv}" \
  REQUIREMENTS="$here/requirements-sam.txt" bash "$here/venv.sh")"
export PATH="$venv/bin:$PATH" AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0

echo "--- sam validate"
sam validate --region us-east-1 -t template.yaml
echo "--- sam validate --lint"
sam validate --lint -t template.yaml
echo "--- SAM translate + cfn-lint"
python "$here/sam_translate_lint.py" template.yaml
echo "--- timeouts and concurrency (AWS's guidance for Lambda with SQS)"
python "$here/check_timeouts.py" template.yaml --self-test
echo "template checks passed"

if [ "${1:-}" != "--no-build" ]; then
  echo "--- cargo lambda build --release"
  packages=()
  for f in functions/*/; do packages+=(--package "$(basename "$f")"); done
  cargo lambda build --release --compiler cargo "${packages[@]}"
  target="${CARGO_TARGET_DIR:-$root/target}"
  for f in functions/*/; do
    name="$(basename "$f")"
    size="$(stat -c %s "$target/lambda/$name/bootstrap")"
    awk -v n="$name" -v s="$size" 'BEGIN { printf "bootstrap %-16s %6.1f MiB\n", n, s / 1048576 }'
  done
fi
