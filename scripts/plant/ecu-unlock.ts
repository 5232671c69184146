// The ECU side of an unlock, in the manner of UDS 0x29 (ISO 14229-1:2020 Authentication, the
// APCE flow without certificates): requestChallengeForAuthentication (0x29 0x05) gives a fresh
// nonce; verifyProofOfOwnershipUnidirectional (0x29 0x06) takes the unlock token as the proof
// and opens an unlocked session with exactly the permissions the token grants (and this ECU
// supports). Each challenge takes one attempt; each token opens one session, ever.
// Refusals are UDS negative responses (0x7F 0x29 NRC):
//   0x13 request not well formed           0x24 no challenge outstanding (or it timed out)
//   0x50 token not (yet) valid by the ECU's clock
//   0x56 token for another ECU (UID) or ECU type: out of scope
//   0x57 token signed by a key the ECU was told is revoked
//   0x58 ownership not proven: malformed token, unknown key, bad signature, wrong challenge,
//        or a token already used
//   0x5A nothing of what the token grants is supported here
// Byte-level, so the DoIP/UDS simulator (ecu-uds.ts) can carry it as it is.
import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { decodeToken, tokenKeyId, tokenSignatureValid } from '../../appliance/unlock-token.js';

export const SID_AUTHENTICATION = 0x29;
export const SUB = { deAuthenticate: 0x00, verifyProofOfOwnershipUnidirectional: 0x06, requestChallengeForAuthentication: 0x05, authenticationConfiguration: 0x08 } as const;
export const NRC = {
  subFunctionNotSupported: 0x12,
  incorrectMessageLengthOrInvalidFormat: 0x13,
  requestSequenceError: 0x24,
  certificateVerificationFailedInvalidTimePeriod: 0x50,
  certificateVerificationFailedInvalidScope: 0x56,
  certificateVerificationFailedInvalidCertificate: 0x57,
  ownershipVerificationFailed: 0x58,
  settingAccessRightsFailed: 0x5a,
} as const;
/** authenticationReturnParameter */
export const RETURN = { requestAccepted: 0x00, ownershipVerifiedAuthenticationComplete: 0x12 } as const;
/** algorithmIndicator: the DER OID of ecdsa-with-SHA256 (1.2.840.10045.4.3.2), zero padded to 16 bytes */
export const ALGORITHM_INDICATOR = Buffer.concat([Buffer.from('06082a8648ce3d040302', 'hex'), Buffer.alloc(6)]);
export const CHALLENGE_LEN = 32;
const CHALLENGE_TTL_MS = 60_000;
const CLOCK_SLACK_S = 60;
const USED_MAX = 4096;

export interface UnlockSession {
  tokenId: string;
  permissions: bigint;
  notAfter: number;
  openedAt: number;
}

export interface Refusal {
  nrc: number;
  reason: string;
}

export class UnlockEcu {
  readonly #trust = new Map<string, KeyObject>();
  readonly #revoked = new Set<string>();
  readonly #used = new Set<string>();
  #challenge: { nonce: Buffer; at: number } | null = null;
  session: UnlockSession | null = null;
  /** the last refusal, with the reason a tester would only see as an NRC */
  lastRefusal: Refusal | null = null;

  constructor(
    readonly ecuType: string,
    readonly uid: Buffer,
    trusted: readonly Buffer[],
    /** the permission bits this ECU implements */
    readonly supported: bigint = (1n << 128n) - 1n,
    readonly now: () => number = Date.now,
  ) {
    for (const spki of trusted) this.trustKey(spki);
  }

  /** Adds a verification key (SPKI DER), as the ECU maker burns it in. */
  trustKey(spki: Buffer): void {
    this.#trust.set(tokenKeyId(spki).toString('hex'), createPublicKey({ key: spki, format: 'der', type: 'spki' }));
  }

  /** The signer key id (hex) is revoked: its tokens no longer open anything. */
  revokeKey(keyIdHex: string): void {
    this.#revoked.add(keyIdHex.toLowerCase());
  }

  can(permissionBit: number): boolean {
    const s = this.session;
    return !!s && Math.floor(this.now() / 1000) < s.notAfter && (s.permissions & (1n << BigInt(permissionBit))) !== 0n;
  }

