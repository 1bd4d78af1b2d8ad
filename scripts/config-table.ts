/** Prints the README's configuration table from src/config/settings.ts: `npx tsx scripts/config-table.ts`. */
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
process.stdout.write(['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n') + '\n');
