#!/usr/bin/env bash
# Local Redis for the queues: `redis.sh start|stop|status`.
# Reuses whatever already answers at REDIS_URL; otherwise installs Debian's redis-server and starts
# it on 127.0.0.1 with AOF on and an empty data directory (a fresh, empty Redis per start).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
HOST="$(url_host "$REDIS_URL")"; PORT="$(url_port "$REDIS_URL")"
DIR="$CACHE/redis"; PIDFILE="$DIR/redis.pid"

ping() { port_open "$HOST" "$PORT" && { exec 3<>"/dev/tcp/$HOST/$PORT"; printf 'PING\r\n' >&3; timeout 2 head -c 5 <&3 | grep -q PONG; } 2>/dev/null; }

start() {
  if ping; then log "redis: reusing the server at $HOST:$PORT"; return 0; fi
  case "$HOST" in 127.0.0.1|localhost) ;; *) die "redis: nothing answers at $REDIS_URL (REDIS_URL); start it or unset REDIS_URL to use a local one";; esac
  command -v redis-server >/dev/null || apt_install redis-server
  # Emptied per start, as Kafka's log directory is: a Redis holding the state of a Kafka since
  # formatted would make the worker refuse to start or skip events it never indexed.
  rm -rf "$DIR/appendonlydir"
  mkdir -p "$DIR"
  # noeviction: BullMQ must never have its keys evicted (the worker refuses to start otherwise).
  # AOF with an fsync per second, as production should run (see the README's "Redis in
  # production"): a redis-server that crashes and is started again by hand keeps its jobs.
  redis-server --bind 127.0.0.1 --port "$PORT" --daemonize yes --dir "$DIR" --pidfile "$PIDFILE" \
    --logfile "$DIR/redis.log" --save '' --appendonly yes --appendfsync everysec --maxmemory-policy noeviction >/dev/null
  wait_for ping "redis" 20 || die "redis did not answer on $HOST:$PORT within 20 s (log: $DIR/redis.log)"
  log "redis: started on $HOST:$PORT"
}

stop() {
  if [ -f "$PIDFILE" ]; then
    local pid; pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    wait_for "! kill -0 $pid" "redis to exit" 20 || kill -9 "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"; log "redis: stopped"
  fi
}

case "${1:-start}" in
  start) start ;; stop) stop ;; status) ping && echo "redis up at $HOST:$PORT" || { echo "redis down"; exit 1; } ;;
  *) die "usage: redis.sh start|stop|status" ;;
esac
