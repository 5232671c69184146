// pksctl stock | tester ... | pool set ...: plant IT's view of the key buffer and its testers,
// through the keystore's pksctl socket (the keystore validates every field again).
import { parseArgs } from 'node:util';
import { pksError } from '../errors.js';
import { ipcClient, type IpcClient } from '../ipc.js';
import { socketPath } from '../paths.js';

const USAGE = `usage:
  pksctl stock [--json]
  pksctl tester list [--json]
  pksctl tester add CN --station NAME --pools P1,P2 --expires ISO-DATE [--cert-profiles OEM.TYPE,...]
  pksctl tester revoke CN
  pksctl pool set POOL --minimum N --reorder N [--critical N]
  pksctl outbox rejected [--json]`;

async function withKeystore<T>(fn: (ks: IpcClient) => Promise<T>): Promise<T> {
  const ks = ipcClient(socketPath('keystore', 'pksctl'), { timeoutMs: 10_000, connections: 1 });
  try {
    return await fn(ks);
  } finally {
    await ks.close();
  }
}

const count = (v: string | undefined, name: string): number => {
  if (v === undefined || !/^\d{1,9}$/.test(v)) throw pksError('PKS_BAD_REQUEST', `--${name} needs a whole number`);
  return Number(v);
};

export async function stockCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, strict: true });
  const r = await withKeystore((ks) => ks.call<{ pools: Record<string, Record<string, number>> }>('stats'));
  if (values.json) out(JSON.stringify(r));
  else
    for (const [p, s] of Object.entries(r.pools))
      out(`${p.padEnd(28)} available ${s.available} (minimum ${s.minimum}, re-order ${s.reorder})  reserved ${s.reserved}  injected ${s.injected}  reported ${s.reported}  burned ${s.burned}  burn rate ${((s.burnRate ?? 0) * 100).toFixed(1)} %`);
  return 0;
}

export async function testerCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { json: { type: 'boolean' }, station: { type: 'string' }, pools: { type: 'string' }, expires: { type: 'string' }, 'cert-profiles': { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  const [sub, cn, ...rest] = positionals;
  if (rest.length) throw pksError('PKS_BAD_REQUEST', USAGE);
  return withKeystore(async (ks) => {
    if (sub === 'list' && !cn) {
      const r = await ks.call<{ items: { cn: string; station: string; pools: string[]; expiresAt: string; revoked: boolean; certProfiles?: string[] }[] }>('tester-list');
      if (values.json) out(JSON.stringify(r));
      else for (const t of r.items) out(`${t.cn.padEnd(24)} ${t.station.padEnd(16)} ${t.revoked ? 'REVOKED' : `until ${t.expiresAt}`}  pools ${t.pools.join(',')}${t.certProfiles?.length ? `  certificates ${t.certProfiles.join(',')}` : ''}`);
      return 0;
    }
    if (sub === 'add' && cn) {
      if (!values.station || !values.pools || !values.expires) throw pksError('PKS_BAD_REQUEST', USAGE);
      const expires = new Date(values.expires);
      if (Number.isNaN(expires.getTime())) throw pksError('PKS_BAD_REQUEST', '--expires needs an ISO date');
      const certProfiles = values['cert-profiles']?.split(',').filter(Boolean);
      await ks.call('tester-put', { cn, station: values.station, pools: values.pools.split(',').filter(Boolean), expiresAt: expires.toISOString(), revoked: false, ...(certProfiles ? { certProfiles } : {}) });
      out(`tester ${cn} may use ${values.pools} until ${expires.toISOString()}`);
      return 0;
    }
    if (sub === 'revoke' && cn) {
      await ks.call('tester-revoke', { cn });
      out(`tester ${cn} revoked`);
      return 0;
    }
    throw pksError('PKS_BAD_REQUEST', USAGE);
  });
}

export async function poolCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { minimum: { type: 'string' }, reorder: { type: 'string' }, critical: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  const [sub, pool, ...rest] = positionals;
  if (sub !== 'set' || !pool || rest.length) throw pksError('PKS_BAD_REQUEST', USAGE);
  const body = {
    pool,
    minimum: count(values.minimum, 'minimum'),
    reorder: count(values.reorder, 'reorder'),
    ...(values.critical !== undefined ? { critical: count(values.critical, 'critical') } : {}),
  };
  await withKeystore((ks) => ks.call('pool-set', body));
  out(`pool ${pool}: minimum ${body.minimum}, re-order ${body.reorder}`);
  return 0;
}

/** pksctl outbox rejected: the records the KMS refused, kept by the keystore (issue 9). */
export async function outboxCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  if (positionals.length !== 1 || positionals[0] !== 'rejected') throw pksError('PKS_BAD_REQUEST', USAGE);
  const r = await withKeystore((ks) => ks.call<{ items: { id: string; kind: string; code: string; detail: string; rejectedAt: string }[] }>('outbox-rejected', { limit: 5000 }));
  if (values.json) out(JSON.stringify(r));
  else if (r.items.length === 0) out('the KMS has rejected no record');
  else for (const i of r.items) out(`${i.id}  ${i.kind.padEnd(10)} ${i.code.padEnd(20)} ${i.rejectedAt}  ${i.detail}`);
  return 0;
}
