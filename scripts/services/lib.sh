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
# Another install in progress holds dpkg's lock: wait for it (APT_LOCK_TIMEOUT seconds, default
# 600) rather than fail at once, then say what failed.
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    die "$* is not installed and this user cannot apt-get install it. Install it (Debian: apt-get install $*) or point the indexer at an existing service."
  fi
  local wait="${APT_LOCK_TIMEOUT:-600}" out; out="$(mktemp "$CACHE/apt-install.XXXXXX.log")"
  local apt=(apt-get -o "DPkg::Lock::Timeout=$wait" -o "Acquire::Retries=3")
  log "installing $* from Debian's packages (waiting up to ${wait} s for another install to finish)"
  if DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq "$@" >"$out" 2>&1; then rm -f "$out"; return 0; fi
  apt_lock_held "$out" "$wait" "$*"
  # Most often the package lists are missing or stale (a fresh image): refresh them once.
  "${apt[@]}" update -qq >>"$out" 2>&1 || true
  if DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq "$@" >>"$out" 2>&1; then rm -f "$out"; return 0; fi
  apt_lock_held "$out" "$wait" "$*"
  tail -n 15 "$out" >&2
  die "apt-get could not install $* (output above, whole in $out). Install it yourself (apt-get install $*) or point the indexer at an existing service."
}

# Stops with a clear message when apt-get failed because another install kept dpkg's lock.
apt_lock_held() {
  if grep -q "Could not get lock\|Unable to acquire the dpkg frontend lock\|Could not get lock /var/lib/dpkg" "$1"; then
    die "apt-get could not install $3: another package install held dpkg's lock for more than $2 s. Let it finish (or raise APT_LOCK_TIMEOUT), then run this again."
  fi
}

# Java, and the runtime jars of a pom.xml ($1) copied from Maven Central into $2, fetched again only
# when the pom changed; $3 names them in messages.
maven_jars() {
  local pom="$1" libs="$2" what="$3"
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  if [ -f "$libs/.complete" ] && [ "$libs/.complete" -nt "$pom" ]; then return 0; fi
  command -v mvn >/dev/null || apt_install maven
  log "fetching $what from Maven Central (first run only)"
  rm -rf "$libs"
  # jansi.noreset: Maven 3.8's -q still prints bare ANSI reset codes without it.
  MAVEN_OPTS="${MAVEN_OPTS:-} -Djansi.noreset=true" mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" \
    || die "could not fetch $what with Maven (see the output above)"
  touch "$libs/.complete"
}

# host and port from a redis:// URL or a host:port list (first entry).
url_host() { local s="${1#*://}"; s="${s#*@}"; s="${s%%/*}"; s="${s%%,*}"; printf '%s' "${s%:*}"; }
url_port() { local s="${1#*://}"; s="${s#*@}"; s="${s%%/*}"; s="${s%%,*}"; printf '%s' "${s##*:}"; }
