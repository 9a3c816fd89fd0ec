#!/usr/bin/env bash
# Drops the per-test databases (stolid_test_*) that earlier runs left behind. Benchmarks,
# eval and chaos name theirs stolid_bench_*, stolid_eval_*, stolid_chaos_*: a run of theirs
# going on meanwhile keeps its database.
set -euo pipefail
cd "$(dirname "$0")/.."
set -a; source .env; set +a
for db in $(psql "$DATABASE_URL" -XqtAc "SELECT datname FROM pg_database WHERE datname LIKE 'stolid\_test\_%'"); do
  psql "$DATABASE_URL" -Xqc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
done
