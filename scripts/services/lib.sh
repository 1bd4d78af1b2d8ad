# Shared helpers for the local service scripts. Sourced, not run.
# Everything the local services keep (jars, data, logs, pid files) lives under .cache/ (git-ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$ROOT/.cache"
mkdir -p "$CACHE"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# True when something accepts TCP connections on host:port.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Waits up to $3 seconds for "$1" (a shell command) to succeed; $2 names what we wait for.
wait_for() {
  local cmd="$1" what="$2" seconds="${3:-60}" i
  for ((i = 0; i < seconds * 4; i++)); do
    if eval "$cmd" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  return 1
}

# apt-get install, run once per machine; root is needed (CI and the dev machines run as root).
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    die "$* is not installed and this user cannot apt-get install it. Install it (Debian: apt-get install $*) or point the indexer at an existing service."
  fi
  log "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  }
}

# host and port from a redis:// URL or a host:port list (first entry).
url_host() { local s="${1#*://}"; s="${s#*@}"; s="${s%%/*}"; s="${s%%,*}"; printf '%s' "${s%:*}"; }
url_port() { local s="${1#*://}"; s="${s#*@}"; s="${s%%/*}"; s="${s%%,*}"; printf '%s' "${s##*:}"; }
