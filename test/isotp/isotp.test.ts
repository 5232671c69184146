// ISO-TP (ISO 15765-2) in TypeScript on the host: frame formats on classic CAN and CAN FD, the
// state machine over an in-memory bus and over a UDP frame link between sockets (flow control,
// block size, STmin, padding, FC WAIT and overflow, out-of-sequence frames, N_Bs/N_Cr), UDS key
// programming against the ECU simulator over it, tshark's ISO-TP and UDS dissectors on a pcap
// of that traffic, and, where the kernel has CAN (the VM), the same on vcan.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { PksError } from '../../appliance/errors.js';
import { FC, decodeFrame, encodeCF, encodeFC, encodeFF, encodeSF, stMinMs, type CanFrame } from '../../appliance/isotp/frames.js';
import { decodeSocketCan, encodeSocketCan, udpBus } from '../../appliance/isotp/socketcan.js';
import { IsoTp, memoryBus, type FrameLink } from '../../appliance/isotp/transport.js';
import { sheMessages, sheVerify } from '../../appliance/she.js';
import { UdsClient } from '../../appliance/uds/client.js';
import { DEFAULT_MAPPING, devSecuritySecret, mappingFor, securityKey } from '../../appliance/uds/mapping.js';
import { UdsEcu, serveIsoTp } from '../../scripts/plant/ecu-uds.js';
import { haveTshark, malformed, tsharkFields } from '../helpers/capture.js';
import { writeCanPcap } from '../helpers/pcap.js';

const CLASSIC = { fd: false, txDl: 8 };
const FD64 = { fd: true, txDl: 64 };
const hex = (b: Buffer): string => b.toString('hex');

const fr = suite('ISO-TP frames');
fr('single, first, consecutive and flow-control frames; escapes; padding', () => {
  assert.is(hex(encodeSF(CLASSIC, Buffer.from([0x10, 0x02]))), '021002');
  assert.is(hex(encodeSF({ ...CLASSIC, padding: 0xcc }, Buffer.from([0x10, 0x02]))), '021002cccccccccc');
  assert.is(hex(encodeSF(FD64, Buffer.alloc(7, 0xaa))), '07' + 'aa'.repeat(7));
  const fdsf = encodeSF(FD64, Buffer.alloc(20, 0xbb));
  assert.is(fdsf.length, 24, 'padded to the next CAN FD length');
  assert.is(hex(fdsf.subarray(0, 3)), '0014bb');
  assert.is(hex(encodeFF(CLASSIC, 68, Buffer.alloc(6, 1))), '1044010101010101');
  assert.is(hex(encodeFF(FD64, 5000, Buffer.alloc(58, 2)).subarray(0, 7)), '100000001388' + '02');
  assert.is(hex(encodeCF({ ...CLASSIC, padding: 0x55 }, 17, Buffer.from([9]))), '2109555555555555');
  assert.is(hex(encodeFC({ ...CLASSIC, padding: 0xcc }, FC.CTS, 8, 0xf5)), '3008f5cccccccccc');
  assert.equal(decodeFrame(CLASSIC, Buffer.from('0210020000000000', 'hex')), { kind: 'SF', data: Buffer.from([0x10, 0x02]) });
  assert.equal(decodeFrame(FD64, fdsf), { kind: 'SF', data: Buffer.alloc(20, 0xbb) });
  assert.is((decodeFrame(FD64, encodeFF(FD64, 5000, Buffer.alloc(58))) as { length: number }).length, 5000);
  assert.is(stMinMs(0x7f), 127);
  assert.is(stMinMs(0xf3), 0.3);
  assert.is(stMinMs(0x80), 127, 'reserved STmin counts as the maximum');
});

fr('malformed frames are PKS_ISOTP_FRAME, never a crash', () => {
  for (const h of ['', '08aabbccddeeff00', '0000', '1004aabbccddeeff', '10', '1000000000100102', '3701', '40', '30']) {
    assert.throws(() => decodeFrame(CLASSIC, Buffer.from(h, 'hex')), /PKS_ISOTP_FRAME/, h);
  }
  assert.throws(() => decodeFrame(FD64, Buffer.concat([Buffer.from([0x03]), Buffer.alloc(11)])), /PKS_ISOTP_FRAME/, '4-bit SF_DL in a 12-byte FD frame');
  assert.throws(() => decodeSocketCan(Buffer.alloc(17)), /PKS_ISOTP_FRAME/);
  const b = encodeSocketCan({ id: 0x18da10f1, data: Buffer.from([1, 2, 3]) });
  assert.equal(decodeSocketCan(b), { id: 0x18da10f1, data: Buffer.from([1, 2, 3]) });
});
fr.run();

