// The unlock service's config: its listener for people (its own port, not the tester API's),
// the server certificate (key: the systemd credential `tls-key`), which ECU types it serves with
// which HSM token key, the roles (permissions per ECU type, lifetimes, four eyes) and the
// per-user limits. Roles default to appliance/unlock-permissions.ts DEFAULT_ROLES.
import { readFileSync } from 'node:fs';
import { readCredential, type DeepReadonly } from '../../appliance/config.js';
import { pksError } from '../../appliance/errors.js';
import { NAME, PATH, SOCKET_GROUPS } from '../../appliance/schema.js';
import { DEFAULT_ROLES, PERMISSION_NAMES, type RoleSpec } from '../../appliance/unlock-permissions.js';

const int = (minimum: number, maximum: number, dflt: number) => ({ type: 'integer', minimum, maximum, default: dflt }) as const;
const ECU_TYPE_KEY = '^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$';

export interface UnlockConfig {
  boxId: string;
  listen: { host: string; port: number };
  tls: { cert: string; keyFile?: string; keepAliveSeconds: number };
  /** ECU type → the vault token key that signs its tokens (one per OEM or per ECU type) */
  ecuTypes: Record<string, { tokenKey: string }>;
  roles: Record<string, RoleSpec>;
  certificates: { validityDays: number };
  limits: { tokensPerMinute: number; tokenBurst: number; requestsPerSecond: number; requestBurst: number };
  ipc: { timeoutMs: number; groups?: Record<string, number> };
}

const ROLE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['permissions', 'maxTokenSeconds', 'maxAccessDays', 'highPrivilege'],
  properties: {
    permissions: {
      type: 'object',
      propertyNames: { pattern: `${ECU_TYPE_KEY}|^\\*$` },
      additionalProperties: { type: 'array', maxItems: 64, uniqueItems: true, items: { enum: PERMISSION_NAMES } },
    },
    maxTokenSeconds: { type: 'integer', minimum: 0, maximum: 7 * 86_400 },
    maxAccessDays: { type: 'integer', minimum: 1, maximum: 5 * 365 },
    highPrivilege: { type: 'boolean' },
    admin: { type: 'boolean' },
  },
} as const;

export const unlockSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['boxId', 'tls', 'ecuTypes'],
  properties: {
    boxId: NAME,
    listen: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        host: { type: 'string', minLength: 1, maxLength: 253, pattern: '^[0-9A-Za-z.:_-]+$', default: '::' },
        port: int(0, 65535, 9443),
      },
    },
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['cert'],
      properties: { cert: PATH, keyFile: PATH, keepAliveSeconds: int(5, 3600, 65) },
    },
    ecuTypes: {
      type: 'object',
      minProperties: 1,
      maxProperties: 256,
      propertyNames: { pattern: ECU_TYPE_KEY },
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        required: ['tokenKey'],
        properties: { tokenKey: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,15}$' } },
      },
    },
    roles: {
      type: 'object',
      minProperties: 1,
      maxProperties: 32,
      propertyNames: { pattern: '^[A-Z][A-Z0-9_]{0,31}$' },
      additionalProperties: ROLE_SCHEMA,
      default: structuredClone(DEFAULT_ROLES),
    },
    certificates: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { validityDays: int(1, 400, 365) },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        tokensPerMinute: int(1, 100_000, 10),
        tokenBurst: int(1, 100_000, 20),
        requestsPerSecond: int(1, 100_000, 20),
        requestBurst: int(1, 100_000, 60),
      },
    },
    ipc: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        timeoutMs: int(100, 60_000, 5000),
        groups: SOCKET_GROUPS,
      },
    },
  },
} as const;

export interface UnlockTls {
  cert: string;
  key: string;
}

export function loadUnlockTls(cfg: DeepReadonly<UnlockConfig>): UnlockTls {
  let cert: string;
  try {
    cert = readFileSync(cfg.tls.cert, 'utf8');
  } catch (e) {
    throw pksError('PKS_CONFIG_UNREADABLE', `tls.cert ${cfg.tls.cert}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  if (!cert.includes('-----BEGIN CERTIFICATE-----')) throw pksError('PKS_CONFIG_INVALID', 'tls.cert is not a PEM certificate');
  return { cert, key: readCredential('tls-key', cfg.tls.keyFile) + '\n' };
}
