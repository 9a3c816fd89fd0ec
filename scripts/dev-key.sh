#!/usr/bin/env bash
# Creates the development API key for tenant `dev` once and keeps it in .env.
# A key that no longer works (e.g. the database was reset) is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
set -a; source .env; set +a
if [ -n "${STOLID_DEV_API_KEY:-}" ] && target/debug/stolid keys verify "$STOLID_DEV_API_KEY" >/dev/null 2>&1; then
  exit 0
fi
key="$(target/debug/stolid keys create --tenant dev 2>/dev/null)"
tmp="$(mktemp)"; grep -v '^STOLID_DEV_API_KEY=' .env >"$tmp" || true
echo "STOLID_DEV_API_KEY=$key" >>"$tmp"; mv "$tmp" .env
echo "[up] created a development API key for tenant dev (saved in .env)" >&2
