// The keystore's verb table and who may call what. Schemas carry every limit: a tester id,
// an ECU UID, a proof, a batch chunk. Anything else is refused before it reaches LMDB.
import type { VerbTable } from '../../appliance/ipc.js';
import { CERT_PROFILE, ID, NAME, POOL, hex } from '../../appliance/schema.js';
import { MAX_CHUNK_BYTES } from '../../appliance/batch-format.js';
import type { Keystore } from './keystore.js';
import type { Refusal } from './stock.js';
import { UNLOCK_KEYSTORE_VERBS, unlockKeystoreVerbs } from './unlock-log.js';
import type { EcuCertRequest, ReserveRequest, TesterRecord } from '../../appliance/contracts/keystore.js';
import { pksError } from '../../appliance/errors.js';

const obj = (required: string[], properties: Record<string, unknown>) => ({ type: 'object', additionalProperties: false, required, properties });
const REASON = { type: 'string', minLength: 1, maxLength: 200, pattern: '^[\\x20-\\x7e]+$' } as const;
const TIME = { type: 'string', format: 'date-time', maxLength: 40 } as const;
const count = { type: 'integer', minimum: 0, maximum: 100_000_000 } as const;
const OUTBOX_ID = { type: 'string', pattern: '^[0-9]{16}$' } as const;

/**
 * reserve checks the tester's grant itself (grant.ts; confirm below too): the station is the
 * registry's, and a request that names one must name that one. `newKey` is the gate a new key
 * from the stock must pass (the updater's drain, update-verbs.ts).
 */
export function reserveVerb(ks: Pick<Keystore, 'grant' | 'reserve'>, newKey?: () => Refusal | null): VerbTable[string] {
  return {
    request: obj(['pool', 'uid', 'tester'], { pool: POOL, uid: hex(15), tester: NAME, station: NAME }),
    handler: async (b: ReserveRequest) => {
      const t = ks.grant(b.tester, b.pool);
      if (b.station !== undefined && b.station !== t.station) throw pksError('PKS_BAD_REQUEST', `station '${b.station}' is not the tester's`);
      return ks.reserve({ pool: b.pool, uid: b.uid, tester: b.tester, station: t.station }, newKey);
    },
  };
}

