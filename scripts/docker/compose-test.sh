#!/usr/bin/env bash
# `make compose-test`: docker-compose.yml, unchanged, run as a newcomer runs it.
#   1. a Docker engine (installed and started when none answers; stopped again after)
#   2. the base images (pulled, or local stand-ins where no registry answers)
#   3. `up --build -d`, then waits for every service: postgres healthy, the setup job
#      done, stolid healthy by its own `stolid healthcheck` inside the container
#   4. /readyz: Postgres, S3 and SQS reachable from the container, the image's local
#      embedding model loaded (read by the image's non-root user, read-only root fs)
#   5. a key made through the container (`stolid keys create`), the Rust book's pages
#      uploaded, all `indexed`, a chat question whose first citation is the page
#      that answers it
#   6. the container's stdout is JSON lines, model calls among them
#   7. `stop`: SIGTERM reaches stolid (PID 1), which drains and exits 0 inside the
#      grace period
#   8. `down -v`, whether the test passed or failed (the built image stays: it is
#      the build cache of the next run)
# Ports: stolid on $STOLID_PORT, else 8080 when free, else one Docker picks; postgres
# and moto on loopback ports Docker picks (the compose file's defaults).
set -euo pipefail
cd "$(dirname "$0")/../.."
PROJECT="${COMPOSE_TEST_PROJECT:-stolidcomposetest}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stolid-compose-test.XXXXXX")"
T0=$(date +%s) PHASE="" PHASE_T0=$T0 SUMMARY=()

say() { printf '[compose-test +%3ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
phase() {
  local now; now=$(date +%s)
  [ -n "$PHASE" ] && SUMMARY+=("$(printf '%-34s %5ss' "$PHASE" "$((now - PHASE_T0))")")
  PHASE="$1" PHASE_T0=$now
  [ -n "$PHASE" ] && say "== $PHASE"
  return 0
}
fail() { say "FAILED: $*"; exit 1; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); $1"; }

ENGINE_WAS_UP=0
docker info >/dev/null 2>&1 && ENGINE_WAS_UP=1
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -n "${DC:-}" ]; then
    say "logs of the stack (last 40 lines each):"
    $DC -p "$PROJECT" logs --no-color --tail 40 2>&1 | sed 's/^/    /' || true
  fi
  if [ -n "${DC:-}" ]; then
    phase "down -v"
    $DC -p "$PROJECT" down -v --remove-orphans >"$WORK/down.log" 2>&1 || { say "down failed:"; cat "$WORK/down.log"; }
  fi
  phase ""
  if [ "$ENGINE_WAS_UP" = 0 ] && [ -f /run/stolid-dockerd.pid ]; then
    say "stopping the dockerd this test started"
    kill "$(cat /run/stolid-dockerd.pid)" 2>/dev/null || true
    for _ in $(seq 1 40); do docker info >/dev/null 2>&1 || break; sleep 0.5; done
    rm -f /run/stolid-dockerd.pid
  fi
  rm -rf "$WORK"
  printf '\n%-34s %6s\n' phase time
  printf '%s\n' "${SUMMARY[@]}"
  printf '%-34s %5ss\n' total "$(($(date +%s) - T0))"
  if [ "$rc" = 0 ]; then say "compose test passed"; else say "compose test failed (rc $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT

phase "docker engine"
DC="$(scripts/docker/engine.sh)"
say "engine $(docker version -f '{{.Server.Version}}'), compose: $DC ($($DC version --short 2>/dev/null || true))"

phase "base images"
scripts/docker/base-images.sh 2>&1 | sed 's/^/    /'

# Leftovers of an interrupted run of this test (never a user's own stack: own project name).
$DC -p "$PROJECT" down -v --remove-orphans >/dev/null 2>&1 || true

# The user's environment, not this machine's .env, decides nothing here: the local
# provider, and a free port for stolid.
export OPENAI_API_KEY="" OPENAI_BASE_URL="" STOLID_POSTGRES_PORT="" STOLID_MOTO_PORT=""
busy() { ss -ltnH "( sport = :$1 )" 2>/dev/null | grep -q .; }
if [ -z "${STOLID_PORT:-}" ]; then
  if busy 8080; then STOLID_PORT=0; else STOLID_PORT=8080; fi
