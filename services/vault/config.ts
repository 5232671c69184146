// The vault's config: which PKCS#11 module and token, where the PIN comes from, and who may
// call which verb. The PIN itself is never in the config: it is the systemd credential
// `hsm-pin` (or, for development, the file named by hsm.pinFile).
import { CERT_PROFILE, HSM_TOKEN, NAME, PATH } from '../../appliance/schema.js';
import { TOKEN_KEY_NAME } from './unlock-keys.js';
import { MEASUREMENT_SIGNING_KEY_PATH } from '../../appliance/contracts/measurement.js';
import type { EcuCaConfig } from './signed-structures.js';

export interface VaultConfig {
  boxId: string;
  hsm: { module: string; tokenLabel: string; pinFile?: string; softhsm2Conf?: string };
  /** ECU certificates: the issuing CA certificate over the HSM key and the profiles (issue 9) */
  ecuCa?: EcuCaConfig;
  ipc: { callers?: Record<string, string[]>; groups?: Record<string, number> };
  /** the unlock service's HSM keys: the user CA and one token key per name (OEM or ECU type) */
  unlock?: { tokenKeys: string[] };
  /**
   * issue 12, the application gate (vault-gate.ts): no key operation until the live
   * measurement matches the record signed by the identity key. Absent: no gate (dev stack).
   */
  gate?: { recordFile: string; liveFile: string; writerUid: number; maxAgeSeconds: number; everySeconds: number; manifestKeyFile: string };
}

export const vaultSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['boxId', 'hsm'],
  properties: {
    boxId: NAME,
    hsm: HSM_TOKEN,
    ecuCa: {
      type: 'object',
      additionalProperties: false,
      required: ['cert', 'profiles'],
      properties: {
        cert: PATH,
        subject: { type: 'string', minLength: 4, maxLength: 256, default: 'CN=PKS ECU issuing CA' },
        profiles: {
          type: 'object',
          maxProperties: 256,
          propertyNames: CERT_PROFILE,
          additionalProperties: {
            type: 'object',
            additionalProperties: false,
            required: ['subjectTemplate'],
            properties: {
              validityDays: { type: 'integer', minimum: 1, maximum: 36500, default: 7300 },
              subjectTemplate: { type: 'string', minLength: 6, maxLength: 512, pattern: '\\{uid\\}' },
              extendedKeyUsage: { type: 'array', minItems: 1, maxItems: 2, uniqueItems: true, items: { enum: ['clientAuth', 'serverAuth'] }, default: ['clientAuth'] },
            },
          },
        },
      },
    },
    gate: {
      type: 'object',
      additionalProperties: false,
      properties: {
        recordFile: { ...PATH, default: '/var/lib/pks/vault/gate-record.json' },
        liveFile: { ...PATH, default: '/run/pks/live-measurements.json' },
        writerUid: { type: 'integer', minimum: 0, maximum: 4294967294, default: 0 },
        maxAgeSeconds: { type: 'integer', minimum: 5, maximum: 3600, default: 300 },
        everySeconds: { type: 'number', minimum: 0.2, maximum: 60, default: 5 },
        // the image signing key that signs measurement manifests; inside the measured pks-app tree
        manifestKeyFile: { ...PATH, default: MEASUREMENT_SIGNING_KEY_PATH },
      },
    },
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
