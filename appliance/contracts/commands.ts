// Ops commands to a box (v1). Central ops sign them with the ops key whose public half was
// pinned on the box at setup; the KMS only relays them, so neither the KMS nor the broker can
// forge one. Envelope (one MQTT message on pks/v1/box/<boxCN>/cmd):
//   { "payload": "<JSON text>", "sig": "<base64 DER ECDSA-P256-SHA256 over the payload bytes>" }
// Payload:
//   { "v": 1, "seq": <integer, strictly increasing per box>, "expiresAt": "<ISO time>",
//     "boxId": "<box CN>", "command": "set-quota"|"set-schedule"|"sync-now"|"revoke-tester"|
//     "rotate-cert"|"release-stock"|"unlock-onboard"|"unlock-approve"|"unlock-revoke", "args": {...} }
// rotate-cert takes no arguments: the box makes its new key itself (identity.ts) and reports
// on cmd-result only once it is connected with the new certificate.
// The box refuses (coded error, published on cmd-result, logged, alerted) anything unsigned,
// badly signed, expired, with a seq not above the last one it accepted (replay), addressed to
// another box, or malformed; a refused command changes nothing, not even the last seq.
import { createHash, createPublicKey, createSign, createVerify, type KeyObject } from 'node:crypto';
import { compileChecker } from '../config.js';
import { pksError } from '../errors.js';
import { parseJsonOr } from '../json.js';
import { NAME, POOL } from '../schema.js';

// central ops' unlock commands, relayed by the uplink to the unlock service (services/uplink/unlock-commands.ts)
export const UNLOCK_COMMANDS = ['unlock-onboard', 'unlock-approve', 'unlock-revoke'] as const;
export type UnlockCommandName = (typeof UNLOCK_COMMANDS)[number];

const ROLE = { type: 'string', pattern: '^[A-Z][A-Z0-9_]{0,31}$' } as const;
const REASON = { type: 'string', maxLength: 200, pattern: '^[\\x20-\\x7e]*$' } as const;

export const UNLOCK_ARG_SCHEMAS: Record<UnlockCommandName, Record<string, unknown>> = {
  'unlock-onboard': {
    type: 'object',
    additionalProperties: false,
    required: ['cn', 'role', 'accessSeconds'],
    properties: { cn: NAME, role: ROLE, accessSeconds: { type: 'integer', minimum: 1, maximum: 5 * 365 * 86_400 } },
  },
  'unlock-approve': { type: 'object', additionalProperties: false, required: ['id'], properties: { id: { type: 'string', pattern: '^[a-z0-9]{8,40}$' } } },
  'unlock-revoke': { type: 'object', additionalProperties: false, required: ['cn'], properties: { cn: NAME, reason: REASON } },
};

export const COMMANDS = ['set-quota', 'set-schedule', 'sync-now', 'revoke-tester', 'rotate-cert', 'release-stock', ...UNLOCK_COMMANDS] as const;
export type CommandName = (typeof COMMANDS)[number];

export interface CommandPayload {
  v: 1;
  seq: number;
  expiresAt: string;
  boxId: string;
  command: CommandName;
  args: Record<string, unknown>;
}
export interface SignedCommand {
  payload: string;
  sig: string;
}

/** Longest validity a command may claim: a captured command is worthless after this. */
export const MAX_COMMAND_TTL_MS = 7 * 24 * 3600 * 1000;
export const MAX_COMMAND_BYTES = 16 * 1024;

const envelopeSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['payload', 'sig'],
  properties: {
    payload: { type: 'string', minLength: 2, maxLength: MAX_COMMAND_BYTES },
    sig: { type: 'string', minLength: 8, maxLength: 200, pattern: '^[A-Za-z0-9+/]*={0,2}$' },
  },
} as const;

const payloadSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['v', 'seq', 'expiresAt', 'boxId', 'command', 'args'],
  properties: {
    v: { const: 1 },
    seq: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
    expiresAt: { type: 'string', format: 'date-time' },
    boxId: NAME,
    command: { enum: COMMANDS },
    args: { type: 'object' },
  },
} as const;

const CRON = { type: 'string', minLength: 9, maxLength: 100, pattern: '^[0-9*/,\\- A-Za-z?]+$' } as const;

