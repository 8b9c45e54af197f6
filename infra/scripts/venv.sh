#!/usr/bin/env bash
# Creates (or updates) the Python venv with the test tools and prints its path.
# The venv lives outside the clone so CI runs can reuse it: $CONTACT_SYNC_VENV, default
# ~/.cache/contact-sync/venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${CONTACT_SYNC_VENV:-$HOME/.cache/contact-sync/venv}"
req="${REQUIREMENTS:-$here/requirements-test.txt}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv"
