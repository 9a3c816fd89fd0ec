#!/usr/bin/env bash
# The base images stolid's Dockerfile and docker-compose.yml name, made present
# locally: each missing one is pulled from its registry, and when no registry
# answers (an air-gapped machine, or this project's CI, which reaches package
# registries but no container registry) a local stand-in is built and tagged
# exactly as the files name it:
#
#   debian:bookworm-slim          debootstrap --variant=minbase, docker import
#   python:3.11-slim              Debian's python3 (3.11) + pip, as python/pip
#   rust:1.95-bookworm            the host's rustup toolchain 1.95.0, official ENV
#   pgvector/pgvector:0.8.0-pg15  Debian's postgresql-15 + pgvector 0.8.0 built by
#                                 scripts/install-pgvector.sh
#   motoserver/moto:5.1.0         moto[server]==5.1.0 + boto3, moto_server entrypoint
#
# How the stand-ins differ from the real images: docs/compose.md.
#
# Usage: scripts/docker/base-images.sh [--force] [--no-pull] [--only IMAGE]... [--list]
#   --force        rebuild stand-ins for images that already exist (default: skip them)
#   --no-pull      build stand-ins without trying the registry first
#   --only IMAGE   only this image (repeatable); a stand-in's base must exist or be
#                  selected too. IMAGE is the full tag or a short name:
#                  debian, python, rust, pgvector, moto
#   --list         print the image names and whether each exists, then exit
# Environment:
#   STANDIN_WORK     scratch directory (default: ${TMPDIR:-/tmp}/stolid-standins)
#   STANDIN_CPUS     CPU quota for stand-in builds, in CPUs (default 1)
#   RUST_TOOLCHAIN   host toolchain to copy (default 1.95.0-x86_64-unknown-linux-gnu)
#   HOST_RUSTUP_HOME / HOST_CARGO_HOME   default ~/.rustup, ~/.cargo
#
# Every stand-in gets the host's CA bundle (/etc/ssl/certs/ca-certificates.crt) and
# the host's extra CAs (/usr/local/share/ca-certificates/*.crt), so TLS through
# an egress proxy works as on the host, also after a later
# `apt-get install ca-certificates` (update-ca-certificates keeps the extra CAs).
# Every stand-in carries the label org.stolid.standin=1.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${STANDIN_WORK:-${TMPDIR:-/tmp}/stolid-standins}"
CPUS="${STANDIN_CPUS:-1}"
PGVECTOR_SCRIPT="$(cd "$HERE/.." && pwd)/install-pgvector.sh"
REPO="$(cd "$HERE/../.." && pwd)"
RUST_VERSION=1.95.0
RUST_TOOLCHAIN="${RUST_TOOLCHAIN:-$RUST_VERSION-x86_64-unknown-linux-gnu}"
HOST_RUSTUP_HOME="${HOST_RUSTUP_HOME:-${RUSTUP_HOME:-$HOME/.rustup}}"
HOST_CARGO_HOME="${HOST_CARGO_HOME:-${CARGO_HOME:-$HOME/.cargo}}"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
HOST_EXTRA_CAS=/usr/local/share/ca-certificates
SOURCES=/etc/apt/sources.list.d/debian.sources
SUITE=bookworm
MOTO_VERSION=5.1.0

IMG_DEBIAN=debian:bookworm-slim
IMG_PYTHON=python:3.11-slim
IMG_RUST=rust:1.95-bookworm
IMG_PG=pgvector/pgvector:0.8.0-pg15
IMG_MOTO=motoserver/moto:$MOTO_VERSION
ALL=("$IMG_DEBIAN" "$IMG_PYTHON" "$IMG_RUST" "$IMG_PG" "$IMG_MOTO")
LABEL="org.stolid.standin=1"
export DOCKER_BUILDKIT=0 # the classic builder: no frontend image to pull, local FROM only

log() { printf '[standin %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
exists() { docker image inspect "$1" >/dev/null 2>&1; }
short() {
  case "$1" in
    debian | "$IMG_DEBIAN") echo "$IMG_DEBIAN" ;;
    python | "$IMG_PYTHON") echo "$IMG_PYTHON" ;;
    rust | "$IMG_RUST") echo "$IMG_RUST" ;;
    pgvector | postgres | "$IMG_PG") echo "$IMG_PG" ;;
    moto | "$IMG_MOTO") echo "$IMG_MOTO" ;;
    *) die "unknown image: $1 (one of: debian python rust pgvector moto)" ;;
  esac
}

