// pksctl vault: asks the running vault over its pksctl socket.
import { createPublicKey } from 'node:crypto';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';
import { pksError } from '../errors.js';

export async function vaultCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const [sub, arg, ...extra] = argv;
  const json = extra.includes('--json') || arg === '--json';
  const client = ipcClient(socketPath('vault', 'pksctl'), { timeoutMs: 5000, connections: 1 });
  try {
    if (sub === 'status') {
      const s = await client.call<Record<string, unknown>>('status');
      out(json ? JSON.stringify(s) : JSON.stringify(s, null, 2));
      return s.ready ? 0 : 1;
    }
    if (sub === 'public-key') {
      if (!arg || !['identity', 'transport', 'audit', 'ecu-ca'].includes(arg)) throw pksError('PKS_BAD_REQUEST', 'public-key needs one of identity, transport, audit, ecu-ca');
      const r = await client.call<{ spki: string }>('public-key', { name: arg });
      out(createPublicKey({ key: Buffer.from(r.spki, 'base64'), format: 'der', type: 'spki' }).export({ format: 'pem', type: 'spki' }).toString().trim());
      return 0;
    }
    throw pksError('PKS_BAD_REQUEST', 'usage: pksctl vault status [--json] | pksctl vault public-key NAME');
  } finally {
    await client.close();
  }
}
