// A UDS ECU for the plant-in-a-box and the tests: the strict SHE simulator of ecu-sim.ts behind
// the UDS services a key-programming tester uses (session, security access, authentication,
// read/write by identifier, routine control, reset, tester present), with the SHE carriage of
// its ECU type from the UDS mapping (appliance/uds/mapping.ts). It answers whatever transport
// carries it: DoIP (serveDoip below) or ISO-TP (appliance/isotp). It keeps the rules a real ECU
// keeps (programming only in the mapped session after security access, S3 session timeout,
// attempt counter with lockout), so a tester that skips a step is refused with the right NRC.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { startEntity, type DoipEntity, type EntityOptions } from '../../appliance/doip/entity.js';
import { AUTH, AUTH_RETURN, challengeResponse, parseProof, proofResponse, type EcuAuthenticator } from '../../appliance/uds/auth.js';
import { NRC, SESSION, SID, SUPPRESS, negative } from '../../appliance/uds/codec.js';
import { devSecuritySecret, securityKey, type EcuTypeMapping } from '../../appliance/uds/mapping.js';
import { IsoTp, type FrameLink, type IsoTpOptions } from '../../appliance/isotp/transport.js';
import { SheEcu, SheError } from './ecu-sim.js';

export interface UdsEcuOptions {
  type: string;
  mapping: EcuTypeMapping;
  uid: Buffer;
  masterKey: Buffer;
  /** secret of the security access level (default: the dev secret of the type and level) */
  securitySecret?: Buffer;
  /** the 0x29 hook (scripts/plant/ecu-unlock.ts plugs in here) */
  authenticator?: EcuAuthenticator;
  /** the SHE load answers 0x78 first and the result after this many ms (real SHE loads take a while) */
  pendingMs?: number;
  /** announced in the session answer */
  p2Ms?: number;
  p2StarMs?: number;
  /** S3_server: a non-default session without requests falls back after this many ms */
  s3Ms?: number;
  lockoutMs?: number;
}

/** Test hooks to make the ECU misbehave once. */
export interface EcuFaults {
  /** drop the next request of this service (no answer at all) */
  silentOnce?: number;
  /** answer the next request of this service with this NRC */
  nrcOnce?: { sid: number; nrc: number };
  /** flip a bit of the next proof (M5) */
  corruptProof?: boolean;
}

export class UdsEcu {
  readonly she: SheEcu;
  readonly type: string;
  session: number = SESSION.DEFAULT;
  unlocked = false;
  authenticated = false;
  faults: EcuFaults = {};
  /** what the ECU saw, for tests: service ids in order */
  readonly log: number[] = [];
  loads = 0;
  private seed: Buffer | undefined;
  private attempts = 0;
  private lockedUntil = 0;
  private challenge: Buffer | undefined;
  private proof: Buffer | undefined;
  private s3: NodeJS.Timeout | undefined;
  private readonly secret: Buffer | undefined;

  constructor(private readonly o: UdsEcuOptions) {
    this.she = new SheEcu(o.uid, o.masterKey);
    this.type = o.type;
    const lvl = o.mapping.securityLevel;
    this.secret = lvl === undefined ? undefined : (o.securitySecret ?? devSecuritySecret(o.type, lvl));
  }

  get uid(): Buffer {
    return this.o.uid;
  }

  private toDefault(): void {
    this.session = SESSION.DEFAULT;
    this.unlocked = false;
    this.authenticated = false;
    this.seed = undefined;
    this.challenge = undefined;
    clearTimeout(this.s3);
  }

  private armS3(): void {
    clearTimeout(this.s3);
    if (this.session !== SESSION.DEFAULT) {
      this.s3 = setTimeout(() => this.toDefault(), this.o.s3Ms ?? 5000);
      this.s3.unref();
    }
  }

