#!/usr/bin/env bash
# Local Apache Kafka (single-node KRaft on 127.0.0.1): `kafka.sh install|start|stop|status`.
# The broker jars come from Maven Central (scripts/services/kafka/pom.xml) and are cached in
# .cache/kafka/libs, so only the first start downloads. Every start formats a fresh log directory:
# the local broker is disposable and a run never sees topics left by an earlier one.
# Reuses whatever already answers at KAFKA_BROKERS when that is not the local default.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
HOST="$(url_host "$KAFKA_BROKERS")"; PORT="$(url_port "$KAFKA_BROKERS")"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
HERE="$ROOT/scripts/services/kafka"
# KAFKA_LOCAL_DIR: where this broker keeps its data, logs and pid (a second, private broker for a
# test: another port and directory); the jars are shared.
DIR="${KAFKA_LOCAL_DIR:-$CACHE/kafka}"; LIBS="$CACHE/kafka/libs"; DATA="$DIR/data"; PIDFILE="$DIR/broker.pid"
mkdir -p "$DIR"
HEAP="${KAFKA_LOCAL_HEAP:-512m}"
# Kafka 4 logs through log4j2; log4j 1 settings (-Dlog4j.configuration) are ignored.
LOGGING=(-Dkafka.logs.dir="$DIR" -Dlog4j2.configurationFile="$HERE/log4j2.yaml")

install() { maven_jars "$HERE/pom.xml" "$LIBS" "the Kafka broker jars"; }

ready() {
  # A broker that accepts connections may still be electing its controller; ask it for metadata.
  port_open "$HOST" "$PORT" && node "$ROOT/scripts/services/kafka-ready.mjs" "$HOST:$PORT"
}

# A fresh broker creates __consumer_offsets on the first group request and then refuses group
# requests (NOT_COORDINATOR) until its coordinator has loaded every partition; waited out here once.
groups_ready() { node "$ROOT/scripts/services/kafka-ready.mjs" "$HOST:$PORT" --groups; }

start() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && ready; then
    log "kafka: local broker already running on $HOST:$PORT"; return 0
  fi
  if port_open "$HOST" "$PORT"; then
    wait_for ready "kafka" 30 || die "kafka: something listens on $HOST:$PORT but does not answer as a Kafka broker"
    log "kafka: reusing the broker at $HOST:$PORT"; return 0
  fi
  case "$HOST" in 127.0.0.1|localhost) ;; *) die "kafka: nothing answers at $KAFKA_BROKERS (KAFKA_BROKERS); start it or unset KAFKA_BROKERS to use a local one";; esac
  install
  rm -rf "$DATA"; mkdir -p "$DATA"
  sed -e "s|@DATA@|$DATA|" -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
    "$HERE/server.properties.template" > "$DIR/server.properties"
  local cluster_id; cluster_id="$(java "${LOGGING[@]}" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
  # The quorum is the static controller.quorum.voters of server.properties, so format needs no --standalone.
  java "${LOGGING[@]}" -cp "$LIBS/*" \
    kafka.tools.StorageTool format -t "$cluster_id" -c "$DIR/server.properties" >/dev/null \
    || die "kafka: formatting the log directory failed"
  log "kafka: starting the local broker on $HOST:$PORT"
  nohup java -Xms128m -Xmx"$HEAP" -XX:+UseG1GC -Djava.awt.headless=true "${LOGGING[@]}" \
    -cp "$LIBS/*" kafka.Kafka "$DIR/server.properties" > "$DIR/broker.out" 2>&1 &
  echo $! > "$PIDFILE"
  wait_for ready "kafka" 90 || die "kafka: the broker did not become ready within 90 s (logs: $DIR/broker.log, $DIR/broker.out)"
  # KAFKA_WAIT_FOR_GROUPS=0 returns as soon as the broker answers metadata, as a brand-new cluster
  # does: its group coordinator still loading (a test of how a client meets that).
  [ "${KAFKA_WAIT_FOR_GROUPS:-1}" = 0 ] || wait_for groups_ready "kafka group coordinator" 60 || die "kafka: the group coordinator did not come up within 60 s (logs: $DIR/broker.log)"
  log "kafka: ready on $HOST:$PORT"
}

stop() {
  [ -f "$PIDFILE" ] || return 0
  local pid; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait_for "! kill -0 $pid" "kafka to exit" 30 || kill -9 "$pid" 2>/dev/null || true
    log "kafka: stopped"
  fi
  rm -f "$PIDFILE"; rm -rf "$DATA"
}

case "${1:-start}" in
  install) install ;; start) start ;; stop) stop ;;
  status) ready && echo "kafka up at $HOST:$PORT" || { echo "kafka down"; exit 1; } ;;
  *) die "usage: kafka.sh install|start|stop|status" ;;
esac
