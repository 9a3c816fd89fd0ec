#!/usr/bin/env bash
# Builds and installs pgvector 0.8 for the local PostgreSQL from Debian's source
# package (pgvector is not packaged for bookworm; trixie's source builds cleanly
# against PostgreSQL 15 with PGXS). Idempotent: a no-op when already installed.
#
# The system apt configuration is left untouched: the deb-src entry lives in a
# private apt config, and the archive address is read from this machine's own
# sources file. postgresql-server-dev is pinned to the running server's version
# so apt does not upgrade the server underneath us.
set -euo pipefail
PG_MAJOR="${PG_MAJOR:-$(ls /usr/lib/postgresql | sort -V | tail -n1)}"
PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
SRC_SUITE="${SRC_SUITE:-trixie}"
SOURCES_FILE="${SOURCES_FILE:-/etc/apt/sources.list.d/debian.sources}"
export DEBIAN_FRONTEND=noninteractive
log() { echo "[pgvector] $*" >&2; }
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

installed() {
  local ctl
  ctl="$("$PG_CONFIG" --sharedir 2>/dev/null)/extension/vector.control"
  [ -f "$ctl" ] && grep -q "default_version = '0\.8\." "$ctl" && [ -f "$("$PG_CONFIG" --pkglibdir)/vector.so" ]
}
if installed; then log "pgvector 0.8 already installed for PostgreSQL $PG_MAJOR"; exit 0; fi

ok() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
need=()
for p in dpkg-dev make gcc; do ok "$p" || need+=("$p"); done
if ! ok "postgresql-server-dev-$PG_MAJOR"; then
  v="$(dpkg-query -W -f='${Version}' "postgresql-$PG_MAJOR" 2>/dev/null || true)"
  need+=("postgresql-server-dev-$PG_MAJOR${v:+=$v}")
fi
if ((${#need[@]})); then
  log "installing build dependencies: ${need[*]}"
  sudo_ apt-get update -qq
  sudo_ apt-get install -y -qq --no-install-recommends --no-upgrade "${need[@]}" ||
    sudo_ apt-get install -y -qq --no-install-recommends --no-upgrade "${need[@]%%=*}"
fi

codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
read -r URI KEYRING < <(awk -v s="$codename" '
  function f() { if (ok && u != "") { print u, (k == "" ? "-" : k); d = 1; exit } u = k = ""; ok = 0 }
  /^[[:space:]]*$/ { f(); next }
  /^URIs:/ { u = $2 }
  /^Signed-By:/ { k = $2 }
  /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
  END { if (!d) f() }' "$SOURCES_FILE") || true
[ -n "${URI:-}" ] || URI="$(awk '/^URIs:/ { print $2; exit }' "$SOURCES_FILE")"
[ -n "$URI" ] || { log "no URIs: line in $SOURCES_FILE"; exit 1; }
[[ -n "${KEYRING:-}" && "$KEYRING" != - ]] || KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"
A="$WORK/apt"; S="$WORK/src"
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$S"
echo "deb-src [signed-by=$KEYRING] $URI $SRC_SUITE main" >"$A/sources.list"
APT=(-o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache")
sudo_ apt-get "${APT[@]}" -qq update
chown _apt "$S" 2>/dev/null || true
(cd "$S" && apt-get "${APT[@]}" -qq source pgvector >/dev/null)
SRC="$(find "$S" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | sort -V | tail -n1)"
[[ "${SRC##*/pgvector-}" == 0.8.* ]] || { log "unexpected source: $SRC"; exit 1; }
# OPTFLAGS="" builds portable code (no -march=native).
make -s -C "$SRC" -j"$(nproc)" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
sudo_ make -s -C "$SRC" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" install >/dev/null
installed || { log "install did not produce vector 0.8"; exit 1; }
log "installed pgvector ${SRC##*/pgvector-} for PostgreSQL $PG_MAJOR"
