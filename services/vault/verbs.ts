// The vault's table of verbs: the whole of what any other process can ask of the HSM side.
// Each verb has a schema with exact sizes and a byte limit; named keys are used, never
// returned. Which caller may use which verb is decided by DEFAULT_CALLERS (or the config).
import type { VerbTable } from '../../appliance/ipc.js';
import { ID, POOL, b64, hex } from '../../appliance/schema.js';
import type { PublicKeyName, SheRequest, SignKey, Vault } from './vault.js';
import { UNLOCK_CALLER_VERBS, unlockVerbs } from './unlock-verbs.js';

const she = {
  batchId: ID,
  pool: POOL,
  recordId: ID,
  batchKey: b64(128),
  record: b64(256),
  auth: b64(256),
  uid: hex(15),
  keyId: { type: 'integer', minimum: 1, maximum: 15 },
  authKeyId: { type: 'integer', minimum: 1, maximum: 15 },
  counter: { type: 'integer', minimum: 0, maximum: 0x0fffffff },
  flags: { type: 'integer', minimum: 0, maximum: 31 },
} as const;
const sheRequired = Object.keys(she);

type SheBody = Record<keyof typeof she, string | number>;

const toShe = (b: SheBody): SheRequest => ({
  batchId: b.batchId as string,
  pool: b.pool as string,
  recordId: b.recordId as string,
  batchKey: Buffer.from(b.batchKey as string, 'base64'),
  record: Buffer.from(b.record as string, 'base64'),
  auth: Buffer.from(b.auth as string, 'base64'),
  uid: Buffer.from(b.uid as string, 'hex'),
  keyId: b.keyId as number,
  authKeyId: b.authKeyId as number,
  counter: b.counter as number,
  flags: b.flags as number,
});

const signVerb = (vault: Vault, key: SignKey) => ({
  request: { type: 'object', additionalProperties: false, required: ['data'], properties: { data: b64(16 * 1024) } },
  maxBytes: 32 * 1024,
  handler: (b: { data: string }) => ({ key, sig: vault.sign(key, Buffer.from(b.data, 'base64')).toString('base64') }),
});

export function vaultVerbs(vault: Vault): VerbTable {
  return {
    status: {
      request: { type: 'object', additionalProperties: false, properties: {} },
      handler: () => vault.status(),
    },
    'public-key': {
      request: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: { name: { enum: ['identity', 'transport', 'audit', 'ecu-ca'] } },
      },
      handler: (b: { name: PublicKeyName }) => ({ name: b.name, spki: vault.publicKey(b.name).toString('base64') }),
    },
    'sign-identity': signVerb(vault, 'identity'),
    'sign-audit': signVerb(vault, 'audit'),
    'sign-ecu-ca': signVerb(vault, 'ecu-ca'),
    'batch-open': {
      request: {
        type: 'object',
        additionalProperties: false,
        required: ['batchId', 'epk'],
        properties: { batchId: ID, epk: b64(200) },
      },
      handler: (b: { batchId: string; epk: string }) => ({
        batchKey: vault.openBatch(Buffer.from(b.epk, 'base64'), b.batchId).toString('base64'),
      }),
    },
    'she-prepare': {
      request: { type: 'object', additionalProperties: false, required: sheRequired, properties: she },
      maxBytes: 4096,
      handler: (b: SheBody) => {
        const m = vault.shePrepare(toShe(b));
        return { m1: m.m1.toString('hex'), m2: m.m2.toString('hex'), m3: m.m3.toString('hex') };
      },
    },
    'she-verify': {
      request: {
        type: 'object',
        additionalProperties: false,
        required: [...sheRequired, 'm4', 'm5'],
        properties: { ...she, m4: hex(32), m5: hex(16) },
      },
      maxBytes: 4096,
      handler: (b: SheBody & { m4: string; m5: string }) => ({
        ok: vault.sheVerify(toShe(b), Buffer.from(b.m4, 'hex'), Buffer.from(b.m5, 'hex')),
      }),
    },
    'record-seal': {
      request: { type: 'object', additionalProperties: false, required: ['id', 'data'], properties: { id: ID, data: b64(4096) } },
      maxBytes: 8192,
      handler: (b: { id: string; data: string }) => ({ blob: vault.seal(b.id, Buffer.from(b.data, 'base64')).toString('base64') }),
    },
    'record-open': {
      request: { type: 'object', additionalProperties: false, required: ['id', 'blob'], properties: { id: ID, blob: b64(4200) } },
      maxBytes: 8192,
      handler: (b: { id: string; blob: string }) => ({ data: vault.open(b.id, Buffer.from(b.blob, 'base64')).toString('base64') }),
    },
    ...unlockVerbs(vault),
  };
}

/**
 * Who may ask what. The keystore issues and verifies SHE packages and signs audit
 * checkpoints; the tester API signs ECU certificates; the uplink signs with the box identity;
 * the sentinel and pksctl only look. record-open is for nobody by default: what is sealed
 * for storage is opened inside the vault's own verbs.
 */
export const DEFAULT_CALLERS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  keystore: ['status', 'public-key', 'batch-open', 'she-prepare', 'she-verify', 'sign-audit', 'record-seal'],
  'tester-api': ['status', 'public-key', 'sign-ecu-ca'],
  uplink: ['status', 'public-key', 'sign-identity', 'sign-audit'],
  sentinel: ['status'],
  pksctl: ['status', 'public-key', 'unlock-public-key'],
  unlock: UNLOCK_CALLER_VERBS,
});
