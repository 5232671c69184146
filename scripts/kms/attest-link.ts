// The KMS's side of attestation over MQTT (issue 12; messages in appliance/contracts/attestation.ts):
// takes one `attest` message of a box, runs the step with the Attestor (attest.ts) and returns the
// body of the signed `attest-answer`. A quote counts only with the vault's gate report, signed by
// the box's HSM identity key (registered with the box) over this nonce and saying "open": the
// quote proves the boot (PCR 15 is the boot's measurement), the report proves the application
// has not changed since, and the uplink that carries both can forge neither.
import { createPublicKey, verify } from 'node:crypto';
import { compileChecker } from '../../appliance/config.js';
import { asPksError, pksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import { MEASUREMENT_LOG_MAX, gateReportText, type GateReport } from '../../appliance/contracts/attestation.js';
import { ID, b64 } from '../../appliance/schema.js';
import type { Attestor } from './attest.js';

const HEX32 = { type: 'string', pattern: '^[0-9a-f]{64}$' } as const;
/** pks-measure's PCR 15 log as the box has it (MEASUREMENT_LOG_MAX in the contract) */
const MEASUREMENT_LOG = b64(MEASUREMENT_LOG_MAX);
const base = { type: { enum: ['enroll', 'activate', 'challenge', 'quote'] }, requestId: ID } as const;
type Msg =
  | { type: 'enroll'; requestId: string; ekCert: string; akPublic: string; pcr15: string; measurementLog?: string }
  | { type: 'activate'; requestId: string; secret: string }
  | { type: 'challenge'; requestId: string }
  | { type: 'quote'; requestId: string; nonce: string; message: string; signature: string; pcrs: string; eventLog: string; measurementLog?: string; gate: GateReport };

const checkMsg = compileChecker<Msg>(
  {
    type: 'object',
    required: ['type', 'requestId'],
    oneOf: [
      { additionalProperties: false, required: ['ekCert', 'akPublic', 'pcr15'], properties: { ...base, type: { const: 'enroll' }, ekCert: b64(4096), akPublic: b64(1024), pcr15: HEX32, measurementLog: MEASUREMENT_LOG } },
      { additionalProperties: false, required: ['secret'], properties: { ...base, type: { const: 'activate' }, secret: b64(64) } },
      { additionalProperties: false, properties: { ...base, type: { const: 'challenge' } } },
      {
        additionalProperties: false,
        required: ['nonce', 'message', 'signature', 'pcrs', 'eventLog', 'gate'],
        properties: {
          ...base,
          type: { const: 'quote' },
          nonce: HEX32,
          message: b64(2048),
          signature: b64(1024),
          pcrs: b64(16 * 32),
          eventLog: b64(128 * 1024),
          measurementLog: MEASUREMENT_LOG,
          gate: {
            type: 'object',
            additionalProperties: false,
            required: ['open', 'at', 'sig'],
            properties: { open: { type: 'boolean' }, code: { type: 'string', maxLength: 64 }, reason: { type: 'string', maxLength: 300 }, at: { type: 'string', maxLength: 40 }, sig: b64(64) },
          },
        },
      },
    ],
  },
  'attest message',
);

/** requestId of a message, for an answer to a refused one (null: nothing to answer to). */
export function peekRequestId(raw: Buffer): string | null {
  try {
    const id = (JSON.parse(raw.toString('utf8')) as { requestId?: unknown }).requestId;
    return typeof id === 'string' && /^[A-Za-z0-9][A-Za-z0-9._:-]{0,95}$/.test(id) ? id : null;
  } catch {
    return null;
  }
}

/** The vault's verdict: signed by this box's identity key over this nonce, and open. */
export function checkGateReport(boxId: string, identitySpkiB64: string, nonce: Buffer, g: GateReport): void {
  const key = createPublicKey({ key: Buffer.from(identitySpkiB64, 'base64'), format: 'der', type: 'spki' });
  const ok = verify('sha256', gateReportText(boxId, nonce, g), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(g.sig, 'base64'));
  if (!ok) throw pksError('PKS_ATTEST_UNTRUSTED', "the gate report is not signed by the box's vault");
  if (!g.open) throw pksError('PKS_ATTEST_UNTRUSTED', 'the box reports its application or configuration changed (vault closed, PKS_TAMPERED)');
}

/** One message → the answer body (never throws: a refusal is an answer with a coded error). */
export async function onAttestMessage(a: Attestor, boxId: string, identity: string | undefined, raw: Buffer): Promise<Record<string, unknown> | null> {
  const requestId = peekRequestId(raw);
  try {
    const m: Msg = checkMsg(parseJsonOr('PKS_BAD_REQUEST', 'attest message', raw));
    switch (m.type) {
      case 'enroll':
        return { requestId, credential: (await a.beginEnroll(boxId, Buffer.from(m.ekCert, 'base64'), Buffer.from(m.akPublic, 'base64'), m.pcr15, m.measurementLog === undefined ? undefined : Buffer.from(m.measurementLog, 'base64'))).toString('base64') };
      case 'activate':
        await a.finishEnroll(boxId, Buffer.from(m.secret, 'base64'));
        return { requestId, ok: true, state: 'enrolled' };
      case 'challenge':
        return { requestId, nonce: a.challenge(boxId).toString('hex') };
      case 'quote': {
        const nonce = Buffer.from(m.nonce, 'hex');
        await a.verify(
          boxId,
          {
            nonce,
            message: Buffer.from(m.message, 'base64'),
            signature: Buffer.from(m.signature, 'base64'),
            pcrs: Buffer.from(m.pcrs, 'base64'),
            eventLog: Buffer.from(m.eventLog, 'base64'),
            ...(m.measurementLog === undefined ? {} : { measurementLog: Buffer.from(m.measurementLog, 'base64') }),
          },
          () => {
            if (!identity) throw pksError('PKS_ATTEST_UNTRUSTED', 'box is not registered');
            checkGateReport(boxId, identity, nonce, m.gate);
          },
        );
        return { requestId, ok: true, state: a.stateOf(boxId) };
      }
    }
  } catch (err) {
    const e = asPksError(err);
    if (requestId === null) return null;
    // only our own coded, fixed reasons go back (CVE-2023-38201): never internals
    const known = ['PKS_ATTEST_UNTRUSTED', 'PKS_ATTEST_STALE', 'PKS_ATTEST_REQUIRED', 'PKS_BAD_REQUEST', 'PKS_BAD_HEX', 'PKS_RATE_LIMITED'].includes(e.code);
    return { requestId, ok: false, state: a.stateOf(boxId), error: known ? { code: e.code, detail: e.detail ?? e.code } : { code: 'PKS_ATTEST_UNTRUSTED', detail: 'evidence does not verify' } };
  }
}
