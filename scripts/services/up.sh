#!/usr/bin/env bash
# Starts (or reuses) the local services: `up.sh [redis] [kafka] [postgres]`, by default Redis and
# Kafka (what the indexer needs); the tests add PostgreSQL (the source of `postgres:` backfills).
# `connect` only fetches Kafka Connect and Debezium: a worker runs per connector, started with
# `scripts/services/connect.sh start NAME CONNECTOR.properties` (the Debezium chain test does).
# Qdrant is never started here: it cannot be installed on this machine. Set QDRANT_URL to use one;
# without it the indexer writes to LanceDB (embedded) and the tests use the Qdrant contract server.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(redis kafka)
for service in "${services[@]}"; do
  case "$service" in
    redis|kafka|postgres) bash "$ROOT/scripts/services/$service.sh" start ;;
    connect) bash "$ROOT/scripts/services/connect.sh" install ;;
    *) die "unknown service \"$service\": use redis, kafka, postgres or connect" ;;
  esac
done
if [ -n "${QDRANT_URL:-}" ]; then log "qdrant: using QDRANT_URL=$QDRANT_URL"; else log "qdrant: QDRANT_URL unset; the sink is LanceDB (local) and tests use the Qdrant contract server"; fi