  /** One UDS request in, zero or more answers out through `reply`. Never throws. */
  handle(req: Buffer, reply: (b: Buffer) => void): void {
    if (req.length === 0) return;
    const sid = req[0]!;
    this.log.push(sid);
    this.armS3();
    if (this.faults.silentOnce === sid) {
      this.faults.silentOnce = undefined;
      return;
    }
    if (this.faults.nrcOnce?.sid === sid) {
      const n = this.faults.nrcOnce.nrc;
      this.faults.nrcOnce = undefined;
      return reply(negative(sid, n));
    }
    const no = (nrc: number): void => reply(negative(sid, nrc));
    const m = this.o.mapping;
    const sub = (req[1] ?? 0) & 0x7f;
    const suppress = ((req[1] ?? 0) & SUPPRESS) !== 0;
    switch (sid) {
      case SID.DiagnosticSessionControl: {
        if (req.length !== 2) return no(NRC.incorrectMessageLengthOrInvalidFormat);
        if (sub !== SESSION.DEFAULT && sub !== SESSION.PROGRAMMING && sub !== SESSION.EXTENDED) return no(NRC.subFunctionNotSupported);
        this.toDefault();
        this.session = sub;
        this.armS3();
        if (suppress) return;
        const r = Buffer.from([0x50, sub, 0, 0, 0, 0]);
        r.writeUInt16BE(this.o.p2Ms ?? 50, 2);
        r.writeUInt16BE(Math.round((this.o.p2StarMs ?? 5000) / 10), 4);
        return reply(r);
      }
      case SID.ECUReset: {
        if (req.length !== 2) return no(NRC.incorrectMessageLengthOrInvalidFormat);
        if (sub < 1 || sub > 3) return no(NRC.subFunctionNotSupported);
        if (!suppress) reply(Buffer.from([0x51, sub]));
        this.toDefault();
        this.proof = undefined;
        return;
      }
      case SID.TesterPresent:
        if (req.length !== 2) return no(NRC.incorrectMessageLengthOrInvalidFormat);
        if (sub !== 0) return no(NRC.subFunctionNotSupported);
        if (!suppress) reply(Buffer.from([0x7e, 0x00]));
        return;
      case SID.ReadDataByIdentifier: {
        if (req.length !== 3) return no(NRC.incorrectMessageLengthOrInvalidFormat);
        const did = req.readUInt16BE(1);
        if (did === m.uidDid) return reply(Buffer.concat([Buffer.from([0x62, req[1]!, req[2]!]), this.o.uid]));
        if (m.load.via === 'did' && did === m.load.readDid) {
          if (!this.proof) return no(NRC.requestSequenceError);
          return reply(Buffer.concat([Buffer.from([0x62, req[1]!, req[2]!]), this.proof]));
        }
        return no(NRC.requestOutOfRange);
      }
      case SID.SecurityAccess:
        return this.securityAccess(req, reply);
      case SID.Authentication:
        return this.authentication(req, reply);
      case SID.RoutineControl: {
        if (m.load.via !== 'routine') return no(NRC.serviceNotSupported);
        if (req.length < 4) return no(NRC.incorrectMessageLengthOrInvalidFormat);
        if (sub !== 0x01) return no(NRC.subFunctionNotSupported);
        if (req.readUInt16BE(2) !== m.load.routineId) return no(NRC.requestOutOfRange);
        const why = this.mayProgram();
        if (why) return no(why);
        if (req.length !== 4 + 64) return no(NRC.incorrectMessageLengthOrInvalidFormat);
        return this.load(req.subarray(4), reply, sid, (p) => Buffer.concat([Buffer.from([0x71, 0x01, req[2]!, req[3]!]), p]));
      }
      case SID.WriteDataByIdentifier: {
        if (m.load.via !== 'did') return no(NRC.serviceNotSupported);
        if (req.length < 3) return no(NRC.incorrectMessageLengthOrInvalidFormat);
        if (req.readUInt16BE(1) !== m.load.writeDid) return no(NRC.requestOutOfRange);
        const why = this.mayProgram();
        if (why) return no(why);
        if (req.length !== 3 + 64) return no(NRC.incorrectMessageLengthOrInvalidFormat);
        return this.load(req.subarray(3), reply, sid, (p) => {
          this.proof = p;
          return Buffer.from([0x6e, req[1]!, req[2]!]);
        });
      }
      default:
        return no(NRC.serviceNotSupported);
    }
  }

  private mayProgram(): number | undefined {
    const m = this.o.mapping;
    if (this.session !== m.session) return NRC.serviceNotSupportedInActiveSession;
    if (m.securityLevel !== undefined && !this.unlocked) return NRC.securityAccessDenied;
    if (m.authentication && !this.authenticated) return NRC.authenticationRequired;
    return undefined;
  }

  private load(m123: Buffer, reply: (b: Buffer) => void, sid: number, answer: (proof: Buffer) => Buffer): void {
    const run = (): void => {
      let r: { m4: Buffer; m5: Buffer };
      try {
        r = this.she.loadKey(Buffer.from(m123.subarray(0, 16)), Buffer.from(m123.subarray(16, 48)), Buffer.from(m123.subarray(48, 64)));
      } catch (e) {
        if (e instanceof SheError) return reply(negative(sid, e.erc === 'ERC_KEY_WRITE_PROTECTED' ? NRC.conditionsNotCorrect : NRC.generalProgrammingFailure));
        return reply(negative(sid, NRC.generalReject));
      }
      this.loads++;
      const proof = Buffer.concat([r.m4, r.m5]);
      if (this.faults.corruptProof) {
        this.faults.corruptProof = false;
        proof[proof.length - 1]! ^= 0x01;
      }
      reply(answer(proof));
    };
    const pending = this.o.pendingMs ?? 0;
    if (pending <= 0) return run();
    reply(negative(sid, NRC.requestCorrectlyReceivedResponsePending));
    setTimeout(run, pending);
  }