fi
export STOLID_PORT

phase "up --build -d"
$DC -p "$PROJECT" up --build -d >"$WORK/up.log" 2>&1 &
up=$!
# The image build takes minutes when its cache is cold: show where it is.
while kill -0 "$up" 2>/dev/null; do
  sleep 20
  kill -0 "$up" 2>/dev/null && say "    ... $(sed 's/\x1b\[[0-9;]*m//g' "$WORK/up.log" |
    grep -E '^(Step [0-9]+/|Building |Creating |Starting |#[0-9]+ )| Compiling | Finished ' | tail -n1 | cut -c1-100)"
done
wait "$up" || { tail -n 60 "$WORK/up.log"; fail "up --build did not succeed"; }
sed 's/\x1b\[[0-9;]*m//g' "$WORK/up.log" | grep -E '^(Step [0-9]+/[0-9]+ : RUN cargo|Successfully built|Successfully tagged)| Finished ' |
  sed 's/^ */    /' || true
cid() { $DC -p "$PROJECT" ps -q "$1"; }
STOLID="$(cid stolid)"
[ -n "$STOLID" ] || fail "no stolid container"
IMAGE="$(docker inspect -f '{{.Image}}' "$STOLID")"
say "image: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }'), user $(docker image inspect -f '{{.Config.User}}' "$IMAGE")"

phase "stolid healthy"
for _ in $(seq 1 90); do
  health="$(docker inspect -f '{{.State.Health.Status}}' "$STOLID")"
  [ "$health" = healthy ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$STOLID")" = true ] || fail "stolid exited: $(docker logs --tail 20 "$STOLID" 2>&1)"
  sleep 2
done
[ "$health" = healthy ] || fail "stolid is $health after 180 s"
PORT_LINE="$($DC -p "$PROJECT" port stolid 8080)"
API="http://127.0.0.1:${PORT_LINE##*:}"
say "stolid is healthy, published at $API; postgres at $($DC -p "$PROJECT" port postgres 5432), moto at $($DC -p "$PROJECT" port moto 4566)"
[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$STOLID")" = true ] || fail "stolid's root file system is writable"
# The container's PID 1, seen from the host (the image has no shell to ask from inside).
[ "$(cat "/proc/$(docker inspect -f '{{.State.Pid}}' "$STOLID")/comm")" = stolid ] || fail "PID 1 is not stolid"

phase "readyz"
curl -fsS "$API/readyz" >"$WORK/ready.json" || fail "/readyz: $(cat "$WORK/ready.json")"
json 'print("    ", d["status"], d["checks"], d["model"]["provider"], d["model"]["embedding_model"])' <"$WORK/ready.json"
json 'assert d["status"] == "ready", d
m = d["model"]
assert m["provider"] == "local", m
assert m["embedding_model"] == "all-MiniLM-L6-v2" and "hashed_embeddings" not in m, ("the image model was not loaded", m)' \
  <"$WORK/ready.json" || fail "not ready with the image's model"

phase "key through the container"
KEY="$($DC -p "$PROJECT" exec -T stolid stolid keys create --tenant dev 2>"$WORK/key.err" | tail -n1)"
[[ "$KEY" == stl_* ]] || fail "no key: $(cat "$WORK/key.err")"
auth=(-H "Authorization: Bearer $KEY")
curl -fsS "${auth[@]}" "$API/v1/me" | json 'print("    /v1/me:", d); assert d["tenant"] == "dev", d'

phase "upload the Rust book's pages"
BOOK="$(rustc --print sysroot)/share/doc/rust/html/book"
PAGES=(ch04-01-what-is-ownership ch04-02-references-and-borrowing ch03-01-variables-and-mutability
  ch08-01-vectors ch08-02-strings ch15-01-box)
files=()
for p in "${PAGES[@]}"; do
  [ -f "$BOOK/$p.html" ] || fail "missing $BOOK/$p.html (the toolchain's rust-docs)"
  files+=(-F "file=@$BOOK/$p.html;type=text/html")
done
curl -fsS "${auth[@]}" "${files[@]}" -F collection=book "$API/v1/documents" >"$WORK/upload.json" ||
  fail "upload: $(cat "$WORK/upload.json")"
