#!/usr/bin/env bash
# Local PostgreSQL, for the `postgres:` backfill source and its tests: `postgres.sh start|stop|status`.
# Reuses whatever already answers at POSTGRES_URL; otherwise installs Debian's postgresql and
# starts a disposable cluster on 127.0.0.1 (a fresh, empty database per start) with trust auth
# for loopback only. The server refuses to run as root, so as root it runs as the `postgres` user.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
POSTGRES_URL="${POSTGRES_URL:-postgres://postgres@127.0.0.1:54320/postgres}"
HOST="$(url_host "$POSTGRES_URL")"; PORT="$(url_port "$POSTGRES_URL")"
DIR="$CACHE/postgres"; DATA="$DIR/data"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
ready() { local bin; bin="$(bindir)"; [ -n "$bin" ] && "$bin/pg_isready" -q -h "$HOST" -p "$PORT"; }

start() {
  if port_open "$HOST" "$PORT"; then
    wait_for ready "postgres" 20 || die "postgres: something listens on $HOST:$PORT but does not answer as PostgreSQL"
    log "postgres: reusing the server at $HOST:$PORT"; return 0
  fi
  case "$HOST" in 127.0.0.1|localhost) ;; *) die "postgres: nothing answers at $POSTGRES_URL (POSTGRES_URL); start it or unset POSTGRES_URL to use a local one";; esac
  [ -n "$(bindir)" ] && [ -x "$(bindir)/postgres" ] || apt_install postgresql
  local bin; bin="$(bindir)"
  as_owner "$bin/pg_ctl" -D "$DATA" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$DIR"; mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR"
  as_owner "$bin/initdb" -D "$DATA" --username=postgres --auth=trust --encoding=UTF8 --no-sync >/dev/null \
    || die "postgres: initdb failed"
  # Loopback only; fsync off: the local database is disposable and the tests should not wait on disks.
  as_owner "$bin/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 \
    -o "-c listen_addresses=$HOST -c port=$PORT -c unix_socket_directories=$DIR -c fsync=off -c max_connections=200" start >/dev/null \
    || die "postgres: the server did not start (log: $DIR/postgres.log)"
  wait_for ready "postgres" 30 || die "postgres: the server did not answer on $HOST:$PORT within 30 s (log: $DIR/postgres.log)"
  log "postgres: started on $HOST:$PORT"
}

stop() {
  [ -d "$DATA" ] || return 0
  local bin; bin="$(bindir)"
  [ -n "$bin" ] && as_owner "$bin/pg_ctl" -D "$DATA" stop -m fast >/dev/null 2>&1 && log "postgres: stopped" || true
}

case "${1:-start}" in
  start) start ;; stop) stop ;; status) ready && echo "postgres up at $HOST:$PORT" || { echo "postgres down"; exit 1; } ;;
  *) die "usage: postgres.sh start|stop|status" ;;
esac
