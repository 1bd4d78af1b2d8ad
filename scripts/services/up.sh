#!/usr/bin/env bash
# Starts (or reuses) every service the indexer needs for local runs and tests: Redis, Kafka, and
# PostgreSQL (the source of `postgres:` backfills).
# Qdrant is never started here: it cannot be installed on this machine. Set QDRANT_URL to use one;
# without it the indexer writes to LanceDB (embedded) and the tests use the Qdrant contract server.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/scripts/services/redis.sh" start
bash "$ROOT/scripts/services/kafka.sh" start
bash "$ROOT/scripts/services/postgres.sh" start
if [ -n "${QDRANT_URL:-}" ]; then log "qdrant: using QDRANT_URL=$QDRANT_URL"; else log "qdrant: QDRANT_URL unset; the sink is LanceDB (local) and tests use the Qdrant contract server"; fi
