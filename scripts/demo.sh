#!/usr/bin/env bash
# The indexer end to end on its local defaults: installs what is missing, starts Redis and Kafka,
# produces the sample catalog, indexes it into LanceDB with the offline embedder, runs searches.
# Point it elsewhere with the usual settings (KAFKA_BROKERS, REDIS_URL, QDRANT_URL,
# EMBEDDINGS_BASE_URL, EMBEDDINGS_API_KEY, ...): see README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
bash scripts/services/up.sh
export KAFKAJS_NO_PARTITIONER_WARNING=1
exec npx tsx src/cli/main.ts demo --no-services "$@"
