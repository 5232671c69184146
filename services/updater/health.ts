// The new slot's health check before mark-good: every PKS service READY (systemd's
// ActiveState=active, which a Type=notify unit reaches only after READY=1), then the keystore's
// `update-health` verb: the vault unsealed (HSM logged in), the audit chain verifies with the
// vault's audit key, and the data is the same the old slot left (the audit entry recorded at
// drain time is still there with the same hash). Waits up to a deadline, since the services
// come up one after another on first boot. And the vault's application gate (issue 12): a slot is
// good only when the vault serves keys on it (its measurement is the one the build signed and
// the vault authorised); a closed gate (PKS_TAMPERED) fails the check, so the slot falls back.
import { execFile } from 'node:child_process';
import { pksError, asPksError } from '../../appliance/errors.js';
import type { IpcClient } from '../../appliance/ipc.js';

export interface HealthConfig {
  units: readonly string[];
  keystore: boolean;
  /** the vault's gate must be open (its `status` on /run/pks/vault/updater.sock) */
  vault?: boolean;
  /** an extra executable check (exit 0 = healthy); tests use it for a bundle that fails */
  command?: readonly string[];
  timeoutSeconds: number;
  intervalSeconds: number;
}

export interface UpdateHealth {
  vaultOk: boolean;
  auditOk: boolean;
  headSeq: number;
  headHash: string;
  /** hash of the entry at the asked seq, null when it is not there */
  hashAt: string | null;
  problems: string[];
}

const run = (cmd: string, args: string[], timeoutMs = 10_000): Promise<{ code: number; out: string }> =>
  new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }));
  });

/**
 * What is wrong now; `permanent`: something waiting cannot mend (a unit the new slot does not
 * have at all), so the health check fails at once instead of after its whole timeout.
 */
export async function checkOnce(cfg: HealthConfig, keystore: IpcClient | null, mark: { headSeq: number; headHash: string } | null | undefined, vault: IpcClient | null = null): Promise<{ problems: string[]; permanent: boolean }> {
  const problems: string[] = [];
  let permanent = false;
  if (cfg.units.length > 0) {
    const r = await run('systemctl', ['show', '-p', 'Id,LoadState,ActiveState,SubState', ...cfg.units]);
    const blocks = r.out.trim().split(/\n\n+/);
    for (const b of blocks) {
      const id = /Id=(.*)/.exec(b)?.[1];
      const load = /LoadState=(.*)/.exec(b)?.[1];
      const active = /ActiveState=(.*)/.exec(b)?.[1];
      if (id && (load === 'not-found' || load === 'masked' || load === 'bad-setting' || load === 'error')) {
        problems.push(`${id} is ${load}`);
        permanent = true;
      } else if (id && active !== 'active') problems.push(`${id} is ${active ?? 'unknown'}`);
    }
    if (r.code !== 0) problems.push('systemctl show failed');
  }
  if (cfg.keystore && keystore) {
    try {
      const h = await keystore.call<UpdateHealth>('update-health', mark ? { seq: mark.headSeq } : {}, 60_000);
      if (!h.vaultOk) problems.push('vault is not unsealed');
      if (!h.auditOk) problems.push(`audit does not verify: ${h.problems.slice(0, 3).join('; ')}`);
      if (mark && mark.headSeq > 0 && h.hashAt !== mark.headHash) problems.push(`keystore data differs: audit entry ${mark.headSeq} ${h.hashAt === null ? 'is missing' : 'has another hash'}`);
    } catch (e) {
      problems.push(`keystore: ${asPksError(e).code}`);
    }
  }
  if (cfg.vault) {
    if (!vault) problems.push('vault: no client');
    else {
      try {
        const st = await vault.call<{ ready: boolean; gate?: { open: boolean; code?: string; reason?: string } }>('status', {}, 30_000);
        if (!st.ready) problems.push('vault is not ready');
        else if (!st.gate) problems.push('vault has no application gate');
        else if (!st.gate.open) problems.push(`vault gate closed: ${st.gate.code ?? 'PKS_TAMPERED'} ${st.gate.reason ?? ''}`.trim());
      } catch (e) {
        problems.push(`vault: ${asPksError(e).code}`);
      }
    }
  }
  if (cfg.command && cfg.command.length > 0) {
    const r = await run(cfg.command[0]!, cfg.command.slice(1), 60_000);
    if (r.code !== 0) problems.push(`health command: ${r.out.trim().slice(-200) || `exit ${r.code}`}`);
  }
  return { problems, permanent };
}

/** Healthy within the deadline, or PKS_UPDATE_HEALTH_FAILED naming what was not. */
export async function waitHealthy(cfg: HealthConfig, keystore: IpcClient | null, mark: { headSeq: number; headHash: string } | null | undefined, vault: IpcClient | null = null): Promise<void> {
  const end = Date.now() + cfg.timeoutSeconds * 1000;
  let problems: string[] = [];
  for (;;) {
    const r = await checkOnce(cfg, keystore, mark, vault);
    problems = r.problems;
    if (problems.length === 0) return;
    if (r.permanent || Date.now() >= end) break;
    await new Promise((r) => setTimeout(r, cfg.intervalSeconds * 1000));
  }
  throw pksError('PKS_UPDATE_HEALTH_FAILED', problems.join('; ').slice(0, 300));
}