export function keystoreVerbs(ks: Keystore): VerbTable {
  return {
    reserve: reserveVerb(ks),
    confirm: {
      request: obj(['packageId', 'tester', 'm4', 'm5'], { packageId: ID, tester: NAME, m4: hex(32), m5: hex(16) }),
      handler: async (b: { packageId: string; tester: string; m4: string; m5: string }) => {
        ks.grant(b.tester);
        return ks.confirm(b.packageId, b.tester, b.m4, b.m5);
      },
    },
    fail: {
      request: obj(['packageId', 'tester', 'reason'], { packageId: ID, tester: NAME, reason: REASON }),
      handler: (b: { packageId: string; tester: string; reason: string }) => ks.fail(b.packageId, b.tester, b.reason),
    },
    history: {
      request: obj(['tester'], { tester: NAME, limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 } }),
      handler: (b: { tester: string; limit: number }) => ({ items: ks.history(b.tester, b.limit) }),
    },
    stats: {
      request: obj([], {}),
      handler: () => ({ pools: ks.stats() }),
    },
    'ecu-cert': {
      request: obj(['tester', 'uid', 'profile', 'csr'], { tester: NAME, uid: hex(15), profile: CERT_PROFILE, csr: { type: 'string', minLength: 64, maxLength: 12 * 1024 } }),
      maxBytes: 16 * 1024,
      handler: (b: EcuCertRequest) => ks.ecuCert(b),
    },
    'tester-get': {
      request: obj(['cn'], { cn: NAME }),
      handler: (b: { cn: string }) => ks.tester(b.cn),
    },
    'tester-put': {
      request: obj(['cn', 'station', 'pools', 'expiresAt', 'revoked'], {
        cn: NAME,
        station: NAME,
        pools: { type: 'array', items: POOL, maxItems: 64 },
        expiresAt: TIME,
        revoked: { type: 'boolean' },
        certProfiles: { type: 'array', items: CERT_PROFILE, maxItems: 64 },
      }),
      handler: async (b: TesterRecord) => {
        await ks.putTester(b);
        return { ok: true };
      },
    },
    'tester-list': {
      request: obj([], {}),
      handler: () => ({ items: [...ks.dbs.testers.getRange({ limit: 10_000 })].map((e) => e.value) }),
    },
    'tester-revoke': {
      request: obj(['cn'], { cn: NAME }),
      handler: async (b: { cn: string }) => {
        await ks.revokeTester(b.cn);
        return { ok: true };
      },
    },
    'pool-set': {
      request: obj(['pool', 'minimum', 'reorder'], { pool: POOL, minimum: count, reorder: { ...count, minimum: 1 }, critical: count }),
      handler: async (b: { pool: string; minimum: number; reorder: number; critical?: number }) => {
        await ks.setPool({ pool: b.pool, minimum: b.minimum, reorder: b.reorder, critical: b.critical ?? Math.floor(b.minimum / 4) });
        return { ok: true };
      },
    },
    handover: {
      request: obj(['to', 'by', 'reason'], { packageId: ID, pool: POOL, uid: hex(15), to: NAME, by: NAME, reason: REASON }),
      handler: (b: { packageId?: string; pool?: string; uid?: string; to: string; by: string; reason: string }) => ks.handover(b),
    },
    'import-chunk': {
      request: obj(['chunk'], { chunk: { type: 'object' } }),
      maxBytes: MAX_CHUNK_BYTES + 16 * 1024,
      handler: (b: { chunk: unknown }) => ks.importer.importChunk(b.chunk),
    },
    'outbox-peek': {
      request: obj([], { limit: { type: 'integer', minimum: 1, maximum: 5000, default: 500 }, after: { type: 'string', pattern: '^[0-9]{16}$' } }),
      handler: async (b: { limit: number; after?: string }) => ({ items: await ks.outboxPeek(b.limit, b.after) }),
    },
    'outbox-file': {
      request: obj([], { limit: { type: 'integer', minimum: 1, maximum: 5000, default: 5000 } }),
      handler: (b: { limit: number }) => ks.outboxFile(b.limit),
    },
    'outbox-reject': {
      request: obj(['items'], {
        items: {
          type: 'array',
          maxItems: 5000,
          items: obj(['id', 'code', 'detail'], { id: OUTBOX_ID, code: { type: 'string', pattern: '^[A-Z][A-Z0-9_]{0,63}$' }, detail: { type: 'string', maxLength: 1000 } }),
        },
      }),
      maxBytes: 5000 * 1200,
      handler: (b: { items: { id: string; code: string; detail: string }[] }) => ks.outboxReject(b.items),
    },
    'audit-anchor': {
      request: obj(['anchors'], {
        anchors: {
          type: 'array',
          maxItems: 100,
          items: obj(['boxId', 'seq', 'auditSeq', 'head', 'at', 'sig', 'cert'], {
            boxId: NAME,
            seq: { type: 'integer', minimum: 1 },
            auditSeq: { type: 'integer', minimum: 1 },
            head: hex(32),
            at: { type: 'string', maxLength: 40 },
            sig: { type: 'string', maxLength: 200 },
            cert: { type: 'string', maxLength: 8192 },
          }),
        },
      }),
      maxBytes: 100 * 9 * 1024,
      handler: (b: { anchors: import('./audit-anchor.js').SignedAnchor[] }) => ks.auditAnchor(b.anchors),
    },
    'outbox-rejected': {
      request: obj([], { limit: { type: 'integer', minimum: 1, maximum: 5000, default: 500 } }),
      handler: (b: { limit: number }) => ({ items: ks.outboxRejected(b.limit) }),
    },
    'outbox-ack': {
      request: obj(['ids'], { ids: { type: 'array', maxItems: 5000, items: { type: 'string', pattern: '^[0-9]{16}$' } } }),
      maxBytes: 5000 * 24,
      handler: (b: { ids: string[] }) => ks.outboxAck(b.ids),
    },
    'outbox-put': {
      request: obj(['kind', 'body'], { kind: { enum: ['alert', 'event'] }, body: { type: 'object', maxProperties: 32 } }),
      maxBytes: 8192,
      handler: async (b: { kind: 'alert' | 'event'; body: Record<string, unknown> }) => ({ id: await ks.outboxPut(b.kind, b.body) }),
    },
    checkpoint: {
      request: obj([], {}),
      handler: async () => {
        await ks.checkpoint();
        return { ok: true };
      },
    },
    ...unlockKeystoreVerbs(ks),
  };
}

export const KEYSTORE_CALLERS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  'tester-api': ['reserve', 'confirm', 'fail', 'history', 'stats', 'ecu-cert', 'tester-get'],
  uplink: ['import-chunk', 'outbox-peek', 'outbox-file', 'outbox-ack', 'outbox-reject', 'audit-anchor', 'outbox-put', 'stats', 'pool-set', 'tester-revoke', 'checkpoint'],
  sentinel: ['stats', 'outbox-put', 'tester-list', 'outbox-rejected'],
  pksctl: ['stats', 'outbox-rejected', 'import-chunk', 'tester-put', 'tester-get', 'tester-list', 'tester-revoke', 'pool-set', 'checkpoint', 'history', 'handover'],
  unlock: UNLOCK_KEYSTORE_VERBS,
});


