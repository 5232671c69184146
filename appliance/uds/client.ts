// A UDS client over any message link (DoIP diagnostic messages, ISO-TP): one request at a time,
// P2 for the first answer, P2* after each 0x78 "response pending" (the ECU sets both in its
// DiagnosticSessionControl answer), busyRepeatRequest retried a few times, every other negative
// response a UdsNegative with its NRC.
import { pksError } from '../errors.js';
import { parseChallenge, requestChallenge, verifyProof, AUTH_RETURN, ALGORITHM_UNLOCK_TOKEN, type TokenSource } from './auth.js';
import { NEGATIVE, NRC, ROUTINE, SESSION, SID, SUPPRESS, UdsNegative, expectPositive, u16be } from './codec.js';

export interface UdsLink {
  send(data: Buffer): Promise<void>;
  receive(timeoutMs: number): Promise<Buffer>;
}

export interface UdsTiming {
  /** P2_client: first answer (ISO 14229-2 default P2_server 50 ms plus transport margin) */
  p2Ms: number;
  /** P2*_client after a 0x78 (default P2*_server 5000 ms) */
  p2StarMs: number;
  /** how many 0x78 in a row we accept before calling the ECU stuck */
  maxPending: number;
  /** retries of busyRepeatRequest (0x21) */
  busyRetries: number;
}

export const UDS_TIMING: UdsTiming = Object.freeze({ p2Ms: 1000, p2StarMs: 5000, maxPending: 60, busyRetries: 3 });

export class UdsClient {
  timing: UdsTiming;
  /** every request and its final answer, for progress output and the bench's breakdown */
  onExchange?: (req: Buffer, res: Buffer | undefined, ms: number) => void;

  constructor(
    private readonly link: UdsLink,
    timing?: Partial<UdsTiming>,
  ) {
    this.timing = { ...UDS_TIMING, ...timing };
  }

  private queue: Promise<unknown> = Promise.resolve();
  /** true while a request waits for its answer (a keep-alive skips its TesterPresent then) */
  busy = false;

