// What a scenario costs the machine: CPU seconds of the load generator (this process) and of
// each service process (/proc/<pid>/stat), and the services' resident memory sampled together
// (/proc/<pid>/status VmRSS) so that their sum is a real moment, not a sum of peaks.
import { readFileSync } from 'node:fs';
import os from 'node:os';

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

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
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
  /** the largest sum of the services' RSS at one sample, and each one's RSS at that moment */
  rssTotalMb: number;
  rssMb: Record<string, number>;
  /** load generator / (load generator + services) */
  loadgenShare: number;
  /** cores the load generator kept busy on average */
  loadgenCores: number;
  /** the machine's load average (1 min) at the end: how much else was running */
  loadavg: number;
}

export function meter(pids: Record<string, number>, everyMs = 250): { stop(): Metered } {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const s0 = Object.fromEntries(Object.entries(pids).map(([n, p]) => [n, procCpuS(p)]));
  let best = { total: 0, by: {} as Record<string, number> };
  const sample = (): void => {
    const by = Object.fromEntries(Object.entries(pids).map(([n, p]) => [n, rssMb(p)]));
    const total = Object.values(by).reduce((a, b) => a + b, 0);
    if (total > best.total) best = { total, by };
  };
  sample();
  const timer = setInterval(sample, everyMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      const wallS = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      const loadgenCpuS = (c.user + c.system) / 1e6;
      const serviceCpuS = Object.fromEntries(Object.entries(pids).map(([n, p]) => [n, procCpuS(p) - s0[n]!]));
      const svc = Object.values(serviceCpuS).reduce((a, b) => a + b, 0);
      return {
        wallS,
        loadgenCpuS,
        serviceCpuS,
        rssTotalMb: best.total,
        rssMb: best.by,
        loadgenShare: loadgenCpuS / Math.max(1e-9, loadgenCpuS + svc),
        loadgenCores: loadgenCpuS / wallS,
        loadavg: os.loadavg()[0]!,
      };
    },
  };
}
