// Properties of the ECU-protocol parsers under hostile input, shared by the short deterministic
// pass in the test suite (fuzz.test.ts) and the long run (fuzz-long.ts, PKS_FUZZ_RUNS).
// Each says: whatever bytes arrive, the parser answers with a coded error or a value, never
// another exception, and the stateful ones (DoIP stream, ISO-TP receiver, UDS ECU) stay usable.
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { isPksError } from '../../appliance/errors.js';
import { DoipDecodeError, DoipStream, PT, decodeHeader, decodePayload, encode } from '../../appliance/doip/codec.js';
import { decodeFrame } from '../../appliance/isotp/frames.js';
import { IsoTp, memoryBus } from '../../appliance/isotp/transport.js';
import { decodeSocketCan } from '../../appliance/isotp/socketcan.js';
import { parseChallenge, parseProof } from '../../appliance/uds/auth.js';
import { expectPositive } from '../../appliance/uds/codec.js';
import { DEFAULT_MAPPING, mappingFor } from '../../appliance/uds/mapping.js';
import { UdsEcu } from '../../scripts/plant/ecu-uds.js';

const coded = (f: () => unknown): boolean => {
  try {
    f();
    return true;
  } catch (e) {
    return e instanceof DoipDecodeError || isPksError(e);
  }
};

// byte strings that look like DoIP often enough to get past the header check
const doipish = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc
    .tuple(fc.constantFrom(0x02, 0x03, 0xff), fc.constantFrom(...Object.values(PT), 0x1234), fc.uint8Array({ maxLength: 40 }), fc.boolean())
    .map(([v, t, p, lie]) => {
      const b = Buffer.alloc(8 + p.length);
      b[0] = v;
      b[1] = v ^ 0xff;
      b.writeUInt16BE(t, 2);
      b.writeUInt32BE(lie ? p.length + 3 : p.length, 4);
      Buffer.from(p).copy(b, 8);
      return b;
    }),
);

export const properties = {
  'DoIP header + payload decode: only coded errors': fc.property(doipish, (u) => {
    const b = Buffer.from(u);
    return coded(() => decodePayload(decodeHeader(b, 4096), b.subarray(8, 8 + b.readUInt32BE(4))));
  }),
  'DoIP stream: any chunking of any bytes, only coded errors, valid messages after a recoverable error still decode': fc.property(fc.array(doipish, { maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 8 }), (msgs, cuts) => {
    let ok = true;
    const s = new DoipStream(256, { message: () => {}, error: (e) => (ok &&= e instanceof DoipDecodeError) });
    const all = Buffer.concat([...msgs.map((m) => Buffer.from(m)), encode({ type: PT.ALIVE_CHECK_REQ })]);
    for (let off = 0, i = 0; off < all.length; i++) {
      const n = cuts[i % cuts.length]!;
      s.push(all.subarray(off, off + n));
      off += n;
    }
    return ok;
  }),
  'ISO-TP frame decode (classic and FD) and SocketCAN frames: only coded errors': fc.property(fc.uint8Array({ maxLength: 72 }), fc.boolean(), (u, fd) => coded(() => decodeFrame({ fd, txDl: fd ? 64 : 8 }, Buffer.from(u))) && coded(() => decodeSocketCan(Buffer.from(u)))),
  'ISO-TP receiver: a storm of random frames never throws, a good message afterwards arrives': fc.asyncProperty(fc.array(fc.uint8Array({ minLength: 1, maxLength: 8 }), { maxLength: 30 }), async (frames) => {
    const bus = memoryBus();
    const errs: unknown[] = [];
    const rx = new IsoTp(bus, { txId: 2, rxId: 1, nCr: 2000, onError: (e) => errs.push(e) });
    const tx = new IsoTp(bus, { txId: 1, rxId: 2, nBs: 2000 });
    try {
      for (const f of frames) bus.send({ id: 1, data: Buffer.from(f) });
      // no waiting out N_Cr: the good message's first frame ends whatever the storm left half-received
      await new Promise((r) => setTimeout(r, 2));
      while (await rx.receive(1).then(() => true, () => false));
      const m = randomBytes(20);
      await tx.send(m);
      const got = await rx.receive(3000);
      return got.equals(m) && errs.every(isPksError);
    } finally {
      rx.close();
      tx.close();
    }
  }),
  'UDS ECU simulator: any request gets a well-formed answer or none, never an exception': fc.property(fc.array(fc.uint8Array({ maxLength: 80 }), { maxLength: 12 }), (reqs) => {
    const ecu = new UdsEcu({ type: 'bcm', mapping: mappingFor(DEFAULT_MAPPING, 'x.bcm.x'), uid: Buffer.alloc(15, 1), masterKey: Buffer.alloc(16, 2), lockoutMs: 0 });
    let ok = true;
    for (const r of reqs)
      ecu.handle(Buffer.from(r), (a) => {
        ok &&= a.length >= 2 && (a[0] === 0x7f ? a.length === 3 && a[1] === r[0] : a[0] === r[0]! + 0x40);
      });
    return ok;
  }),
  'UDS answer parsers (positive check, 0x29 challenge and proof): only coded errors': fc.property(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ minLength: 1, maxLength: 4 }), (u, req) => {
    const b = Buffer.from(u);
    return coded(() => expectPositive(Buffer.from(req), b, 3)) && coded(() => parseChallenge(b)) && coded(() => parseProof(b));
  }),
};

export async function runAll(numRuns: number, seed: number): Promise<string[]> {
  const failed: string[] = [];
  for (const [name, p] of Object.entries(properties)) {
    // the ISO-TP storm runs on timers: a tenth of the runs
    const runs = name.startsWith('ISO-TP receiver') ? Math.ceil(numRuns / 10) : numRuns;
    const r = await fc.check(p as fc.IRawProperty<unknown, boolean>, { numRuns: runs, seed });
    if (r.failed) failed.push(`${name}: ${fc.defaultReportMessage(r)}`);
  }
  return failed;
}
