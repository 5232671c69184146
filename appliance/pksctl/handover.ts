// pksctl handover: a rework station takes over an ECU's open reservation from the line tester
// that started it. The keystore checks the receiving tester (registered, not revoked, allowed
// the pool), moves the reservation, audits who ordered it and why, and tells the KMS.
//   pksctl handover --pool P --uid HEX30 --to CN --reason TEXT [--json]
//   pksctl handover --package ID --to CN --reason TEXT [--json]
import os from 'node:os';
import { parseArgs } from 'node:util';
import { pksError } from '../errors.js';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';

const USAGE = 'usage: pksctl handover (--package ID | --pool POOL --uid HEX30) --to TESTER --reason TEXT [--json]';

/** Who ordered it, for the audit: the person behind sudo if there is one. */
function operator(): string {
  const who = (process.env.SUDO_USER || os.userInfo().username || 'unknown').replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64);
  return /^[A-Za-z0-9]/.test(who) ? who : `u${who}`.slice(0, 64);
}

export async function handoverCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { package: { type: 'string' }, pool: { type: 'string' }, uid: { type: 'string' }, to: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  });
  const byEcu = values.pool !== undefined && values.uid !== undefined;
  if (positionals.length || !values.to || !values.reason || (values.package === undefined) === !byEcu) throw pksError('PKS_BAD_REQUEST', USAGE);
  const body = {
    ...(values.package !== undefined ? { packageId: values.package } : { pool: values.pool, uid: values.uid!.toLowerCase() }),
    to: values.to,
    by: operator(),
    reason: values.reason,
  };
  const ks = ipcClient(socketPath('keystore', 'pksctl'), { timeoutMs: 10_000, connections: 1 });
  try {
    const r = await ks.call<{ packageId: string; tester: string; station: string }>('handover', body);
    out(values.json ? JSON.stringify(r) : `package ${r.packageId} now held by ${r.tester} (station ${r.station}); its retry gets the same package`);
    return 0;
  } finally {
    await ks.close();
  }
}
