#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, type-checks, starts (or
# reuses) Redis, Kafka and PostgreSQL, fetches Kafka Connect and Debezium (the change-capture
# test starts its own worker), runs the unit and integration tests, and prints one summary line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
echo "[test] type-check" >&2
npx tsc -p tsconfig.json --noEmit
bash scripts/services/up.sh redis kafka postgres connect
mkdir -p .cache
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.cache/test-results.json "$@" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(".cache/test-results.json", "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
' || true
exit $status