/** Two ISO-TP endpoints on one bus; `tap` can drop or change frames in flight. */
function pair(o: { fd?: boolean; bs?: number; stMin?: number; padding?: number; tap?: (f: CanFrame) => CanFrame | undefined; maxMessage?: number; bus?: [FrameLink, FrameLink] }) {
  const errors: PksError[] = [];
  const bus = o.bus ?? [memoryBus(o.tap), memoryBus(o.tap)];
  const shared = o.bus ? undefined : memoryBus(o.tap);
  const [la, lb] = shared ? [shared, shared] : bus;
  const common = { fd: !!o.fd, ...(o.padding !== undefined ? { padding: o.padding } : {}), nBs: 300, nCr: 300, onError: (e: PksError) => errors.push(e) };
  const tester = new IsoTp(la, { ...common, txId: 0x7e0, rxId: 0x7e8, ...(o.maxMessage ? { maxMessage: o.maxMessage } : {}) });
  const ecu = new IsoTp(lb, { ...common, txId: 0x7e8, rxId: 0x7e0, blockSize: o.bs ?? 0, stMin: o.stMin ?? 0, maxMessage: o.maxMessage ?? 4095 });
  return { tester, ecu, errors, close: () => (tester.close(), ecu.close()) };
}

const tp = suite('ISO-TP state machine');
tp('messages of every size class round-trip on classic CAN and CAN FD, with and without padding', async () => {
  for (const fd of [false, true])
    for (const padding of [undefined, 0xcc])
      for (const n of [1, 6, 7, 8, 62, 63, 64, 70, 300, 4095]) {
        const p = pair({ fd, padding });
        const m = randomBytes(n);
        await p.tester.send(m);
        assert.ok((await p.ecu.receive(1000)).equals(m), `fd=${fd} padding=${padding} n=${n}`);
        assert.equal(p.errors, []);
        p.close();
      }
  // over 4095 bytes: the 32-bit first frame escape (CAN FD)
  const p = pair({ fd: true, maxMessage: 10_000 });
  const m = randomBytes(5000);
  await p.tester.send(m);
  assert.ok((await p.ecu.receive(2000)).equals(m));
  p.close();
});

