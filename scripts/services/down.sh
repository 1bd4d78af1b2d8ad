#!/usr/bin/env bash
# Stops the local services started by up.sh; services that were only reused are left alone.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/scripts/services/connect.sh" stop-all
bash "$ROOT/scripts/services/postgres.sh" stop
bash "$ROOT/scripts/services/kafka.sh" stop
bash "$ROOT/scripts/services/redis.sh" stop
