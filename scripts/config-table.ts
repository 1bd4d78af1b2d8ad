/**
 * The README's configuration table, from src/config/settings.ts: printed, or with --write put into
 * README.md between its config-table markers.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { SETTINGS } from '../src/config/settings.js';

const rows: string[] = [];
let group = '';
for (const [name, s] of Object.entries(SETTINGS)) {
  if (s.group !== group) {
    group = s.group;
    rows.push(`| **${group}** | | |`);
  }
  const fallback = s.default === undefined ? '(unset)' : `\`${s.default}\``;
  rows.push(`| \`${name}\` | ${fallback} | ${s.doc.replace(/\|/g, '\\|')}${s.secret ? ' Secret: never logged.' : ''} |`);
}
const table = ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
if (process.argv.includes('--write')) {
  const readme = readFileSync('README.md', 'utf8');
  const updated = readme.replace(/(<!-- config-table[^\n]*-->\n)[\s\S]*?(\n<!-- \/config-table -->)/, `$1${table}$2`);
  if (updated === readme && !readme.includes(table)) throw new Error('README.md has no config-table markers');
  writeFileSync('README.md', updated);
} else {
  process.stdout.write(`${table}\n`);
}
