// One "boot" of the updater as its own process (driver.ts) for the host tests that cut the power:
// `cutWhen` decides, line by line, when the power goes (SIGKILL of the updater and of rauc
// service at once); a reboot request is a power-off too. Shared by faults.test.ts and
// reauth.test.ts.
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { UpdateStatus } from '../../appliance/contracts/update.js';
import { repoRoot, type RaucHost } from './rauc-host.js';

export interface Run {
  lines: Array<Record<string, any>>;
  killed: boolean;
}

/** Runs one updater process; `cutWhen` decides, line by line, when the power goes. */
export function runUpdater(h: RaucHost, stateDir: string, job: Record<string, unknown>, cutWhen?: (l: Record<string, any>) => boolean): Promise<Run> {
  const healthCommand = ['sh', '-c', `! head -c 64 "${h.booted === 'A' ? h.slots.A : h.slots.B}" | grep -q fail-health`];
  const full = { stateDir, conf: h.conf, env: h.env, reportDir: h.reportDir, tcti: h.tpm.tcti, healthCommand, ...job };
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test/update/driver.ts'), JSON.stringify(full)], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PKS_LOG_LEVEL: 'error' } });
  const run: Run = { lines: [], killed: false };
  let buf = '';
  return new Promise((resolve) => {
    const cut = async () => {
      if (run.killed) return;
      run.killed = true;
      child.kill('SIGKILL');
      await h.stopService('SIGKILL');
    };
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = JSON.parse(buf.slice(0, i)) as Record<string, any>;
        buf = buf.slice(i + 1);
        run.lines.push(l);
        // a reboot request without a cut rule: the machine reboots (same as a cut, for state)
        if ((cutWhen && cutWhen(l)) || l.reboot) void cut();
      }
    });
    child.stderr.on('data', () => undefined);
    child.once('close', () => resolve(run));
  });
}

export const result = (r: Run): UpdateStatus | undefined => r.lines.find((l) => l.result)?.result as UpdateStatus | undefined;
export const rebooted = (r: Run) => r.lines.some((l) => l.reboot);

