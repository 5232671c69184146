// The keystore's config: where LMDB lives, the pinned KMS CA, pools and their quotas, and
// the audit checkpoint cadence.
import { NAME, POOL, SOCKET_GROUPS } from '../../appliance/schema.js';

export interface KeystoreConfig {
  boxId: string;
  dataDir: string;
  kmsCa: string;
  mapSizeMb: number;
  pools: { pool: string; minimum: number; reorder: number; critical?: number }[];
  audit: { checkpointEvery: number; checkpointSeconds: number };
  reservationTtlHours: number;
  /** how often abandoned reservations are swept (burned) */
  sweepSeconds: number;
  /** quota.ts: open reservations per tester, new keys per hour per tester and per pool */
  quotas: { openPerTester: number; testerPerHour: number; poolPerHour: number };
  ipc: { groups?: Record<string, number> };
}

const count = { type: 'integer', minimum: 0, maximum: 100_000_000 } as const;

export const keystoreSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['boxId', 'dataDir', 'kmsCa'],
  properties: {
    boxId: NAME,
    dataDir: { type: 'string', pattern: '^/.{1,255}$' },
    kmsCa: { type: 'string', pattern: '^/.{1,255}$' },
    mapSizeMb: { type: 'integer', minimum: 64, maximum: 1024 * 1024, default: 16384 },
    pools: {
      type: 'array',
      maxItems: 256,
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['pool', 'minimum', 'reorder'],
        properties: { pool: POOL, minimum: count, reorder: { ...count, minimum: 1 }, critical: count },
      },
    },
    audit: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        checkpointEvery: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 1000 },
        checkpointSeconds: { type: 'integer', minimum: 1, maximum: 86_400, default: 60 },
      },
    },
    reservationTtlHours: { type: 'number', minimum: 0.001, maximum: 720, default: 24 },
    sweepSeconds: { type: 'integer', minimum: 1, maximum: 86_400, default: 60 },
    quotas: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        openPerTester: { type: 'integer', minimum: 1, maximum: 10_000, default: 8 },
        testerPerHour: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 500 },
        poolPerHour: { type: 'integer', minimum: 1, maximum: 10_000_000, default: 20_000 },
      },
    },
    ipc: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        groups: SOCKET_GROUPS,
      },
    },
  },
} as const;