  /** One request at a time on a link: UDS has no request ids, answers are matched by order. */
  private exclusive<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(async () => {
      this.busy = true;
      try {
        return await f();
      } finally {
        this.busy = false;
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }

  /** Sends `req`, returns the positive answer (at least `min` bytes) or throws. */
  request(req: Buffer, min = 1): Promise<Buffer> {
    return this.exclusive(() => this.exchange(req, min));
  }

  private async exchange(req: Buffer, min: number): Promise<Buffer> {
    const t0 = performance.now();
    for (let attempt = 0; ; attempt++) {
      await this.link.send(req);
      let wait = this.timing.p2Ms;
      for (let pending = 0; ; pending++) {
        let res: Buffer;
        try {
          res = await this.link.receive(wait);
        } catch (e) {
          this.onExchange?.(req, undefined, performance.now() - t0);
          throw e;
        }
        // a late negative answer to a suppressed TesterPresent belongs to no request of ours
        if (res.length >= 3 && res[0] === NEGATIVE && res[1] === SID.TesterPresent && req[0] !== SID.TesterPresent) continue;
        if (res.length >= 3 && res[0] === NEGATIVE && res[1] === req[0] && res[2] === NRC.requestCorrectlyReceivedResponsePending) {
          if (pending >= this.timing.maxPending) throw pksError('PKS_UDS_TIMEOUT', `service 0x${req[0]!.toString(16)}: still pending after ${pending} response-pending answers`);
          wait = this.timing.p2StarMs;
          continue;
        }
        if (res.length >= 3 && res[0] === NEGATIVE && res[1] === req[0] && res[2] === NRC.busyRepeatRequest && attempt < this.timing.busyRetries) break;
        this.onExchange?.(req, res, performance.now() - t0);
        return expectPositive(req, res, min);
      }
      await new Promise((r) => setTimeout(r, 20 * (attempt + 1)));
    }
  }

  /** Sends with the suppress-positive-response bit: only a negative answer comes back. */
  requestSuppressed(req: Buffer): Promise<void> {
    return this.exclusive(() => this.suppressed(req));
  }

  private async suppressed(req: Buffer): Promise<void> {
    // no waiting for a negative answer: a late one is recognised and dropped by exchange()
    await this.link.send(req);
  }

  /** 0x10; adopts the P2/P2* the ECU announces (plus a margin for the transport). */
  async session(type: number = SESSION.PROGRAMMING): Promise<{ p2Ms: number; p2StarMs: number }> {
    const req = Buffer.from([SID.DiagnosticSessionControl, type]);
    const res = await this.request(req, 2);
    if (res[1] !== type) throw pksError('PKS_UDS_PROTOCOL', `session answer for 0x${res[1]!.toString(16)}, asked 0x${type.toString(16)}`);
    if (res.length >= 6) {
      const p2 = res.readUInt16BE(2);
      const p2s = res.readUInt16BE(4) * 10;
      this.timing = { ...this.timing, p2Ms: Math.max(this.timing.p2Ms, p2 + 200), p2StarMs: Math.max(this.timing.p2StarMs, p2s + 500) };
      return { p2Ms: p2, p2StarMs: p2s };
    }
    return { p2Ms: this.timing.p2Ms, p2StarMs: this.timing.p2StarMs };
  }

  /** 0x27: requestSeed (odd level), compute the key, sendKey (level + 1). A zero seed means already unlocked. */
  async securityAccess(level: number, key: (seed: Buffer) => Buffer): Promise<void> {
    if (level % 2 !== 1 || level < 1 || level > 0x7d) throw pksError('PKS_OUT_OF_RANGE', 'security access level must be odd, 0x01..0x7D');
    const seedRes = await this.request(Buffer.from([SID.SecurityAccess, level]), 3);
    const seed = seedRes.subarray(2);
    if (seed.every((b) => b === 0)) return;
    await this.request(Buffer.concat([Buffer.from([SID.SecurityAccess, level + 1]), key(seed)]), 2);
  }

  /** 0x29 challenge → token (from the hook) → proof of ownership; resolves with the return value. */
  async authenticate(token: TokenSource, algorithm: Buffer = ALGORITHM_UNLOCK_TOKEN): Promise<number> {
    const c = parseChallenge(await this.request(requestChallenge(algorithm), 3));
    const proof = await token(c.challenge, c.algorithm);
    const res = await this.request(verifyProof(proof, c.algorithm), 3);
    if (res[2] !== AUTH_RETURN.OwnershipVerified_AuthenticationComplete) throw pksError('PKS_UDS_PROTOCOL', `authentication answered return value 0x${res[2]!.toString(16)}`);
    return res[2]!;
  }

  async ecuReset(type = 0x01): Promise<void> {
    await this.request(Buffer.from([SID.ECUReset, type]), 2);
  }

  /** 0x3E; suppressed by default, as testers send it to keep a session alive. */
  async testerPresent(suppress = true): Promise<void> {
    if (suppress) await this.requestSuppressed(Buffer.from([SID.TesterPresent, SUPPRESS]));
    else await this.request(Buffer.from([SID.TesterPresent, 0x00]), 2);
  }

  async readDid(did: number): Promise<Buffer> {
    const res = await this.request(Buffer.concat([Buffer.from([SID.ReadDataByIdentifier]), u16be(did)]), 3);
    if (res.readUInt16BE(1) !== did) throw pksError('PKS_UDS_PROTOCOL', `read answered DID 0x${res.readUInt16BE(1).toString(16)}`);
    return Buffer.from(res.subarray(3));
  }

  async writeDid(did: number, data: Buffer): Promise<void> {
    const res = await this.request(Buffer.concat([Buffer.from([SID.WriteDataByIdentifier]), u16be(did), data]), 3);
    if (res.readUInt16BE(1) !== did) throw pksError('PKS_UDS_PROTOCOL', `write answered DID 0x${res.readUInt16BE(1).toString(16)}`);
  }

  /** 0x31 start routine; returns the routineStatusRecord. */
  async routine(rid: number, data: Buffer, sub: number = ROUTINE.START): Promise<Buffer> {
    const res = await this.request(Buffer.concat([Buffer.from([SID.RoutineControl, sub]), u16be(rid), data]), 4);
    if (res[1] !== sub || res.readUInt16BE(2) !== rid) throw pksError('PKS_UDS_PROTOCOL', `routine answered 0x${res.readUInt16BE(2).toString(16)}`);
    return Buffer.from(res.subarray(4));
  }
}

export { UdsNegative };
