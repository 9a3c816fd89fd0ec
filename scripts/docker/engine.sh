#!/usr/bin/env bash
# A Docker engine and a compose command, for `make compose-test`:
#   - an engine that already answers `docker info` is used as it is;
#   - otherwise Debian's docker.io is installed when dockerd is missing, and dockerd
#     is started in the background (log: $DOCKERD_LOG), its pid written to
#     $DOCKERD_PIDFILE so that whoever started it can stop it again;
#   - compose: `docker compose` (v2) when the client has it, else Debian's
#     docker-compose (v1.29), installed when missing. Both read docker-compose.yml.
# Prints the compose command on stdout, e.g. `docker-compose`.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOG_PREFIX=docker
source scripts/lib.sh
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/stolid-dockerd.log}"
DOCKERD_PIDFILE="${DOCKERD_PIDFILE:-/run/stolid-dockerd.pid}"

if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    log "installing Debian's docker.io"
    apt_install docker.io
  fi
  log "starting dockerd (log: $DOCKERD_LOG)"
  as_root bash -c "nohup dockerd >'$DOCKERD_LOG' 2>&1 & echo \$! >'$DOCKERD_PIDFILE'"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -n 20 "$DOCKERD_LOG" >&2; log "dockerd did not come up"; exit 1; }
fi

if docker compose version >/dev/null 2>&1; then
  echo "docker compose"
else
  command -v docker-compose >/dev/null || { log "installing Debian's docker-compose"; apt_install docker-compose; }
  echo "docker-compose"
fi
