// Config of the PostgreSQL baseline keystore (benchmarks only): where PostgreSQL listens, the
// pinned KMS CA for batch import, and the pools it serves.
import { NAME, POOL } from '../../../appliance/schema.js';

export interface KeystorePgConfig {
  boxId: string;
  kmsCa: string;
  pools: string[];
  pg: { host: string; port: number; database: string; user: string; poolSize: number };
}

export const keystorePgSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['boxId', 'kmsCa', 'pg'],
  properties: {
    boxId: NAME,
    kmsCa: { type: 'string', pattern: '^/.{1,255}$' },
    pools: { type: 'array', items: POOL, maxItems: 256, default: [] },
    pg: {
      type: 'object',
      additionalProperties: false,
      required: ['host', 'port'],
      properties: {
        // a unix socket directory (absolute path) or a loopback host
        host: { type: 'string', minLength: 1, maxLength: 255 },
        port: { type: 'integer', minimum: 1, maximum: 65535 },
        database: { ...NAME, default: 'postgres' },
        user: { ...NAME, default: 'postgres' },
        poolSize: { type: 'integer', minimum: 1, maximum: 256, default: 32 },
      },
    },
  },
} as const;