tp('block size and STmin from the receiver pace the sender', async () => {
  const frames: { t: number; f: CanFrame }[] = [];
  const p = pair({ bs: 3, stMin: 10, tap: (f) => (frames.push({ t: performance.now(), f }), f) });
  const m = randomBytes(7 * 9 + 6); // FF + 9 CFs
  await p.tester.send(m);
  assert.ok((await p.ecu.receive(2000)).equals(m));
  const fcs = frames.filter((x) => x.f.id === 0x7e8 && x.f.data[0]! >> 4 === 3);
  assert.is(fcs.length, 3, 'one FC after the FF and one after every block of 3');
  assert.is(fcs[0]!.f.data[1], 3);
  const cfs = frames.filter((x) => x.f.id === 0x7e0 && x.f.data[0]! >> 4 === 2);
  assert.is(cfs.length, 9);
  for (let i = 1; i < 3; i++) assert.ok(cfs[i]!.t - cfs[i - 1]!.t >= 9, `STmin 10 ms between CFs of a block (${(cfs[i]!.t - cfs[i - 1]!.t).toFixed(1)} ms)`);
  assert.equal([...cfs.map((c) => c.f.data[0]! & 0x0f)], [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  p.close();
});

tp('FC WAIT is waited out, FC OVFLW is PKS_ISOTP_OVERFLOW, no FC is N_Bs PKS_ISOTP_TIMEOUT', async () => {
  // a receiver that answers WAIT twice, then CTS
  let waits = 0;
  const bus = memoryBus();
  const send = new IsoTp(bus, { txId: 1, rxId: 2, nBs: 300 });
  const off = bus.onFrame((f) => {
    if (f.id !== 1) return;
    if (f.data[0]! >> 4 === 1) {
      const fc = (s: number): void => bus.send({ id: 2, data: encodeFC(CLASSIC, s, 0, 0) });
      fc(FC.WAIT);
      waits++;
      setTimeout(() => (fc(FC.WAIT), waits++, setTimeout(() => fc(FC.CTS), 50)), 50);
    }
  });
  await send.send(randomBytes(30));
  assert.is(waits, 2);
  off();
  send.close();
  // the ECU cannot take the size: overflow
  const p = pair({ maxMessage: 100 });
  await p.tester.send(randomBytes(200)).then(
    () => assert.unreachable(),
    (e) => assert.is((e as PksError).code, 'PKS_ISOTP_OVERFLOW'),
  );
  assert.is(p.errors[0]?.code, 'PKS_ISOTP_OVERFLOW');
  p.close();
  // nobody answers the first frame
  const lonely = new IsoTp(memoryBus(), { txId: 1, rxId: 2, nBs: 100 });
  await lonely.send(randomBytes(30)).then(
    () => assert.unreachable(),
    (e) => assert.is((e as PksError).code, 'PKS_ISOTP_TIMEOUT'),
  );
  lonely.close();
});

tp('the last consecutive frame lost: N_Cr aborts with PKS_ISOTP_TIMEOUT; a swapped one is PKS_ISOTP_SEQUENCE; the next message still arrives', async () => {
  let n = 0;
  const drop = pair({ tap: (f) => (f.id === 0x7e0 && f.data[0]! >> 4 === 2 && ++n === 5 ? undefined : f) });
  await drop.tester.send(randomBytes(40));
  await new Promise((r) => setTimeout(r, 400));
  assert.is(drop.errors[0]?.code, 'PKS_ISOTP_TIMEOUT');
  const m = randomBytes(40);
  await drop.tester.send(m);
  assert.ok((await drop.ecu.receive(1000)).equals(m));
  drop.close();
  let held: CanFrame | undefined;
  const swap = pair({
    tap: (f) => {
      if (f.id === 0x7e0 && (f.data[0]! & 0xf0) === 0x20 && (f.data[0]! & 0x0f) === 1 && !held) {
        held = f;
        return undefined;
      }
      return f;
    },
  });
  await swap.tester.send(randomBytes(40));
  await new Promise((r) => setTimeout(r, 50));
  assert.is(swap.errors[0]?.code, 'PKS_ISOTP_SEQUENCE');
  // stray frames: a CF with no message, an FC while not sending
  const stray = pair({});
  const bus = memoryBus();
  const rx = new IsoTp(bus, { txId: 0x7e8, rxId: 0x7e0, onError: (e) => stray.errors.push(e) });
  bus.send({ id: 0x7e0, data: Buffer.from('2101020304050607', 'hex') });
  bus.send({ id: 0x7e0, data: Buffer.from('300000', 'hex') });
  bus.send({ id: 0x7e0, data: Buffer.from('ff', 'hex') });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(stray.errors.map((e) => e.code), ['PKS_ISOTP_SEQUENCE', 'PKS_ISOTP_SEQUENCE', 'PKS_ISOTP_FRAME']);
  rx.close();
  stray.close();
  swap.close();
});
tp.run();

const master = randomBytes(16);
/** The full programming sequence of a bcm ECU over an ISO-TP link pair. */
async function program(tester: IsoTp, ecu: UdsEcu): Promise<void> {
  const u = new UdsClient(tester);
  await u.session(0x02);
  await u.securityAccess(0x11, (seed) => securityKey('aes128-cmac', devSecuritySecret('bcm', 0x11), seed));
  assert.ok((await u.readDid(0xf1a0)).equals(ecu.uid));
  const s = { uid: ecu.uid, keyId: 4, authKeyId: 1, authKey: master, newKey: randomBytes(16), counter: 1, flags: 0 };
  const m = sheMessages(s);
  const proof = await u.routine(0x0301, Buffer.concat([m.m1, m.m2, m.m3]));
  assert.ok(sheVerify(s, proof.subarray(0, 32), proof.subarray(32)));
  await u.ecuReset(1);
}
const newEcu = (pendingMs = 0): UdsEcu => new UdsEcu({ type: 'bcm', mapping: mappingFor(DEFAULT_MAPPING, 'oem1.bcm.key4'), uid: Buffer.concat([Buffer.from([0x10]), randomBytes(14)]), masterKey: master, pendingMs });

const uds = suite('UDS key programming over ISO-TP');
let dir: string;
uds.before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pks-isotp-'));
});
uds.after(() => rmSync(dir, { recursive: true, force: true }));

