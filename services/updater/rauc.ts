// The updater's side of RAUC: `rauc install` (progress from its output lines), `rauc status`
// (which slot is booted, which is primary, what each holds) and `rauc status mark-good|bad`.
// Through the CLI, which talks to `rauc service` over the system D-Bus like any client; the
// service does the privileged work (writing the slot, the bootloader backend).
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { isErrorCode, pksError, PksError } from '../../appliance/errors.js';
import { raucError, runRauc, type RaucEnv } from './bundle.js';

export interface SlotInfo {
  name: string;
  bootname: string;
  state: string;
  bootStatus: string;
  version: string | null;
}
export interface RaucStatus {
  booted: string;
  primary: string | null;
  slots: SlotInfo[];
}

export async function raucStatus(r: RaucEnv): Promise<RaucStatus> {
  let out;
  try {
    out = await runRauc(['status', '--detailed', '--output-format=json'], r, 30_000);
  } catch (e) {
    throw pksError('PKS_UPDATE_INSTALL_FAILED', `rauc status failed: ${String((e as { stderr?: string }).stderr ?? '').slice(-200)}`);
  }
  const j = JSON.parse(out.stdout) as { booted: string; boot_primary: string | null; slots: Array<Record<string, any>> };
  const slots = j.slots.map((o) => {
    const [name, s] = Object.entries(o)[0]!;
    return { name, bootname: String(s.bootname), state: String(s.state), bootStatus: String(s.boot_status), version: (s.slot_status?.bundle?.version as string | undefined) ?? null };
  });
  const primary = slots.find((s) => s.name === j.boot_primary)?.bootname ?? null;
  return { booted: j.booted, primary, slots };
}

export interface InstallProgress {
  percent: number;
  message: string;
}

/**
 * rauc install FILE. Progress lines look like ` 40% Checking manifest contents`; the last one
 * names the result. A refusal comes back as our coded error (the pre-install handler's code
 * from its report file, else mapped from RAUC's LastError).
 */
export function raucInstall(file: string, r: RaucEnv & { reportDir?: string }, onProgress: (p: InstallProgress) => void): Promise<void> {
  const report = r.reportDir ? path.join(r.reportDir, 'pre-install.json') : null;
  if (report) rmSync(report, { force: true });
  return new Promise((resolve, reject) => {
    const child = spawn('rauc', ['-c', r.conf, 'install', file], { env: { ...process.env, ...r.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      out += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const m = /^\s*(\d{1,3})% (.*)$/.exec(line);
        if (m) onProgress({ percent: Math.min(100, Number(m[1])), message: m[2]!.slice(0, 120) });
      }
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', (e) => reject(pksError('PKS_UPDATE_INSTALL_FAILED', `rauc not runnable: ${e.message}`)));
    child.once('close', (code) => {
      if (code === 0) return resolve();
      if (report && /handler/i.test(out)) {
        try {
          const j = JSON.parse(readFileSync(report, 'utf8')) as { code?: unknown; detail?: unknown };
          if (isErrorCode(j.code)) return reject(new PksError(j.code, typeof j.detail === 'string' ? j.detail.slice(0, 200) : undefined));
        } catch {
          // no report: fall through to RAUC's words
        }
      }
      reject(raucError(out));
    });
  });
}

export async function raucMark(what: 'mark-good' | 'mark-bad' | 'mark-active', slot: 'booted' | 'other', r: RaucEnv): Promise<void> {
  try {
    await runRauc(['status', what, slot], r, 30_000);
  } catch (e) {
    throw pksError('PKS_UPDATE_INSTALL_FAILED', `rauc ${what} ${slot} failed: ${String((e as { stderr?: string }).stderr ?? '').slice(-200)}`);
  }
}