  /** One UDS request (starting with 0x29) in, one response out. */
  handle(req: Buffer): Buffer {
    if (req.length < 2 || req[0] !== SID_AUTHENTICATION) return this.#nrc(NRC.incorrectMessageLengthOrInvalidFormat, 'not an authentication request');
    const sub = req[1]! & 0x7f;
    switch (sub) {
      case SUB.deAuthenticate:
        this.session = null;
        this.#challenge = null;
        return Buffer.from([0x69, SUB.deAuthenticate, 0x10]);
      case SUB.requestChallengeForAuthentication: {
        // communicationConfiguration (1) + algorithmIndicator (16)
        if (req.length !== 2 + 1 + 16) return this.#nrc(NRC.incorrectMessageLengthOrInvalidFormat, 'bad length');
        if (!req.subarray(3, 19).equals(ALGORITHM_INDICATOR)) return this.#nrc(NRC.incorrectMessageLengthOrInvalidFormat, 'algorithm not supported');
        const nonce = randomBytes(CHALLENGE_LEN);
        this.#challenge = { nonce, at: this.now() };
        const len = Buffer.alloc(2);
        len.writeUInt16BE(nonce.length);
        return Buffer.concat([Buffer.from([0x69, SUB.requestChallengeForAuthentication, RETURN.requestAccepted]), ALGORITHM_INDICATOR, len, nonce, Buffer.from([0, 0])]);
      }
      case SUB.verifyProofOfOwnershipUnidirectional: {
        // algorithmIndicator (16) + len (2) + proof + len (2) + challengeClient + len (2) + additional
        if (req.length < 2 + 16 + 2) return this.#nrc(NRC.incorrectMessageLengthOrInvalidFormat, 'bad length');
        if (!req.subarray(2, 18).equals(ALGORITHM_INDICATOR)) return this.#nrc(NRC.incorrectMessageLengthOrInvalidFormat, 'algorithm not supported');
        const pLen = req.readUInt16BE(18);
        const rest = 20 + pLen;
        if (req.length < rest + 4) return this.#nrc(NRC.incorrectMessageLengthOrInvalidFormat, 'bad length');
        const cLen = req.readUInt16BE(rest);
        if (req.length < rest + 2 + cLen + 2) return this.#nrc(NRC.incorrectMessageLengthOrInvalidFormat, 'bad length');
        const aLen = req.readUInt16BE(rest + 2 + cLen);
        if (req.length !== rest + 2 + cLen + 2 + aLen) return this.#nrc(NRC.incorrectMessageLengthOrInvalidFormat, 'bad length');
        const refusal = this.#verify(req.subarray(20, rest));
        if (refusal) return this.#nrc(refusal.nrc, refusal.reason);
        return Buffer.from([0x69, SUB.verifyProofOfOwnershipUnidirectional, RETURN.ownershipVerifiedAuthenticationComplete, 0, 0]);
      }
      default:
        return this.#nrc(NRC.subFunctionNotSupported, `sub-function 0x${sub.toString(16)}`);
    }
  }

  #nrc(nrc: number, reason: string): Buffer {
    if (nrc !== NRC.subFunctionNotSupported) this.lastRefusal = { nrc, reason };
    return Buffer.from([0x7f, SID_AUTHENTICATION, nrc]);
  }

  #verify(proof: Buffer): Refusal | null {
    const ch = this.#challenge;
    // one attempt per challenge: a wrong guess costs a new challenge round
    this.#challenge = null;
    const t = this.now();
    if (!ch || t - ch.at > CHALLENGE_TTL_MS) return { nrc: NRC.requestSequenceError, reason: 'no challenge outstanding' };
    let tok;
    try {
      tok = decodeToken(proof);
    } catch (e) {
      return { nrc: NRC.ownershipVerificationFailed, reason: `malformed token: ${(e as Error).message}` };
    }
    const keyId = tok.keyId.toString('hex');
    if (this.#revoked.has(keyId)) return { nrc: NRC.certificateVerificationFailedInvalidCertificate, reason: `signer key ${keyId} is revoked` };
    const key = this.#trust.get(keyId);
    if (!key) return { nrc: NRC.ownershipVerificationFailed, reason: `unknown signer key ${keyId}` };
    if (!tokenSignatureValid(tok, key)) return { nrc: NRC.ownershipVerificationFailed, reason: 'signature does not verify' };
    const id = tok.tokenId.toString('hex');
    if (this.#used.has(id)) return { nrc: NRC.ownershipVerificationFailed, reason: 'token already used' };
    if (tok.ecuType !== this.ecuType || !tok.uid.equals(this.uid)) return { nrc: NRC.certificateVerificationFailedInvalidScope, reason: `token is for ${tok.ecuType}/${tok.uid.toString('hex')}` };
    if (!tok.challenge.equals(ch.nonce)) return { nrc: NRC.ownershipVerificationFailed, reason: 'token answers another challenge' };
    const s = Math.floor(t / 1000);
    if (s + CLOCK_SLACK_S < tok.notBefore || s >= tok.notAfter) return { nrc: NRC.certificateVerificationFailedInvalidTimePeriod, reason: `token valid ${tok.notBefore}..${tok.notAfter}, now ${s}` };
    const granted = tok.permissions & this.supported;
    if (granted === 0n) return { nrc: NRC.settingAccessRightsFailed, reason: 'no supported permission granted' };
    this.#used.add(id);
    if (this.#used.size > USED_MAX) this.#used.delete(this.#used.values().next().value as string);
    this.session = { tokenId: id, permissions: granted, notAfter: tok.notAfter, openedAt: t };
    this.lastRefusal = null;
    return null;
  }
}

// ---- the tester's side of the exchange

export const challengeRequest = (): Buffer => Buffer.concat([Buffer.from([SID_AUTHENTICATION, SUB.requestChallengeForAuthentication, 0x00]), ALGORITHM_INDICATOR]);

/** The nonce out of a positive 0x69 0x05 response; throws on a negative one. */
export function challengeOf(res: Buffer): Buffer {
  if (res[0] !== 0x69 || res[1] !== SUB.requestChallengeForAuthentication) throw new Error(`challenge refused: ${res.toString('hex')}`);
  const len = res.readUInt16BE(19);
  return Buffer.from(res.subarray(21, 21 + len));
}

export function proofRequest(token: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(token.length);
  return Buffer.concat([Buffer.from([SID_AUTHENTICATION, SUB.verifyProofOfOwnershipUnidirectional]), ALGORITHM_INDICATOR, len, token, Buffer.from([0, 0, 0, 0])]);
}

/** null for a positive verify response, else the NRC. */
export const nrcOf = (res: Buffer): number | null => (res[0] === 0x7f ? res[2]! : null);
