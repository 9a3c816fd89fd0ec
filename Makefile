# stolid's entry points. `make up` runs the product; `make test` proves it.
SHELL := /bin/bash
PORT ?= 8080
CARGO ?= cargo

.PHONY: up infra build test compose-test console console-check openapi bench-ingest bench-fleet bench-api bench-chunk eval chaos lint fmt clean-test-dbs

## up: start the local stack, create a dev API key once (kept in .env), run stolid in the foreground
up: infra build
	@scripts/dev-key.sh
	@set -a; source .env; set +a; echo "[up] dev API key (tenant dev): $$STOLID_DEV_API_KEY"; \
	 echo "[up] try: curl -H \"Authorization: Bearer $$STOLID_DEV_API_KEY\" localhost:$(PORT)/v1/me"; \
	 echo "[up] console: http://localhost:$(PORT)/console (sign in with the dev key)"; \
	 PORT=$(PORT) exec target/debug/stolid serve

## infra: PostgreSQL + pgvector, moto (S3/SQS), bucket and queues, .env (idempotent)
infra:
	@scripts/infra.sh

build:
	$(CARGO) build --locked --bins

## test: the whole suite against the real local stack, the console's browser tests included
## (a green run drops its databases; a failed one keeps them to look at, until the next run)
test: infra clean-test-dbs console-check
	$(CARGO) test --locked --no-fail-fast -p stolid -p stolid-testkit --lib --bins --tests
	@scripts/clean-test-dbs.sh

## compose-test: docker-compose.yml run unchanged as a user runs it, with a real Docker engine (installed and
## started when none answers; base images pulled, or built as local stand-ins where no registry answers):
## up --build, a key, the Rust book's pages indexed, a cited chat answer, JSON logs, SIGTERM, down -v
compose-test:
	@scripts/docker/compose-test.sh

## console: rebuild console/dist/app.js from console/src (esbuild + Chart.js); commit the result
console:
	@scripts/console.sh build

## console-check: the browser tests' tools (Node packages, Debian's chromium), and dist/ is current
console-check:
	@scripts/console.sh check

## openapi: write docs/openapi.json, the committed copy of what GET /openapi.json serves (a test keeps it current)
openapi:
	$(CARGO) run --quiet --locked -p stolid-tools --bin openapi > docs/openapi.json

## drop databases left by interrupted test runs
clean-test-dbs:
	@scripts/clean-test-dbs.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

## bench-ingest: index a real corpus (the Rust book's HTML) against the fake model server with a cap; prints figures
bench-ingest: infra
	$(CARGO) run --release --locked -p stolid-tools --bin bench_ingest -- $(BENCH_ARGS)

## bench-fleet: the pipeline run by 1 and 3 processes started together under one cap (requests 120/min,
## tokens 200k/min, none) against a fake provider enforcing one-second buckets; prints 429s, windows, wall/ideal, CPU
bench-fleet: infra
	$(CARGO) build --release --locked -p stolid -p stolid-testkit -p stolid-tools --bins
	target/release/bench_fleet $(BENCH_ARGS)

## bench-api: the sync path on real text (the toolchain's docs at 100k and 1M chunks): search HTTP vs SQL per mode,
## chat and suggest overhead beyond the model at concurrency 1-64, server memory (~30 min)
bench-api: infra
	$(CARGO) build --release --locked -p stolid -p stolid-testkit -p stolid-tools --bins
	target/release/bench_api $(BENCH_ARGS)

## bench-chunk: extraction + chunking MB/s for prose, code, whitespace-free text and nested HTML (linearity check)
bench-chunk:
	$(CARGO) run --release --locked -p stolid-tools --bin bench_chunk -- $(BENCH_ARGS)

## eval: retrieval quality on the labelled questions in eval/ (four books of the toolchain's docs):
## hit@1/5/10 and MRR per search mode, and how often chat cites the answering page
eval: infra
	$(CARGO) build --release --locked -p stolid -p stolid-testkit -p stolid-tools --bins
	target/release/eval $(EVAL_ARGS)

## chaos: replay faults (kill -9, SIGTERM, provider storms, Postgres/S3 outages, poison files, schemathesis)
## against the release binary on loopback; prints a table; exit 1 on any lost, stuck or duplicated document or non-503 5xx
CHAOS_VENV := .local/chaos-venv
chaos: infra
	@want="$$(sha256sum scripts/requirements-chaos.txt | cut -d' ' -f1)"; \
	 if [ "$$(cat $(CHAOS_VENV)/.requirements 2>/dev/null)" != "$$want" ]; then \
	   echo "[chaos] installing schemathesis into $(CHAOS_VENV)"; \
	   python3 -m venv $(CHAOS_VENV) && $(CHAOS_VENV)/bin/pip install -q --disable-pip-version-check -r scripts/requirements-chaos.txt && \
	   echo "$$want" > $(CHAOS_VENV)/.requirements; fi
	$(CARGO) build --release --locked -p stolid -p stolid-testkit -p stolid-tools --bins
	target/release/chaos --schemathesis $(CHAOS_VENV)/bin/st $(CHAOS_ARGS)
