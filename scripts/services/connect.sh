#!/usr/bin/env bash
# Local Kafka Connect (standalone) with the Debezium PostgreSQL connector, for the change-capture
# chain PostgreSQL -> Debezium -> Kafka -> indexer:
#   connect.sh install                        fetch the jars (first run only)
#   connect.sh start NAME CONNECTOR.properties  start a worker running that connector; waits until
#                                             its task runs and prints the worker's REST URL
#   connect.sh stop NAME | status NAME | stop-all
# The jars come from Maven Central (scripts/services/connect/pom.xml), cached in .cache/connect/libs.
# Each worker NAME has its own run directory (.cache/connect/runs/NAME: worker.properties, offsets,
# connect.log) and REST port (CONNECT_REST_PORT, else the first free one from 18083), so tests can
# run their own. Converters: JSON, with schemas unless CONNECT_SCHEMAS_ENABLE=false.
# Needs Kafka at KAFKA_BROKERS and PostgreSQL with wal_level=logical (scripts/services/postgres.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
HERE="$ROOT/scripts/services/connect"
DIR="$CACHE/connect"; LIBS="$DIR/libs"; RUNS="$DIR/runs"
HEAP="${CONNECT_LOCAL_HEAP:-384m}"
SCHEMAS="${CONNECT_SCHEMAS_ENABLE:-true}"

install() { maven_jars "$HERE/pom.xml" "$LIBS" "Kafka Connect and the Debezium connector"; }

valid_name() { [[ "${1:-}" =~ ^[A-Za-z0-9._-]+$ ]] || die "connect: NAME must be letters, digits, '.', '_' or '-' (got \"${1:-}\")"; }
alive() { [ -f "$1/worker.pid" ] && kill -0 "$(cat "$1/worker.pid")" 2>/dev/null; }
free_port() {
  local port
  for ((port = 18083; port < 18183; port++)); do port_open 127.0.0.1 "$port" || { echo "$port"; return 0; }; done
  die "connect: no free port in 18083-18182 for the REST API (set CONNECT_REST_PORT)"
}

# The connector's and its tasks' states from the REST API, e.g. "RUNNING RUNNING" (empty while none).
states() {
  local body; body="$(curl -fsS --max-time 2 "$1/connectors/$2/status" 2>/dev/null)" || return 0
  node -e 'const j=JSON.parse(process.argv[1]);console.log([j.connector.state,...j.tasks.map(t=>t.state)].join(" "))' "$body" 2>/dev/null || true
}

start() {
  local name="${1:-}" connector="${2:-}"
  valid_name "$name"
  [ -f "$connector" ] || die "connect: the connector properties file \"$connector\" does not exist (usage: connect.sh start NAME CONNECTOR.properties)"
  local connector_name; connector_name="$(sed -n 's/^name=//p' "$connector" | head -n 1)"
  [ -n "$connector_name" ] || die "connect: $connector has no name= line"
  local run="$RUNS/$name"
  if alive "$run"; then log "connect: worker $name already running"; cat "$run/url"; return 0; fi
  install
  rm -rf "$run"; mkdir -p "$run"
  local port="${CONNECT_REST_PORT:-$(free_port)}" url
  url="http://127.0.0.1:$port"
  sed -e "s|@BROKERS@|$KAFKA_BROKERS|" -e "s|@SCHEMAS@|$SCHEMAS|g" -e "s|@RUN@|$run|" -e "s|@PORT@|$port|" \
    "$HERE/worker.properties.template" > "$run/worker.properties"
  cp "$connector" "$run/connector.properties"
  log "connect: starting worker $name (connector $connector_name) on $url"
  nohup java -Xms64m -Xmx"$HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dconnect.logs.dir="$run" -Dlog4j2.configurationFile="$HERE/log4j2.properties" -cp "$LIBS/*" \
    org.apache.kafka.connect.cli.ConnectStandalone "$run/worker.properties" "$run/connector.properties" > "$run/connect.out" 2>&1 &
  echo $! > "$run/worker.pid"
  echo "$url" > "$run/url"
  local i state=""
  for ((i = 0; i < 480; i++)); do
    alive "$run" || die "connect: worker $name exited (logs: $run/connect.log, $run/connect.out)"
    state="$(states "$url" "$connector_name" || true)"
    case "$state" in
      *FAILED*) die "connect: connector $connector_name failed: $(curl -fsS "$url/connectors/$connector_name/status" | head -c 2000) (logs: $run/connect.log)" ;;
      RUNNING\ RUNNING*) log "connect: connector $connector_name running"; echo "$url"; return 0 ;;
    esac
    sleep 0.25
  done
  die "connect: connector $connector_name not running within 120 s (state: ${state:-none}; logs: $run/connect.log)"
}

stop() {
  local name="${1:-}"; valid_name "$name"
  local run="$RUNS/$name"
  [ -d "$run" ] || return 0
  if alive "$run"; then
    local pid; pid="$(cat "$run/worker.pid")"
    kill "$pid" 2>/dev/null || true
    wait_for "! kill -0 $pid" "connect worker $name to exit" 30 || kill -9 "$pid" 2>/dev/null || true
    log "connect: worker $name stopped"
  fi
  rm -rf "$run"
}

stop_all() {
  local run
  for run in "$RUNS"/*/; do [ -d "$run" ] && stop "$(basename "$run")"; done
  return 0
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" "${3:-}" ;;
  stop) stop "${2:-}" ;;
  stop-all) stop_all ;;
  status) valid_name "${2:-}"; alive "$RUNS/$2" && echo "connect worker $2 up at $(cat "$RUNS/$2/url")" || { echo "connect worker $2 down"; exit 1; } ;;
  *) die "usage: connect.sh install | start NAME CONNECTOR.properties | stop NAME | status NAME | stop-all" ;;
esac
