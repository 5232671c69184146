// Authentication (0x29, ISO 14229-1:2020 section 10.6), the challenge-response the unlock
// token flow rides on: the tester asks for the ECU's challenge (requestChallengeForAuthentication,
// 0x05), has the box sign a token over it, and proves it with verifyProofOfOwnershipUnidirectional
// (0x06), the token as proof of ownership. What the token is and how the ECU checks it is the
// unlock issue's (scripts/plant/ecu-unlock.ts); here are the bytes and the two hooks:
//   tester side: TokenSource(challenge) → token bytes;
//   ECU side:    EcuAuthenticator issues challenges and verifies tokens.
import { pksError } from '../errors.js';
import { SID } from './codec.js';

export const AUTH = Object.freeze({
  deAuthenticate: 0x00,
  verifyCertificateUnidirectional: 0x01,
  requestChallengeForAuthentication: 0x05,
  verifyProofOfOwnershipUnidirectional: 0x06,
  authenticationConfiguration: 0x08,
});
/** authenticationReturnParameter (Table 93) */
export const AUTH_RETURN = Object.freeze({ RequestAccepted: 0x00, GeneralReject: 0x01, APCE: 0x02, ACR_Asymmetric: 0x03, ACR_Symmetric: 0x04, DeAuthenticationSuccessful: 0x10, CertificateVerified_OwnershipVerificationNecessary: 0x11, OwnershipVerified_AuthenticationComplete: 0x12 });
/** 16-byte algorithmIndicator: an OID in DER, zero-padded; ours names the unlock token format */
export const ALGORITHM_UNLOCK_TOKEN: Buffer = Buffer.concat([Buffer.from('060a2b0601040183d37e0101', 'hex'), Buffer.alloc(4)]);

/** Tester side: turns the ECU's challenge into a token (asks the box, a file, an engineer...). */
export type TokenSource = (challenge: Buffer, algorithm: Buffer) => Promise<Buffer>;

/** ECU side: the unlock logic plugs in here (d-unlock's scripts/plant/ecu-unlock.ts). */
export interface EcuAuthenticator {
  challenge(): Buffer;
  /** true when `token` proves ownership for `challenge`; may name the granted role */
  verify(challenge: Buffer, token: Buffer): { ok: boolean; role?: string };
}

const lv = (b: Buffer): Buffer => {
  const l = Buffer.alloc(2);
  l.writeUInt16BE(b.length, 0);
  return Buffer.concat([l, b]);
};

export function requestChallenge(algorithm: Buffer = ALGORITHM_UNLOCK_TOKEN): Buffer {
  return Buffer.concat([Buffer.from([SID.Authentication, AUTH.requestChallengeForAuthentication, 0x00]), algorithm]);
}

export function verifyProof(token: Buffer, algorithm: Buffer = ALGORITHM_UNLOCK_TOKEN): Buffer {
  return Buffer.concat([Buffer.from([SID.Authentication, AUTH.verifyProofOfOwnershipUnidirectional]), algorithm, lv(token), lv(Buffer.alloc(0)), lv(Buffer.alloc(0))]);
}

/** Length-value fields read strictly: a length running past the end is a protocol error. */
export class Reader {
  off = 0;
  constructor(readonly b: Buffer) {}
  take(n: number, what: string): Buffer {
    if (this.off + n > this.b.length) throw pksError('PKS_UDS_PROTOCOL', `${what}: needs ${n} bytes at ${this.off}, message has ${this.b.length}`);
    const s = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return s;
  }
  lv(what: string): Buffer {
    return this.take(this.take(2, what).readUInt16BE(0), what);
  }
  end(what: string): void {
    if (this.off !== this.b.length) throw pksError('PKS_UDS_PROTOCOL', `${what}: ${this.b.length - this.off} bytes left over`);
  }
}

/** Positive answer to requestChallengeForAuthentication: 69 05 rv algo(16) lv(challenge) lv(needed) */
export function parseChallenge(res: Buffer): { returnValue: number; algorithm: Buffer; challenge: Buffer } {
  const r = new Reader(res);
  r.take(2, '0x29 0x05 response');
  const returnValue = r.take(1, 'returnValue')[0]!;
  const algorithm = Buffer.from(r.take(16, 'algorithmIndicator'));
  const challenge = Buffer.from(r.lv('challengeServer'));
  r.lv('neededAdditionalParameter');
  r.end('0x29 0x05 response');
  return { returnValue, algorithm, challenge };
}

export function challengeResponse(returnValue: number, algorithm: Buffer, challenge: Buffer): Buffer {
  return Buffer.concat([Buffer.from([SID.Authentication + 0x40, AUTH.requestChallengeForAuthentication, returnValue]), algorithm, lv(challenge), lv(Buffer.alloc(0))]);
}

/** ECU side parse of verifyProofOfOwnershipUnidirectional */
export function parseProof(req: Buffer): { algorithm: Buffer; proof: Buffer } {
  const r = new Reader(req);
  r.take(2, '0x29 0x06 request');
  const algorithm = Buffer.from(r.take(16, 'algorithmIndicator'));
  const proof = Buffer.from(r.lv('proofOfOwnershipClient'));
  r.lv('challengeClient');
  r.lv('additionalParameter');
  r.end('0x29 0x06 request');
  return { algorithm, proof };
}

export function proofResponse(returnValue: number, algorithm: Buffer): Buffer {
  return Buffer.concat([Buffer.from([SID.Authentication + 0x40, AUTH.verifyProofOfOwnershipUnidirectional, returnValue]), algorithm, lv(Buffer.alloc(0))]);
}
