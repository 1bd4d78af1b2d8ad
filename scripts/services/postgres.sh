#!/usr/bin/env bash
# Local PostgreSQL, for the `postgres:` backfill source and its tests: `postgres.sh start|stop|status`.
# Reuses whatever already answers at POSTGRES_URL; otherwise installs Debian's postgresql and
# starts a disposable cluster on 127.0.0.1 (a fresh, empty database per start) with trust auth
# for loopback only. The server refuses to run as root, so as root it runs as the `postgres` user.
# wal_level=logical: Debezium (scripts/services/connect.sh) reads the changes through a logical
# replication slot. A local cluster started before that setting existed is restarted once with it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
POSTGRES_URL="${POSTGRES_URL:-postgres://postgres@127.0.0.1:54320/postgres}"
HOST="$(url_host "$POSTGRES_URL")"; PORT="$(url_port "$POSTGRES_URL")"
DIR="$CACHE/postgres"; DATA="$DIR/data"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
ready() { local bin; bin="$(bindir)"; [ -n "$bin" ] && "$bin/pg_isready" -q -h "$HOST" -p "$PORT"; }
# Loopback only; fsync off: the local database is disposable and the tests should not wait on disks.
server_options() {
  printf '%s' "-c listen_addresses=$HOST -c port=$PORT -c unix_socket_directories=$DIR -c fsync=off -c max_connections=200 -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20"
}
wal_level() { "$(bindir)/psql" -h "$HOST" -p "$PORT" -U postgres -d postgres -Atc 'SHOW wal_level' 2>/dev/null; }

# A cluster of this script's, running without logical decoding (it predates the setting): restarted
# with it, since wal_level takes effect only at a start. Someone else's server is only warned about.
ensure_logical() {
  [ "$(wal_level)" = logical ] && return 0
  if [ -f "$DATA/postmaster.pid" ]; then
    log "postgres: restarting the local server with wal_level=logical (for Debezium)"
    as_owner "$(bindir)/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 -m fast -o "$(server_options)" restart >/dev/null \
      || die "postgres: the restart with wal_level=logical failed (log: $DIR/postgres.log)"
    wait_for ready "postgres" 30 || die "postgres: the server did not answer on $HOST:$PORT after its restart (log: $DIR/postgres.log)"
  else
    log "postgres: WARNING: the server at $HOST:$PORT has wal_level=$(wal_level): Debezium needs wal_level=logical (then restart it)"
  fi
}

start() {
  if port_open "$HOST" "$PORT"; then
    wait_for ready "postgres" 20 || die "postgres: something listens on $HOST:$PORT but does not answer as PostgreSQL"
    ensure_logical
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
  as_owner "$bin/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 -o "$(server_options)" start >/dev/null \
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
