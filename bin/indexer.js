#!/usr/bin/env node
// The `indexer` command. In a clone of the repository (src/ present, dev dependencies installed)
// it runs the TypeScript sources through tsx, so `npx indexer` works without a build and never
// runs a stale one; the published package and the container image ship only dist/.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
const built = new URL('../dist/src/cli/main.js', import.meta.url);

async function tsxRegistered() {
  try {
    const { register } = await import('tsx/esm/api');
    register();
    return true;
  } catch {
    return false;
  }
}

if (existsSync(source) && (await tsxRegistered())) {
  await import(source.href);
} else if (existsSync(built)) {
  await import(built.href);
} else {
  process.stderr.write('indexer: neither dist/ (run `npm run build`) nor the sources with tsx (run `npm install`) are here\n');
  process.exit(1);
}