/** Each command's arguments, checked after the signature (so junk never reaches a handler). */
const argSchemas: Record<CommandName, Record<string, unknown>> = {
  'set-quota': {
    type: 'object',
    additionalProperties: false,
    required: ['pool', 'minimum', 'reorder'],
    properties: {
      pool: POOL,
      minimum: { type: 'integer', minimum: 0, maximum: 100_000_000 },
      reorder: { type: 'integer', minimum: 0, maximum: 100_000_000 },
      critical: { type: 'integer', minimum: 0, maximum: 100_000_000 },
    },
  },
  'set-schedule': {
    type: 'object',
    additionalProperties: false,
    required: ['mode'],
    properties: {
      mode: { enum: ['always', 'windows'] },
      cron: CRON,
      windowSeconds: { type: 'integer', minimum: 1, maximum: 86_400 },
    },
  },
  'sync-now': { type: 'object', additionalProperties: false, properties: {} },
  'revoke-tester': { type: 'object', additionalProperties: false, required: ['cn'], properties: { cn: NAME } },
  // the box makes the new key itself (identity.ts): ops never handles a private key
  'rotate-cert': { type: 'object', additionalProperties: false, properties: {} },
  // issue 16 §2: rebalancing; the box takes the keys out for good, the KMS sends as many to `to`
  'release-stock': { type: 'object', additionalProperties: false, required: ['pool', 'count', 'to'], properties: { pool: POOL, count: { type: 'integer', minimum: 1, maximum: 100_000 }, to: NAME } },
  ...UNLOCK_ARG_SCHEMAS,
};

const checkEnvelope = compileChecker<SignedCommand>(envelopeSchema, 'command', 'PKS_COMMAND_INVALID');
const checkPayload = compileChecker<CommandPayload>(payloadSchema, 'command payload', 'PKS_COMMAND_INVALID');
const checkArgs = Object.fromEntries(
  COMMANDS.map((c) => [c, compileChecker<Record<string, unknown>>(argSchemas[c], `${c} args`, 'PKS_COMMAND_INVALID')]),
) as Record<CommandName, (d: unknown) => Record<string, unknown>>;

/** A short reference of any raw message, so even an unparseable command's refusal can be matched. */
export const commandRef = (raw: Buffer | string): string => createHash('sha256').update(raw).digest('hex').slice(0, 16);

/** Ops side (pks-fleet, tests): signs a payload with the ops private key. */
export function signCommand(payload: CommandPayload, opsKey: KeyObject | string): SignedCommand {
  const text = JSON.stringify(payload);
  return { payload: text, sig: createSign('sha256').update(text).sign(opsKey).toString('base64') };
}

export function loadOpsKey(pem: string): KeyObject {
  try {
    const k = createPublicKey(pem);
    if (k.asymmetricKeyType !== 'ec') throw new Error('not EC');
    return k;
  } catch {
    throw pksError('PKS_CONFIG_INVALID', 'ops public key is not an EC public key in PEM');
  }
}

export interface VerifyOptions {
  opsKey: KeyObject;
  boxId: string;
  /** the seq of the last command this box accepted (0 for none) */
  lastSeq: number;
  now?: Date;
}

/**
 * Box side: the checks in the order that leaks least: shape, signature, then the payload
 * (shape, addressee, expiry, replay, arguments). Returns the payload only if all hold.
 */
export function verifyCommand(raw: Buffer | string, o: VerifyOptions): CommandPayload {
  const data = parseJsonOr('PKS_COMMAND_INVALID', 'command', raw, MAX_COMMAND_BYTES * 2);
  if (data && typeof data === 'object' && !('sig' in data)) throw pksError('PKS_COMMAND_SIGNATURE', 'command is not signed');
  const env = checkEnvelope(data);
  let ok = false;
  try {
    ok = createVerify('sha256').update(env.payload).verify(o.opsKey, Buffer.from(env.sig, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) throw pksError('PKS_COMMAND_SIGNATURE', 'signature does not verify with the pinned ops key');
  const cmd = checkPayload(parseJsonOr('PKS_COMMAND_INVALID', 'payload', env.payload));
  if (cmd.boxId !== o.boxId) throw pksError('PKS_COMMAND_INVALID', `command is for ${cmd.boxId}`);
  const now = (o.now ?? new Date()).getTime();
  const exp = Date.parse(cmd.expiresAt);
  if (!(exp > now)) throw pksError('PKS_COMMAND_STALE', 'command has expired');
  if (exp - now > MAX_COMMAND_TTL_MS) throw pksError('PKS_COMMAND_INVALID', 'command expiry is too far ahead');
  if (cmd.seq <= o.lastSeq) throw pksError('PKS_COMMAND_STALE', `seq ${cmd.seq} is not above the last accepted ${o.lastSeq}`);
  cmd.args = checkArgs[cmd.command](cmd.args);
  return cmd;
}

/** Best-effort seq of a refused command, for the cmd-result (never trusted for anything else). */
export function peekSeq(raw: Buffer | string): number | undefined {
  try {
    const env = JSON.parse(raw.toString()) as { payload?: unknown };
    const p = JSON.parse(String(env.payload)) as { seq?: unknown };
    return Number.isSafeInteger(p.seq) ? (p.seq as number) : undefined;
  } catch {
    return undefined;
  }
}