  private securityAccess(req: Buffer, reply: (b: Buffer) => void): void {
    const no = (nrc: number): void => reply(negative(SID.SecurityAccess, nrc));
    const level = this.o.mapping.securityLevel;
    if (level === undefined || !this.secret) return no(NRC.serviceNotSupported);
    if (this.session === SESSION.DEFAULT) return no(NRC.serviceNotSupportedInActiveSession);
    if (req.length < 2) return no(NRC.incorrectMessageLengthOrInvalidFormat);
    const sub = req[1]! & 0x7f;
    if (sub !== level && sub !== level + 1) return no(NRC.subFunctionNotSupported);
    if (Date.now() < this.lockedUntil) return no(NRC.requiredTimeDelayNotExpired);
    if (sub === level) {
      if (req.length !== 2) return no(NRC.incorrectMessageLengthOrInvalidFormat);
      // an unlocked level answers a zero seed (ISO 14229-1 10.4.1)
      this.seed = this.unlocked ? undefined : randomBytes(16);
      return reply(Buffer.concat([Buffer.from([0x67, sub]), this.seed ?? Buffer.alloc(16)]));
    }
    if (!this.seed) return no(NRC.requestSequenceError);
    const want = securityKey(this.o.mapping.securityAlgorithm ?? 'aes128-cmac', this.secret, this.seed);
    this.seed = undefined;
    const got = req.subarray(2);
    if (got.length !== want.length) return no(NRC.incorrectMessageLengthOrInvalidFormat);
    if (!timingSafeEqual(got, want)) {
      if (++this.attempts >= 3) {
        this.attempts = 0;
        this.lockedUntil = Date.now() + (this.o.lockoutMs ?? 10_000);
        return no(NRC.exceedNumberOfAttempts);
      }
      return no(NRC.invalidKey);
    }
    this.attempts = 0;
    this.unlocked = true;
    reply(Buffer.from([0x67, sub]));
  }

  private authentication(req: Buffer, reply: (b: Buffer) => void): void {
    const no = (nrc: number): void => reply(negative(SID.Authentication, nrc));
    const a = this.o.authenticator;
    if (!a) return no(NRC.serviceNotSupported);
    if (req.length < 2) return no(NRC.incorrectMessageLengthOrInvalidFormat);
    const sub = req[1]! & 0x7f;
    switch (sub) {
      case AUTH.deAuthenticate:
        this.authenticated = false;
        return reply(Buffer.from([0x69, sub, AUTH_RETURN.DeAuthenticationSuccessful]));
      case AUTH.authenticationConfiguration:
        return reply(Buffer.from([0x69, sub, AUTH_RETURN.APCE]));
      case AUTH.requestChallengeForAuthentication: {
        if (req.length !== 3 + 16) return no(NRC.incorrectMessageLengthOrInvalidFormat);
        this.challenge = a.challenge();
        return reply(challengeResponse(AUTH_RETURN.RequestAccepted, Buffer.from(req.subarray(3, 19)), this.challenge));
      }
      case AUTH.verifyProofOfOwnershipUnidirectional: {
        let p: { algorithm: Buffer; proof: Buffer };
        try {
          p = parseProof(req);
        } catch {
          return no(NRC.incorrectMessageLengthOrInvalidFormat);
        }
        if (!this.challenge) return no(NRC.requestSequenceError);
        const c = this.challenge;
        this.challenge = undefined; // one proof per challenge
        if (!a.verify(c, p.proof).ok) return no(NRC.invalidKey);
        this.authenticated = true;
        return reply(proofResponse(AUTH_RETURN.OwnershipVerified_AuthenticationComplete, p.algorithm));
      }
      default:
        return no(NRC.subFunctionNotSupported);
    }
  }
}

/** ECUs behind one DoIP entity (a vehicle's gateway, or a test bench), by logical address. */
export async function serveDoip(o: Omit<EntityOptions, 'resolve'> & { ecus: (address: number) => UdsEcu | undefined }): Promise<DoipEntity> {
  return await startEntity({
    ...o,
    resolve: (ta) => {
      const ecu = o.ecus(ta);
      return ecu ? (req, reply) => ecu.handle(req.data, reply) : undefined;
    },
  });
}

/** One ECU on a CAN bus: ISO-TP on its request/response ids (classic or FD per `o`). */
export function serveIsoTp(link: FrameLink, ecu: UdsEcu, o: Omit<IsoTpOptions, 'onMessage'>): IsoTp {
  const tp: IsoTp = new IsoTp(link, { ...o, onMessage: (req) => ecu.handle(req, (res) => void tp.send(res).catch((e: Error) => o.onError?.(e as never))) });
  return tp;
}