uds('classic CAN and CAN FD on an in-memory bus, then tshark decodes the frames as ISO-TP and UDS with nothing malformed', async () => {
  for (const fd of [false, true]) {
    const frames: { t: number; f: CanFrame }[] = [];
    const bus = memoryBus((f) => (frames.push({ t: Date.now(), f }), f));
    const ecu = newEcu(30);
    const srv = serveIsoTp(bus, ecu, { txId: 0x7e8, rxId: 0x7e0, fd, padding: 0xcc, blockSize: 4, stMin: 1 });
    const tester = new IsoTp(bus, { txId: 0x7e0, rxId: 0x7e8, fd, padding: 0xcc });
    await program(tester, ecu);
    tester.close();
    srv.close();
    if (!haveTshark) {
      console.log('  (tshark part skipped: tshark not installed)');
      continue;
    }
    const file = path.join(dir, `isotp-${fd ? 'fd' : 'classic'}.pcap`);
    writeCanPcap(file, frames);
    const opts = ['-o', 'iso15765.can.ids:0x7e0,0x7e8', '-d', 'iso15765.subdissector,uds'];
    const rows = await tsharkFields(file, [], ['iso15765.message_type', 'uds.sid', 'uds.reply'], undefined, opts);
    const types = new Set(rows.flatMap((r) => r[0]!.split(',')).filter(Boolean).map(Number));
    assert.ok(types.has(0) && types.has(1) && types.has(2) && types.has(3), `SF, FF, CF and FC decoded (fd=${fd}): ${[...types]}`);
    const sids = new Set(rows.flatMap((r) => (r[1] ? [`${r[1]}/${r[2]}`] : [])));
    for (const s of ['0x10/0x00', '0x10/0x01', '0x27/0x00', '0x27/0x01', '0x22/0x01', '0x31/0x00', '0x31/0x01', '0x11/0x01']) assert.ok(sids.has(s), `UDS ${s} over ISO-TP (fd=${fd}): ${[...sids]}`);
    assert.equal(await malformed(file, [], opts), [], `nothing malformed (fd=${fd})`);
  }
});

uds('over a UDP frame link between two sockets (SocketCAN frame layout in each datagram)', async () => {
  const a = await udpBus({ port: 0, peers: [] });
  const b = await udpBus({ port: 0, peers: [a.port] });
  (a as unknown as { close(): void }).close();
  const a2 = await udpBus({ port: a.port, peers: [b.port] });
  try {
    const ecu = newEcu();
    const srv = serveIsoTp(b, ecu, { txId: 0x18daf110, rxId: 0x18da10f1, fd: true, padding: 0xaa, blockSize: 2 });
    const tester = new IsoTp(a2, { txId: 0x18da10f1, rxId: 0x18daf110, fd: true, padding: 0xaa });
    await program(tester, ecu);
    tester.close();
    srv.close();
  } finally {
    a2.close();
    b.close();
  }
});

uds('SocketCAN vcan (only where the kernel has CAN: the VM test)', async () => {
  if (!existsSync('/proc/net/can') && !existsSync('/sys/module/can')) {
    console.log('  (skipped: no CAN in this kernel; the VM test runs scripts/plant/can-check.ts on vcan)');
    return;
  }
  const { canLink } = await import('../../appliance/isotp/can-link.js');
  const ifc = `pksv${process.pid % 10000}`;
  try {
    execFileSync('ip', ['link', 'add', 'dev', ifc, 'type', 'vcan']);
    execFileSync('ip', ['link', 'set', ifc, 'up']);
  } catch (e) {
    console.log(`  (skipped: cannot make a vcan interface: ${String(e).split('\n')[0]})`);
    return;
  }
  try {
    const { canBus } = await import('../../appliance/isotp/can-link.js');
    const bus = await canBus(ifc, 0x7e0, false);
    const ecu = newEcu();
    const srv = serveIsoTp(bus, ecu, { txId: 0x7e8, rxId: 0x7e0, padding: 0xcc });
    const t = await canLink({ iface: ifc, tx: 0x7e0, rx: 0x7e8, fd: false });
    await program(t.link as IsoTp, ecu);
    t.close();
    srv.close();
    bus.close();
  } finally {
    execFileSync('ip', ['link', 'del', ifc]);
  }
});
uds.run();
