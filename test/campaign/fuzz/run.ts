// Runs fuzz targets one after the other, each in its own process (child.ts) under a watchdog:
// a target that stops answering its heartbeat for `silentMs` is killed and counted as a hang
// (reproducible: the engine is deterministic for a seed, the report names both).
import { fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FuzzResult } from './engine.js';
import { TARGETS } from './targets.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'child.ts');

export interface FuzzPlan {
  /** per target: stop after this many inputs ... */
  inputs: number;
  /** ... or this many seconds */
  seconds: number;
  seed?: number;
  /** target names (default: all) */
  only?: string[];
  silentMs?: number;
  say?: (s: string) => void;
}

export function runOne(name: string, plan: FuzzPlan): Promise<FuzzResult> {
  const seed = plan.seed ?? 1;
  const silentMs = plan.silentMs ?? 30_000;
  return new Promise((resolve) => {
    const child = fork(CHILD, [name, String(plan.inputs), String(plan.seconds), String(seed)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let last = Date.now();
    let inputs = 0;
    let done = false;
    const finish = (r: FuzzResult): void => {
      if (done) return;
      done = true;
      clearInterval(watch);
      resolve(r);
    };
    const failed = (kind: 'crash' | 'hang', error: string): FuzzResult => ({ target: name, inputs, crashes: kind === 'crash' ? 1 : 0, hangs: kind === 'hang' ? 1 : 0, seconds: 0, outcomes: 0, findings: [{ kind, input: '', error }] });
    const watch = setInterval(() => {
      if (Date.now() - last > silentMs) {
        child.kill('SIGKILL');
        finish(failed('hang', `no heartbeat for ${silentMs} ms after input ${inputs} (seed ${seed})`));
      }
    }, 1000);
    child.on('message', (m: { alive?: boolean; inputs?: number; result?: FuzzResult; error?: string }) => {
      last = Date.now();
      if (m.inputs !== undefined) inputs = m.inputs;
      if (m.result) finish(m.result);
      if (m.error) finish(failed('crash', `target setup or engine failed: ${m.error.slice(0, 500)}`));
    });
    child.on('exit', (code, signal) => finish(failed('crash', `fuzz process exited (${code ?? signal}) after input ${inputs} (seed ${seed})`)));
  });
}

export async function runFuzz(plan: FuzzPlan): Promise<FuzzResult[]> {
  const out: FuzzResult[] = [];
  for (const t of TARGETS) {
    if (plan.only && !plan.only.includes(t.name)) continue;
    const r = await runOne(t.name, plan);
    plan.say?.(`  fuzz ${t.name.padEnd(13)} ${String(r.inputs).padStart(10)} inputs in ${r.seconds} s, ${r.crashes} crashes, ${r.hangs} hangs, ${r.outcomes} distinct answers`);
    for (const f of r.findings.slice(0, 3)) plan.say?.(`    ${f.kind}: ${f.error} input ${f.input.slice(0, 160)}`);
    out.push(r);
  }
  return out;
}
