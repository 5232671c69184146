// pksctl ipc: one verb on a service's socket, for debugging (what `curl --unix-socket` was
// while the IPC spoke HTTP). The answer is printed as JSON; a refusal is the coded error.
import { parseArgs } from 'node:util';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';
import { pksError } from '../errors.js';
import { parseJsonOr } from '../json.js';

const NAME = /^[a-z][a-z0-9-]{0,31}$/;
export const IPC_USAGE = 'usage: pksctl ipc SERVICE VERB [JSON] [--as CALLER] [--timeout MS] [--compact]';

export async function ipcCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { as: { type: 'string', default: 'pksctl' }, timeout: { type: 'string', default: '60000' }, compact: { type: 'boolean', default: false } },
  });
  const [service, verb, json = '{}', ...extra] = positionals;
  if (!service || !verb || extra.length || !NAME.test(service) || !NAME.test(verb) || !NAME.test(values.as!)) throw pksError('PKS_BAD_REQUEST', IPC_USAGE);
  const timeoutMs = Number(values.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) throw pksError('PKS_BAD_REQUEST', '--timeout must be 1..600000 ms');
  const body = parseJsonOr('PKS_BAD_REQUEST', 'the request argument', json);
  // the socket decides who is calling: --as picks another caller's socket (root can open them all)
  const client = ipcClient(socketPath(service, values.as!), { timeoutMs });
  try {
    const res = await client.call(verb, body, timeoutMs);
    out(values.compact ? JSON.stringify(res) : JSON.stringify(res, null, 2));
    return 0;
  } finally {
    await client.close();
  }
}
