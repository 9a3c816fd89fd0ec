# Helpers the setup scripts share: `source scripts/lib.sh` after setting LOG_PREFIX.
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  [ -n "${APT_UPDATED:-}" ] || { as_root apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
log() { echo "[${LOG_PREFIX:-setup}] $*" >&2; }
