#!/usr/bin/env bash
# Installs the Node dependencies when they are missing or older than package-lock.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v node >/dev/null || { echo "Node.js 20.18+ is required (https://nodejs.org)"; exit 1; }
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # Not `npm ci`: the registry mirror on our build machines lacks some other-platform optional
  # packages (e.g. LanceDB's macOS build), so npm cannot record them in the lock and `npm ci`
  # refuses it. `npm install` installs exactly the locked versions all the same.
  echo "[install] npm install (locked versions)" >&2
  npm install --no-audit --no-fund --loglevel=error
fi
