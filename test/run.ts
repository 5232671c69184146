// Runs every uvu suite under test/ in one process and closes with the line CI reads:
// `N passed, N failed, N skipped`. uvu's own summary stays in the output above it.
// Usage: node --import tsx test/run.ts [pattern]   (pattern: a regex on the file path)
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pattern = process.argv[2] ?? '\\.test\\.ts$';
const child = spawn(process.execPath, ['--import', 'tsx', 'node_modules/uvu/bin.js', 'test', pattern], {
  cwd: root,
  env: { ...process.env, NO_COLOR: '1' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
let out = '';
child.stdout.on('data', (b: Buffer) => {
  out += b.toString();
  process.stdout.write(b);
});
child.on('close', (code) => {
  const num = (label: string): number | undefined => {
    const m = new RegExp(`^\\s*${label}:\\s+(\\d+)`, 'm').exec(out);
    return m ? Number(m[1]) : undefined;
  };
  const total = num('Total');
  const passed = num('Passed');
  const skipped = num('Skipped') ?? 0;
  if (total === undefined || passed === undefined) {
    process.stdout.write('\n0 passed, 1 failed\n');
    process.exit(code || 1);
  }
  const failed = Math.max(0, total - passed - skipped) + (code && total === passed + skipped ? 1 : 0);
  process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  process.exit(failed > 0 ? 1 : 0);
});
