// The vault's table of verbs: the whole of what any other process can ask of the HSM side.
// Each verb has a schema with exact sizes and a byte limit; named keys are used, never
// returned. Which caller may use which verb is decided by DEFAULT_CALLERS (or the config).
import type { VerbTable } from '../../appliance/ipc.js';
import { CERT_PROFILE as PROFILE, ID, POOL, b64, hex } from '../../appliance/schema.js';
import type { PublicKeyName, SheRequest, Vault } from './vault.js';

const HASH = hex(32);
const TIME = { type: 'string', maxLength: 40 } as const;
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
    // typed signing verbs (issue 9): the vault builds what it signs (signed-structures.ts)
    'audit-checkpoint': {
      request: {
        type: 'object',
        additionalProperties: false,
        required: ['seq', 'hash', 'prevSeq', 'prevHash', 'at'],
        properties: { seq: { type: 'integer', minimum: 1 }, hash: HASH, prevSeq: { type: 'integer', minimum: 0 }, prevHash: HASH, at: TIME },
      },
      handler: (b: { seq: number; hash: string; prevSeq: number; prevHash: string; at: string }) => ({ sig: vault.signCheckpoint(b).toString('base64') }),
    },
    'verification-file': {
      request: { type: 'object', additionalProperties: false, required: ['payload'], properties: { payload: { type: 'string', minLength: 2, maxLength: 200 * 1024 } } },
      maxBytes: 256 * 1024,
      handler: (b: { payload: string }) => ({ sig: vault.signVerificationFile(b.payload).toString('base64') }),
    },
    'ecu-cert-issue': {
      request: {
        type: 'object',
        additionalProperties: false,
        required: ['uid', 'spki', 'profile', 'serial'],
        properties: { uid: hex(15), spki: b64(200), profile: PROFILE, serial: hex(16) },
      },
      handler: (b: { uid: string; spki: string; profile: string; serial: string }) =>
        vault.issueEcuCertificate({ uid: b.uid.toLowerCase(), spki: Buffer.from(b.spki, 'base64'), profile: b.profile, serial: b.serial.toLowerCase() }),
    },
    'box-csr': {
      request: { type: 'object', additionalProperties: false, required: ['csr'], properties: { csr: { type: 'string', minLength: 64, maxLength: 12 * 1024 } } },
      maxBytes: 16 * 1024,
      handler: async (b: { csr: string }) => ({ endorsement: (await vault.endorseBoxCsr(b.csr)).toString('base64') }),
    },
    'ecu-ca-certificate': {
      request: { type: 'object', additionalProperties: false, properties: { days: { type: 'integer', minimum: 1, maximum: 36500, default: 3650 } } },
      handler: async (b: { days: number }) => ({ certificate: await vault.ecuCaCertificate(b.days) }),
    },
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
    // issue 16 §3: pksctl zeroize, step 2; the vault checks the box named is its own
    zeroize: {
      request: { type: 'object', additionalProperties: false, required: ['boxId', 'confirm'], properties: { boxId: { type: 'string', maxLength: 64 }, confirm: { const: 'destroy-all-keys' } } },
      handler: (b: { boxId: string }) => vault.zeroize(b.boxId),
    },
    ...unlockVerbs(vault),
  };
}

/**
 * Who may ask what. The keystore owns issuance: it issues and verifies SHE packages, has ECU
 * certificates signed once they are on record, signs audit checkpoints and the verification
 * files it packs. The tester API and the uplink face the network: the tester API signs
 * nothing, the uplink only gets the box's own rotate-cert CSR endorsed (checked: this box, a
 * valid P-256 CSR) and the vault's signed gate report for the KMS; the sentinel only looks;
 * pksctl makes the development ECU CA certificate and re-records the application gate (only
 * while it is open); the updater gets a new slot's measurement authorised from a manifest the
 * build signed, and settles it after mark-good or a fallback (vault-gate.ts).
 */
export const DEFAULT_CALLERS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  keystore: ['status', 'public-key', 'batch-open', 'she-prepare', 'she-verify', 'audit-checkpoint', 'verification-file', 'ecu-cert-issue'],
  'tester-api': ['status', 'public-key'],
  uplink: ['status', 'public-key', 'box-csr', 'gate-report'],
  sentinel: ['status'],
  pksctl: ['status', 'public-key', 'ecu-ca-certificate', 'unlock-public-key', 'gate-record', 'zeroize'],
  unlock: UNLOCK_CALLER_VERBS,
  updater: ['status', 'gate-authorise', 'gate-settle'],
});
