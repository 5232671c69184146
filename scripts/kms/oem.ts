// OEM key material import (format v1, JSON), one file per delivery from an OEM:
//   { "v": 1, "oem": "oemA",
//     "pools": [ { "pool": "oemA.bcm.k4",                    <oem>.<ECU type>.<slot name>
//                  "she": { "keyId": 4, "authKeyId": 1, "counter": 1, "flags": 0 },
//                  "authKey": "<hex 16 B: the key the ECUs hold in slot authKeyId>",
//                  "keys": ["<hex 16 B>", ...],                 and/or
//                  "generate": 1000 } ] }                       random keys made here (demo)
// `generate` also marks the pool as growable: a re-order beyond the stock makes new keys.
// Importing again appends keys to a pool; its SHE parameters and auth key must not change.
import { randomBytes } from 'node:crypto';
import { compileChecker } from '../../appliance/config.js';
import { pksError } from '../../appliance/errors.js';
import { POOL, hex } from '../../appliance/schema.js';
import type { KmsStore, PoolRecord } from './store.js';

export interface OemFile {
  v: 1;
  oem: string;
  pools: Array<{
    pool: string;
    she: { keyId: number; authKeyId: number; counter: number; flags: number };
    authKey: string;
    keys?: string[];
    generate?: number;
  }>;
}

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['v', 'oem', 'pools'],
  properties: {
    v: { const: 1 },
    oem: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$' },
    pools: {
      type: 'array',
      minItems: 1,
      maxItems: 1000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['pool', 'she', 'authKey'],
        properties: {
          pool: POOL,
          she: {
            type: 'object',
            additionalProperties: false,
            required: ['keyId', 'authKeyId', 'counter', 'flags'],
            properties: {
              keyId: { type: 'integer', minimum: 1, maximum: 15 },
              authKeyId: { type: 'integer', minimum: 1, maximum: 15 },
              counter: { type: 'integer', minimum: 0, maximum: 0x0fffffff },
              flags: { type: 'integer', minimum: 0, maximum: 31 },
            },
          },
          authKey: hex(16),
          keys: { type: 'array', maxItems: 10_000_000, items: hex(16) },
          generate: { type: 'integer', minimum: 0, maximum: 10_000_000 },
        },
      },
    },
  },
} as const;

export const checkOemFile = compileChecker<OemFile>(schema, 'OEM key file', 'PKS_BAD_REQUEST');

const sameShe = (a: PoolRecord['she'], b: PoolRecord['she']): boolean =>
  a.keyId === b.keyId && a.authKeyId === b.authKeyId && a.counter === b.counter && a.flags === b.flags;

/** Validates the whole file first, then imports it in one synchronous transaction. */
export function importOem(store: KmsStore, data: unknown): { pools: Record<string, number> } {
  const f = checkOemFile(data);
  for (const p of f.pools) {
    if (p.pool.split('.')[0] !== f.oem) throw pksError('PKS_BAD_REQUEST', `pool ${p.pool} does not belong to OEM ${f.oem}`);
    const old = store.pools.get(p.pool);
    if (old && (!sameShe(old.she, p.she) || old.authKey.toLowerCase() !== p.authKey.toLowerCase()))
      throw pksError('PKS_CONFLICT', `pool ${p.pool} exists with other SHE parameters or auth key`);
  }
  const added: Record<string, number> = {};
  store.root.transactionSync(() => {
    for (const p of f.pools) {
      const rec: PoolRecord = store.pools.get(p.pool) ?? {
        pool: p.pool,
        she: { ...p.she },
        authKey: p.authKey.toLowerCase(),
        count: 0,
        next: 0,
        generate: false,
      };
      const keys = [...(p.keys ?? []).map((k) => k.toLowerCase())];
      for (let i = 0; i < (p.generate ?? 0); i++) keys.push(randomBytes(16).toString('hex'));
      for (const k of keys) store.keys.putSync([p.pool, rec.count++], k);
      if (p.generate !== undefined) rec.generate = true;
      store.pools.putSync(p.pool, rec);
      added[p.pool] = (added[p.pool] ?? 0) + keys.length;
    }
  });
  return { pools: added };
}

/** Makes `n` more random keys in a growable pool (inside the caller's transaction). */
export function growPool(store: KmsStore, rec: PoolRecord, n: number): void {
  for (let i = 0; i < n; i++) store.keys.putSync([rec.pool, rec.count++], randomBytes(16).toString('hex'));
}
