#!/usr/bin/env bash
# The web console's front end (console/): its sources are ES modules in src/, bundled
# with Chart.js by esbuild into dist/app.js, which is committed and built into the binary
# (so `make up` and `cargo build` need no Node.js).
#   setup   Node.js and npm (Debian's, if missing), the pinned packages (npm ci, again
#           whenever package-lock.json changes), and Debian's chromium for the browser tests
#   build   rewrite dist/app.js from src/ (`make console`)
#   check   fail if the committed dist/app.js is not what src/ builds to (`make test` runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_PREFIX=console
source scripts/lib.sh

setup() {
  command -v npm >/dev/null || { log "installing Node.js and npm"; apt_install nodejs npm; }
  local want; want="$(sha256sum console/package-lock.json | cut -d' ' -f1)"
  if [ "$(cat console/node_modules/.lock-sha256 2>/dev/null)" != "$want" ]; then
    log "installing the console's packages (esbuild, Chart.js, playwright-core)"
    (cd console && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >console/node_modules/.lock-sha256
  fi
  command -v "${CHROMIUM:-/usr/bin/chromium}" >/dev/null || { log "installing Debian's chromium (browser tests)"; apt_install chromium; }
}

bundle() {  # bundle OUTFILE
  (cd console && OUT="$1" npm run --silent build)
}

case "${1:-}" in
  setup) setup ;;
  build) setup; bundle dist/app.js; log "built console/dist/app.js" ;;
  check)
    setup
    fresh="$(mktemp -d)"
    trap 'rm -rf "$fresh"' EXIT
    bundle "$fresh/app.js"
    cmp -s "$fresh/app.js" console/dist/app.js ||
      { log "console/dist/app.js is not what console/src builds to: run \`make console\` and commit it"; exit 1; }
    ;;
  *) echo "usage: $0 setup|build|check" >&2; exit 2 ;;
esac
