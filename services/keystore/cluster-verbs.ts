// Issue 16 §2: the keystore's part in a cluster of boxes (the rule: scripts/kms/cluster.ts).
//  - relay-proof (tester-api): a tester whose own box died after the ECU proved it took that
//    box's key hands the proof here; it goes to the KMS in this box's signed verification file
//    (`relayed-proof`), which checks it against the key it sent to the other box. Nothing is
//    issued here and no key of this box changes: the tester gets no package for that ECU slot.
//  - release-stock (uplink, from a signed ops command): takes up to `count` AVAILABLE keys of a
//    pool out of this box for good (BURNED, reason `released`), audited, in the outbox for the
//    KMS, which answers the target box with as many fresh keys. Idempotent per `ref`.
import { pksError } from '../../appliance/errors.js';
import type { RelayedProof } from '../../appliance/contracts/keystore.js';
import type { VerbTable } from '../../appliance/ipc.js';
import { ID, NAME, POOL, hex } from '../../appliance/schema.js';
import { appendAudit } from './audit.js';
import type { Keystore } from './keystore.js';
import { counters, putOutbox, refuse, isRefusal, type Refusal } from './stock.js';

const obj = (required: string[], properties: Record<string, unknown>) => ({ type: 'object', additionalProperties: false, required, properties });

interface RelayInput extends RelayedProof {
  tester: string;
  station: string;
}

interface ReleaseInput {
  pool: string;
  count: number;
  to: string;
  ref: string;
}

function relayTx(ks: Keystore, boxId: string, r: RelayInput): { relayed: true; auditSeq: number } | Refusal {
  const t = ks.dbs.testers.get(r.tester);
  if (!t || t.revoked || Date.parse(t.expiresAt) <= Date.now()) return refuse('PKS_TESTER_UNKNOWN', r.tester);
  if (!t.pools.includes(r.pool)) return refuse('PKS_POOL_FORBIDDEN', `tester may not use pool '${r.pool}'`);
  if (r.origin === boxId) return refuse('PKS_BAD_REQUEST', 'a proof for this box is confirmed, not relayed');
  const now = Date.now();
  const body = { origin: r.origin, packageId: r.packageId, recordId: r.packageId, pool: r.pool, uid: r.uid.toLowerCase(), counter: r.counter, m4: r.m4.toLowerCase(), m5: r.m5.toLowerCase(), tester: r.tester, station: t.station };
  const auditSeq = appendAudit(ks.dbs, now, { ev: 'relay-proof', ...body });
  putOutbox(ks.dbs, now, 'relayed-proof', { ...body, auditSeq });
  return { relayed: true, auditSeq };
}

function releaseTx(ks: Keystore, r: ReleaseInput): { released: number; ref: string } | Refusal {
  const dbs = ks.dbs;
  const done = dbs.meta.get(`release:${r.ref}`) as { released: number } | undefined;
  if (done) return { released: done.released, ref: r.ref };
  if (!dbs.pools.doesExist(r.pool)) return refuse('PKS_POOL_UNKNOWN', r.pool);
  const now = Date.now();
  const taken: { key: [string, number]; id: string }[] = [];
  for (const { key, value } of dbs.avail.getRange({ start: [r.pool, 0], end: [r.pool, Number.MAX_SAFE_INTEGER], limit: r.count })) taken.push({ key: key as [string, number], id: value });
  for (const { key, id } of taken) {
    const rec = dbs.keys.get(id);
    if (!rec || rec.state !== 'AVAILABLE') return refuse('PKS_STORE_FAILURE', `queue entry ${id} is not available`);
    dbs.avail.removeSync(key);
    dbs.keys.putSync(id, { ...rec, state: 'BURNED', reason: `released to ${r.to}`, updatedAt: now });
    const seq = appendAudit(dbs, now, { ev: 'release', id, pool: r.pool, to: r.to, ref: r.ref });
    putOutbox(dbs, now, 'release', { recordId: id, batchId: rec.batchId, pool: r.pool, to: r.to, ref: r.ref, auditSeq: seq });
  }
  const c = { ...counters(dbs, r.pool) };
  c.available -= taken.length;
  c.burned += taken.length;
  dbs.counters.putSync(r.pool, c);
  dbs.meta.putSync(`release:${r.ref}`, { released: taken.length });
  return { released: taken.length, ref: r.ref };
}

const unwrap = <T>(x: T | Refusal): T => {
  if (isRefusal(x)) throw pksError(x.refused, x.detail);
  return x;
};

export function clusterKeystoreVerbs(ks: Keystore, boxId: string): VerbTable {
  return {
    'relay-proof': {
      request: obj(['origin', 'packageId', 'pool', 'uid', 'counter', 'm4', 'm5', 'tester', 'station'], {
        origin: NAME,
        packageId: ID,
        pool: POOL,
        uid: hex(15),
        counter: { type: 'integer', minimum: 0, maximum: 0x0fffffff },
        m4: hex(32),
        m5: hex(16),
        tester: NAME,
        station: NAME,
      }),
      handler: async (b: RelayInput) => unwrap(await ks.commit(() => relayTx(ks, boxId, b))),
    },
    'release-stock': {
      request: obj(['pool', 'count', 'to', 'ref'], { pool: POOL, count: { type: 'integer', minimum: 1, maximum: 100_000 }, to: NAME, ref: ID }),
      handler: async (b: ReleaseInput) => unwrap(await ks.commit(() => releaseTx(ks, b))),
    },
  };
}

export const CLUSTER_CALLERS: Readonly<Record<string, readonly string[]>> = Object.freeze({ 'tester-api': ['relay-proof'], uplink: ['release-stock'] });
