// Runs every uvu suite under test/ and closes with the line CI reads:
// `N passed, N failed, N skipped`.
// Each file runs in its own uvu process, PKS_TEST_JOBS of them at a time (default: one per core,
// at most 2). Most suites wait on real parts (SoftHSM, mosquitto, swtpm, an SMTP relay, timers),
// so two at a time roughly halve the wall time on this 2-core machine; every suite already
// makes its own temporary directories and free loopback ports, which is what lets them share a
// machine. A file's output is printed whole when it ends, so suites never interleave; a file
// that runs past PKS_TEST_FILE_TIMEOUT seconds (default 900) is killed and counted as failed.
// Usage: node --import tsx test/run.ts [pattern]   (pattern: a regex on the path of the *.test.ts files)
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const testDir = path.join(root, 'test');
const pattern = new RegExp(process.argv[2] ?? '\\.test\\.ts$');
const jobs = Math.max(1, Number(process.env.PKS_TEST_JOBS) || Math.min(2, os.availableParallelism()));
const fileTimeoutMs = (Number(process.env.PKS_TEST_FILE_TIMEOUT) || 900) * 1000;

// the slow suites start first, so the last one to end is a short one (measured on this machine)
const SLOW = [/faults\//, /campaign\//, /setup\//, /cluster\//, /e2e\//, /zeroize\//, /update\//, /uplink\//, /kms\//, /sentinel\//, /doip\//];
const rank = (f: string) => {
  const i = SLOW.findIndex((r) => r.test(f));
  return i < 0 ? SLOW.length : i;
};

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.') || e.name === 'node_modules') continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(path.relative(testDir, p));
  }
  return out;
}

const files = walk(testDir)
  .filter((f) => /\.test\.ts$/.test(f) && pattern.test(f))
  .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));

interface Result {
  file: string;
  passed: number;
  failed: number;
  skipped: number;
  seconds: number;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function runFile(file: string): Promise<Result> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'node_modules/uvu/bin.js', 'test', `^${escape(file)}$`], {
      cwd: root,
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, fileTimeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      const num = (label: string): number | undefined => {
        const m = new RegExp(`^\\s*${label}:\\s+(\\d+)`, 'm').exec(out);
        return m ? Number(m[1]) : undefined;
      };
      const total = num('Total');
      const passed = num('Passed') ?? 0;
      const skipped = num('Skipped') ?? 0;
      // no summary (a crash before it, a hang): the whole file counts as one failure
      const failed = total === undefined || timedOut ? Math.max(1, (total ?? 0) - passed - skipped) : Math.max(0, total - passed - skipped) + (code && total === passed + skipped ? 1 : 0);
      const seconds = (performance.now() - t0) / 1000;
      const why = timedOut ? ` KILLED after ${fileTimeoutMs / 1000} s` : '';
      process.stdout.write(`\n── ${file} (${seconds.toFixed(1)} s)${failed ? ` FAILED${why}` : ''}\n${out}`);
      resolve({ file, passed, failed, skipped, seconds });
    });
  });
}

const t0 = performance.now();
const results: Result[] = [];
let next = 0;
await Promise.all(
  Array.from({ length: Math.min(jobs, files.length) }, async () => {
    while (next < files.length) results.push(await runFile(files[next++]!));
  }),
);
const sum = (k: 'passed' | 'failed' | 'skipped') => results.reduce((n, r) => n + r[k], 0);
const failedFiles = results.filter((r) => r.failed);
const slowest = [...results].sort((a, b) => b.seconds - a.seconds).slice(0, 8);
process.stdout.write(`\n${files.length} files, ${jobs} at a time, ${((performance.now() - t0) / 1000).toFixed(0)} s; slowest: ${slowest.map((r) => `${r.file} ${r.seconds.toFixed(0)} s`).join(', ')}\n`);
if (failedFiles.length) process.stdout.write(`failed: ${failedFiles.map((r) => r.file).join(', ')}\n`);
if (!files.length) process.stdout.write('no test file matches\n');
const failed = sum('failed') + (files.length ? 0 : 1);
process.stdout.write(`\n${sum('passed')} passed, ${failed} failed, ${sum('skipped')} skipped\n`);
process.exit(failed > 0 ? 1 : 0);