mapfile -t IDS < <(json 'print("\n".join(x["id"] for x in d["documents"]))' <"$WORK/upload.json")
OWNERSHIP="$(json 'print(next(x["id"] for x in d["documents"] if "ch04-01" in x["title"] or "What is Ownership" in x["title"]))' <"$WORK/upload.json")" ||
  OWNERSHIP="${IDS[0]}"
say "${#IDS[@]} documents queued"

phase "indexed"
for _ in $(seq 1 150); do
  states="$(for id in "${IDS[@]}"; do curl -fsS "${auth[@]}" "$API/v1/documents/$id" | json 'print(d["status"])'; done | sort | uniq -c | xargs)"
  [[ "$states" == "${#IDS[@]} indexed" ]] && break
  [[ "$states" == *failed* ]] && fail "a document failed: $states"
  sleep 2
done
[[ "$states" == "${#IDS[@]} indexed" ]] || fail "not indexed after 300 s: $states"
chunks="$(for id in "${IDS[@]}"; do curl -fsS "${auth[@]}" "$API/v1/documents/$id" | json 'print(d["chunk_count"])'; done |
  python3 -c 'import sys; print(sum(int(l) for l in sys.stdin))')"
say "all ${#IDS[@]} indexed, $chunks chunks"

phase "chat with a citation"
curl -fsS "${auth[@]}" -H 'content-type: application/json' \
  -d '{"message": "What happens to a value when its owner goes out of scope?", "collection": "book"}' \
  "$API/v1/chat" >"$WORK/chat.json" || fail "chat: $(cat "$WORK/chat.json")"
json 'c = d["citations"]; print("    answer:", d["answer"][:160].replace("\n", " ")); print("    cited:", [x["title"] for x in c])' <"$WORK/chat.json"
OWNERSHIP="$OWNERSHIP" json 'import os
c = d["citations"]
assert c, "no citation"
assert c[0]["document_id"] == os.environ["OWNERSHIP"], ("the first citation is not the ownership page", c[0]["title"])' \
  <"$WORK/chat.json" || fail "chat did not cite the page that answers"

phase "logs are JSON lines"
docker logs "$STOLID" >"$WORK/stdout.log" 2>"$WORK/stderr.log"
python3 - "$WORK/stdout.log" "$WORK/stderr.log" <<'PY' || fail "the container's logs are not JSON lines"
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
events = [json.loads(l) for l in lines]  # raises on the first line that is not JSON
assert all(isinstance(e, dict) and "timestamp" in e and "level" in e for e in events), "a line lacks timestamp/level"
calls = [e for e in events if e.get("event") == "model_call"]
assert calls, "no model_call line"
stderr = [l for l in open(sys.argv[2]) if l.strip()]
assert not stderr, f"{len(stderr)} lines on stderr, first: {stderr[0]!r}"
print(f"    {len(events)} JSON lines on stdout, {len(calls)} model calls, nothing on stderr")
PY

phase "stop (SIGTERM to PID 1)"
grace="$(python3 -c 'import re, sys; print(re.search(r"stop_grace_period: *(\d+)s", open("docker-compose.yml").read()).group(1))')"
t=$(date +%s%N)
$DC -p "$PROJECT" stop stolid >"$WORK/stop.log" 2>&1 || fail "stop: $(cat "$WORK/stop.log")"
ms=$((($(date +%s%N) - t) / 1000000))
code="$(docker inspect -f '{{.State.ExitCode}}' "$STOLID")"
docker logs "$STOLID" 2>/dev/null | python3 -c '
import json, sys
messages = [json.loads(l).get("message") for l in sys.stdin if l.strip()]
assert "shutting down" in messages and messages[-1] == "stopped", messages[-5:]' || fail "stolid did not log a clean shutdown"
say "stolid stopped in $ms ms with exit code $code (grace period ${grace} s)"
[ "$code" = 0 ] || fail "exit code $code: SIGTERM did not end stolid cleanly (137 is SIGKILL after the grace period)"
[ "$ms" -lt $((grace * 1000)) ] || fail "stop took $ms ms, the grace period is ${grace} s"
