// The vault's config: which PKCS#11 module and token, where the PIN comes from, and who may
// call which verb. The PIN itself is never in the config: it is the systemd credential
// `hsm-pin` (or, for development, the file named by hsm.pinFile).
import { HSM_TOKEN, NAME } from '../../appliance/schema.js';
import { TOKEN_KEY_NAME } from './unlock-keys.js';

export interface VaultConfig {
  boxId: string;
  hsm: { module: string; tokenLabel: string; pinFile?: string; softhsm2Conf?: string };
  ipc: { callers?: Record<string, string[]>; groups?: Record<string, number> };
  /** the unlock service's HSM keys: the user CA and one token key per name (OEM or ECU type) */
  unlock?: { tokenKeys: string[] };
}

export const vaultSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['boxId', 'hsm'],
  properties: {
    boxId: NAME,
    hsm: HSM_TOKEN,
    unlock: {
      type: 'object',
      additionalProperties: false,
      required: ['tokenKeys'],
      properties: { tokenKeys: { type: 'array', minItems: 1, maxItems: 32, uniqueItems: true, items: TOKEN_KEY_NAME } },
    },
    ipc: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        callers: {
          type: 'object',
          propertyNames: { pattern: '^[a-z][a-z0-9-]{0,31}$' },
          additionalProperties: { type: 'array', items: { type: 'string', maxLength: 32 }, maxItems: 32 },
        },
        groups: {
          type: 'object',
          propertyNames: { pattern: '^[a-z][a-z0-9-]{0,31}$' },
          additionalProperties: { type: 'integer', minimum: 0, maximum: 4294967294 },
        },
      },
    },
  },
} as const;
