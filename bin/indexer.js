#!/usr/bin/env node
// The `indexer` command of the published package (built with `npm run build`).
import '../dist/src/cli/main.js';