FORCE=0 PULL=1 ONLY=()
while (($#)); do
  case "$1" in
    --force) FORCE=1 ;;
    --no-pull) PULL=0 ;;
    --only) [ $# -ge 2 ] || die "--only needs an image"; x="$(short "$2")" || exit 1; ONLY+=("$x"); shift ;;
    --list)
      for i in "${ALL[@]}"; do
        if exists "$i"; then
          printf '%-30s present  standin=%s\n' "$i" "$(docker image inspect -f '{{index .Config.Labels "org.stolid.standin"}}' "$i")"
        else printf '%-30s missing\n' "$i"; fi
      done
      exit 0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
selected() { ((${#ONLY[@]} == 0)) && return 0; local i; for i in "${ONLY[@]}"; do [ "$i" = "$1" ] && return 0; done; return 1; }

command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"
[ -r "$HOST_CA" ] || die "missing $HOST_CA"
mkdir -p "$WORK"

# docker build, classic builder, CPU-capped; context is a directory with a Dockerfile.
dbuild() { # tag ctxdir
  docker build --pull=false --rm --force-rm --cpu-period=100000 --cpu-quota="$((CPUS * 100000))" \
    --label "$LABEL" -t "$1" "$2"
}
# Puts the host's CA bundle and extra CAs into a build context.
add_cas() {
  cp "$HOST_CA" "$1/ca-certificates.crt"
  mkdir -p "$1/extra-cas"
  if compgen -G "$HOST_EXTRA_CAS/*.crt" >/dev/null; then cp "$HOST_EXTRA_CAS"/*.crt "$1/extra-cas/"; fi
}
fresh_ctx() { rm -rf "$WORK/ctx-$1"; mkdir -p "$WORK/ctx-$1"; echo "$WORK/ctx-$1"; }

# ---------------------------------------------------------------------------
build_debian() {
  if ! command -v debootstrap >/dev/null; then
    log "installing Debian's debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
      die "debootstrap not installed and apt-get could not install it"
  fi
  [ -r "$SOURCES" ] || die "missing $SOURCES"
  local mirror rootfs="$WORK/rootfs" cache="$WORK/debootstrap-cache"
  mirror="$(awk '/^URIs:/ { print $2; exit }' "$SOURCES")"
  [ -n "$mirror" ] || die "no URIs: line in $SOURCES"
  mkdir -p "$cache"
  if mountpoint -q "$rootfs/proc" 2>/dev/null; then umount "$rootfs/proc"; fi
  rm -rf "$rootfs"
  log "debootstrap --variant=minbase $SUITE from $mirror"
  nice -n 10 debootstrap --variant=minbase --cache-dir="$cache" "$SUITE" "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }

  # apt: the host's sources (the same mirror and suites as the official image).
  rm -f "$rootfs/etc/apt/sources.list"
  install -m 0644 "$SOURCES" "$rootfs/etc/apt/sources.list.d/debian.sources"
  # What debuerreotype does for the official images (apt/dpkg minimisation, slim).
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
  echo 'force-unsafe-io' >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"; chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
  # CAs: the host's bundle, and its extra CAs where update-ca-certificates finds them.
  install -d "$rootfs/etc/ssl/certs" "$rootfs/usr/local/share/ca-certificates"
  install -m 0644 "$HOST_CA" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  if compgen -G "$HOST_EXTRA_CAS/*.crt" >/dev/null; then install -m 0644 "$HOST_EXTRA_CAS"/*.crt "$rootfs/usr/local/share/ca-certificates/"; fi
  # Slim: drop docs (but copyright), man pages, translations; caches and logs.
  find "$rootfs/usr/share/doc" -mindepth 1 \( -type f -o -type l \) ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,info,groff,linda,locale}/* "$rootfs"/usr/share/lintian/overrides/*
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old "$rootfs"/tmp/* "$rootfs"/var/tmp/*
  find "$rootfs/var/log" -type f -delete
  rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
  : >"$rootfs/etc/machine-id"
  log "docker import -> $IMG_DEBIAN"
  tar --numeric-owner --xattrs -C "$rootfs" -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      --change "LABEL $LABEL" \
      --message "stand-in: debootstrap --variant=minbase $SUITE" - "$IMG_DEBIAN" >/dev/null
  rm -rf "$rootfs"
}

# ---------------------------------------------------------------------------
build_python() {
  local ctx; ctx="$(fresh_ctx python)"; add_cas "$ctx"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
ENV LANG=C.UTF-8
# Debian's python3 (3.11) with pip, venv; python/pip on PATH (/usr/bin). PEP 668's
# marker is removed so `pip install` works as in the official image (it installs
# into /usr/local, as root).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3 python3-pip python3-venv python-is-python3 \
        ca-certificates netbase tzdata; \
    rm -f /usr/lib/python3*/EXTERNALLY-MANAGED; \
    rm -rf /var/lib/apt/lists/*
COPY extra-cas/ /usr/local/share/ca-certificates/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN set -eux; python --version; pip --version; python -c 'import ssl, venv, sqlite3'
CMD ["python3"]
EOF
  dbuild "$IMG_PYTHON" "$ctx"
  rm -rf "$ctx"
}

# ---------------------------------------------------------------------------
build_rust() {
  local src ctx tc
  src="$(readlink -f "$HOST_RUSTUP_HOME/toolchains/$RUST_TOOLCHAIN")" || true
  [ -x "$src/bin/rustc" ] || die "no host toolchain $RUST_TOOLCHAIN under $HOST_RUSTUP_HOME/toolchains (see rustup toolchain list)"
  "$src/bin/rustc" --version | grep -q "^rustc $RUST_VERSION " || die "$src is not rustc $RUST_VERSION"
  [ -x "$HOST_CARGO_HOME/bin/rustup" ] || die "no rustup in $HOST_CARGO_HOME/bin"
  ctx="$(fresh_ctx rust)"; add_cas "$ctx"
  tc="$ctx/rustup/toolchains/$RUST_TOOLCHAIN"
  mkdir -p "$tc" "$ctx/cargo/bin"
  log "copying $src (without the rust-docs HTML) into the build context"
  tar -C "$src" --exclude=./share/doc/rust/html -cf - . | tar -C "$tc" -xf -
  # The official image uses `--profile minimal` (no docs): mark rust-docs as not installed.
  rm -f "$tc"/lib/rustlib/manifest-rust-docs-*
  sed -i '/^rust-docs-/d' "$tc/lib/rustlib/components"
  sed -i '/^\[\[components\]\]$/{N;/\npkg = "rust-docs"$/{N;N;N;d}}' "$tc/lib/rustlib/multirust-config.toml"
  cat >"$ctx/rustup/settings.toml" <<EOF
version = "12"
default_toolchain = "$RUST_TOOLCHAIN"
profile = "minimal"

[overrides]
EOF
  # rustup and its proxies (cargo, rustc, ... -> rustup), as rustup-init installs them.
  cp -a "$HOST_CARGO_HOME/bin/." "$ctx/cargo/bin/"
  sed 's#\$HOME/\.cargo/bin#/usr/local/cargo/bin#' "$HOST_CARGO_HOME/env" >"$ctx/cargo/env" 2>/dev/null || true
  chmod -R a+w "$ctx/rustup" "$ctx/cargo" # the official image's `chmod -R a+w $RUSTUP_HOME $CARGO_HOME`
  cat >"$ctx/Dockerfile" <<EOF
FROM debian:bookworm-slim
# A subset of buildpack-deps:bookworm (the official image's base): C/C++ toolchain,
# pkg-config, CA certificates, curl, git, OpenSSL headers.
RUN set -eux; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends ca-certificates curl git gcc g++ libc6-dev make perl pkg-config \\
        libssl-dev xz-utils procps; \\
    rm -rf /var/lib/apt/lists/*
COPY extra-cas/ /usr/local/share/ca-certificates/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV RUSTUP_HOME=/usr/local/rustup \\
    CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:\$PATH \\
    RUST_VERSION=$RUST_VERSION
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
# Only the top directories change mode here (no copy-up of the toolchain's files).
RUN set -eux; mkdir -p "\$RUSTUP_HOME/update-hashes"; \\
    chmod a+w "\$RUSTUP_HOME" "\$CARGO_HOME" "\$RUSTUP_HOME/update-hashes"; \\
    rustup --version; cargo --version; rustc --version; rustup component list --installed
EOF
  dbuild "$IMG_RUST" "$ctx"
  rm -rf "$ctx"
}

# ---------------------------------------------------------------------------
build_pgvector() {
  [ -r "$PGVECTOR_SCRIPT" ] || die "missing $PGVECTOR_SCRIPT"
  local ctx; ctx="$(fresh_ctx pgvector)"; add_cas "$ctx"
  cp "$PGVECTOR_SCRIPT" "$ctx/install-pgvector.sh"
  cat >"$ctx/docker-entrypoint.sh" <<'EOF'
#!/usr/bin/env bash
# Stand-in for the postgres image's entrypoint: on first start (empty $PGDATA)
# initdb with POSTGRES_USER/POSTGRES_PASSWORD, create POSTGRES_DB, run
# /docker-entrypoint-initdb.d/*.{sh,sql,sql.gz}; then postgres in the foreground,
# listening on all addresses (listen_addresses='*' is in the sample config).
set -Eeo pipefail
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chmod 00700 "$PGDATA"; chmod 03775 /var/run/postgresql
  find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  export POSTGRES_USER="${POSTGRES_USER:-postgres}"
  export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
  auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
    echo >&2 'error: database is uninitialized and POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)'
    exit 1
  fi
  # shellcheck disable=SC2086
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") ${POSTGRES_INITDB_ARGS:-}
  else
    initdb --username="$POSTGRES_USER" ${POSTGRES_INITDB_ARGS:-}
  fi
  printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -p ${PGPORT:-5432}" start
  export PGUSER="$POSTGRES_USER" PGPASSWORD="${POSTGRES_PASSWORD:-}"
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "running $f"; if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
      *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) echo "running $f"; gunzip -c "$f" | psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname "$POSTGRES_DB" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
  echo 'PostgreSQL init process complete; ready for start up.'
fi
exec "$@"
EOF
  chmod 0755 "$ctx/docker-entrypoint.sh"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
# As the official postgres image: uid/gid 999, en_US.UTF-8, no Debian cluster.
RUN set -eux; \
    groupadd -r postgres --gid=999; \
    useradd -r -g postgres --uid=999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres; \
    mkdir -p /var/lib/postgresql; chown -R postgres:postgres /var/lib/postgresql
COPY extra-cas/ /usr/local/share/ca-certificates/
ENV PG_MAJOR=15
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
RUN set -eux; \
    sed -ri '/\/usr\/share\/locale/d' /etc/dpkg/dpkg.cfg.d/docker; \
    apt-get update; \
    apt-get install -y --no-install-recommends locales ca-certificates; \
    echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen; locale-gen; locale -a | grep -x en_US.utf8; \
    mkdir -p /etc/postgresql-common/createcluster.d; \
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/00-no-main.conf; \
    apt-get install -y --no-install-recommends postgresql-15 postgresql-client-15; \
    sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" /usr/share/postgresql/15/postgresql.conf.sample; \
    grep -F "listen_addresses = '*'" /usr/share/postgresql/15/postgresql.conf.sample; \
    mkdir -p /var/run/postgresql; chown -R postgres:postgres /var/run/postgresql; chmod 03775 /var/run/postgresql; \
    rm -rf /var/lib/apt/lists/*
ENV LANG=en_US.utf8
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY install-pgvector.sh /usr/local/src/install-pgvector.sh
# pgvector 0.8 from Debian's (trixie) source package with the project's script;
# its build dependencies (gcc, postgresql-server-dev-15, clang/llvm) are purged again.
RUN set -eux; \
    savedAptMark="$(apt-mark showmanual)"; \
    bash /usr/local/src/install-pgvector.sh; \
    apt-mark auto '.*' >/dev/null; apt-mark manual $savedAptMark >/dev/null; \
    apt-get purge -y --auto-remove -o APT::AutoRemove::RecommendsImportant=false; \
    rm -rf /var/lib/apt/lists/*; \
    grep -q "default_version = '0.8.0'" /usr/share/postgresql/15/extension/vector.control; \
    test -f /usr/lib/postgresql/15/lib/vector.so; \
    pg_isready --version; postgres --version
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir -p /docker-entrypoint-initdb.d "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 1777 "$PGDATA"
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
EOF
  dbuild "$IMG_PG" "$ctx"
  rm -rf "$ctx"
}

# ---------------------------------------------------------------------------
build_moto() {
  local ctx; ctx="$(fresh_ctx moto)"
  cat >"$ctx/Dockerfile" <<EOF
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1
WORKDIR /moto/
RUN set -eux; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends curl; \\
    rm -rf /var/lib/apt/lists/*; \\
    pip --no-cache-dir install 'moto[server]==$MOTO_VERSION' boto3; \\
    python -c 'import moto, boto3, flask; print("moto", moto.__version__, "boto3", boto3.__version__)'; \\
    test -x /usr/local/bin/moto_server
# The official image's entrypoint; compose's command adds -H 0.0.0.0 -p 4566.
ENTRYPOINT ["/usr/local/bin/moto_server", "-H", "0.0.0.0"]
EXPOSE 5000
EOF
  dbuild "$IMG_MOTO" "$ctx"
  rm -rf "$ctx"
}

# ---------------------------------------------------------------------------
declare -A BUILDER=(
  ["$IMG_DEBIAN"]=build_debian ["$IMG_PYTHON"]=build_python ["$IMG_RUST"]=build_rust
  ["$IMG_PG"]=build_pgvector ["$IMG_MOTO"]=build_moto
)
declare -A BASE=(
  ["$IMG_PYTHON"]="$IMG_DEBIAN" ["$IMG_RUST"]="$IMG_DEBIAN" ["$IMG_PG"]="$IMG_DEBIAN" ["$IMG_MOTO"]="$IMG_PYTHON"
)
# The images the project's files name must be the ones this script can provide.
named="$( (sed -n 's/^FROM \([^ ]*\).*/\1/p' "$REPO/Dockerfile"; sed -n 's/^ *image: *//p' "$REPO/docker-compose.yml") |
  grep -v '^[a-z]*$' | sort -u)" # single words are the Dockerfile's own stages
for i in $named; do
  [[ " ${ALL[*]} " == *" $i "* ]] || die "the project names $i, which this script does not know: add a stand-in for it"
done

RESULTS=()
T0=$(date +%s)
for img in "${ALL[@]}"; do
  selected "$img" || continue
  if exists "$img" && [ "$FORCE" = 0 ]; then
    log "$img exists; skipped (--force rebuilds)"
    RESULTS+=("$img|present|-|$(docker image inspect -f '{{.Size}}' "$img")")
    continue
  fi
  if [ "$PULL" = 1 ] && [ "$FORCE" = 0 ]; then
    t=$(date +%s)
    if timeout 600 docker pull -q "$img" >"$WORK/pull.log" 2>&1; then
      log "pulled $img"
      RESULTS+=("$img|pulled|$(($(date +%s) - t))|$(docker image inspect -f '{{.Size}}' "$img")")
      continue
    fi
    log "cannot pull $img ($(tail -n1 "$WORK/pull.log")); building a stand-in"
  fi
  b="${BASE[$img]:-}"
  if [ -n "$b" ] && ! exists "$b"; then die "$img needs $b: build it first (or drop --only)"; fi
  log "building $img"
  old="$(docker image inspect -f '{{.Id}}' "$img" 2>/dev/null || true)"
  t=$(date +%s)
  # In the background so that `set -e` holds inside the build function (it is off
  # in functions called from a `||` list).
  rc=0; "${BUILDER[$img]}" >"$WORK/build-${img//[\/:]/_}.log" 2>&1 & wait $! || rc=$?
  if [ "$rc" != 0 ]; then
    tail -n 40 "$WORK/build-${img//[\/:]/_}.log" >&2
    die "building $img failed (rc $rc; log: $WORK/build-${img//[\/:]/_}.log)"
  fi
  secs=$(($(date +%s) - t))
  # --force: drop the image this one replaced, unless something still uses it.
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$img")" ] &&
    [ -z "$(docker image inspect -f '{{join .RepoTags ""}}' "$old" 2>/dev/null)" ]; then
    docker rmi "$old" >/dev/null 2>&1 || log "kept the replaced image ${old:7:12} (still in use)"
  fi
  size=$(docker image inspect -f '{{.Size}}' "$img")
  log "built $img in ${secs}s, $((size / 1000000)) MB (log: $WORK/build-${img//[\/:]/_}.log)"
  RESULTS+=("$img|built|$secs|$size")
done
printf '\n%-30s %-8s %8s %9s\n' IMAGE ACTION SECONDS SIZE_MB
for r in "${RESULTS[@]}"; do
  IFS='|' read -r i a s z <<<"$r"
  printf '%-30s %-8s %8s %9s\n' "$i" "$a" "$s" "$((z / 1000000))"
done
printf '%-30s %-8s %8s\n' total "" "$(($(date +%s) - T0))"
