// What a scenario costs the machine: CPU seconds of the load generator (this process) and of
// each service process (/proc/<pid>/stat), and the memory the services take together, sampled
// at one moment so that the figure is a real moment, not a sum of peaks (memory.ts says how
// shared pages are counted).
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Memory } from './memory.js';

const TICK = 100; // USER_HZ on Linux

function procCpuS(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / TICK;
  } catch {
    return 0;
  }
}

export interface Metered {
  wallS: number;
  /** CPU seconds of the load generator (this process, all its threads) */
  loadgenCpuS: number;
  /** CPU seconds per service */
  serviceCpuS: Record<string, number>;
  /** with `memory`: the sample where the services took the most memory together (memory.ts) */
  memory: Memory | null;
  /** load generator / (load generator + services) */
  loadgenShare: number;
  /** cores the load generator kept busy on average */
  loadgenCores: number;
  /** the machine's load average (1 min) at the end: how much else was running */
  loadavg: number;
}

// Memory (only where a figure reports it) is sampled every 2 s by a child process: one sample
// reads the services' page maps (~50 ms of CPU), which on the load generator's own thread
// would delay its requests and show up in their latencies (tsx's hooks do not reach a worker
// thread); starting that child costs ~0.5 s of CPU, so a scenario without the figure skips it.
export function meter(pids: Record<string, number>, o: { memory?: boolean; everyMs?: number } = {}): { stop(): Promise<Metered> } {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const s0 = Object.fromEntries(Object.entries(pids).map(([n, p]) => [n, procCpuS(p)]));
  let best: Memory | null = null;
  const sampler = o.memory
    ? fork(fileURLToPath(new URL('./memory-sampler.ts', import.meta.url)), [JSON.stringify(pids), String(o.everyMs ?? 2000)], {
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      })
    : null;
  const gone = sampler ? new Promise<void>((r) => sampler.once('exit', () => r())) : Promise.resolve();
  sampler?.on('message', (m: Memory) => {
    if (!best || m.totalMb > best.totalMb) best = m;
  });
  return {
    async stop() {
      // its last sample comes before it exits
      if (sampler?.connected) sampler.send('last');
      await gone;
      const wallS = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      const loadgenCpuS = (c.user + c.system) / 1e6;
      const serviceCpuS = Object.fromEntries(Object.entries(pids).map(([n, p]) => [n, procCpuS(p) - s0[n]!]));
      const svc = Object.values(serviceCpuS).reduce((a, b) => a + b, 0);
      return {
        wallS,
        loadgenCpuS,
        serviceCpuS,
        memory: best,
        loadgenShare: loadgenCpuS / Math.max(1e-9, loadgenCpuS + svc),
        loadgenCores: loadgenCpuS / wallS,
        loadavg: os.loadavg()[0]!,
      };
    },
  };
}
