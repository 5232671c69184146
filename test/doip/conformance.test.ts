// Conformance with tools nobody here wrote: Wireshark's DoIP and UDS dissectors decode a live
// capture of our client talking to our ECU simulator with zero malformed packets, and scapy's
// automotive contrib (Debian python3-scapy) talks to us in both directions.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { DoipClient, discover } from '../../appliance/doip/client.js';
import { PT } from '../../appliance/doip/codec.js';
import type { DoipEntity } from '../../appliance/doip/entity.js';
import { sheMessages, sheVerify } from '../../appliance/she.js';
import { UdsClient } from '../../appliance/uds/client.js';
import { DEFAULT_MAPPING, devSecuritySecret, mappingFor, securityKey } from '../../appliance/uds/mapping.js';
import { UdsEcu, serveDoip } from '../../scripts/plant/ecu-uds.js';
import { haveTshark, malformed, startCapture, tsharkFields } from '../helpers/capture.js';

const run = promisify(execFile);
const PY = '/usr/bin/python3';
const haveScapy = spawnSync(PY, ['-c', 'import scapy.contrib.automotive.doip, scapy.contrib.automotive.uds, cryptography'], { stdio: 'ignore' }).status === 0;
const here = path.dirname(new URL(import.meta.url).pathname);
const master = randomBytes(16);
const VIN = 'WPKS0000000000004';

const ecus = new Map<number, UdsEcu>();
const add = (addr: number, pool: string, extra: Partial<ConstructorParameters<typeof UdsEcu>[0]> = {}): UdsEcu => {
  const m = mappingFor(DEFAULT_MAPPING, pool);
  const e = new UdsEcu({ type: m.type, mapping: m, uid: Buffer.concat([Buffer.from([0x10]), randomBytes(14)]), masterKey: master, ...extra });
  ecus.set(addr, e);
  return e;
};
const she = (ecu: UdsEcu, keyId: number) => {
  const u = { uid: ecu.uid, keyId, authKeyId: 1, authKey: master, newKey: randomBytes(16), counter: 1, flags: 0 };
  return { u, m: sheMessages(u) };
};
let entity: DoipEntity;
let dir: string;

const ts = suite('tshark decodes our DoIP and UDS traffic, nothing malformed');
ts.before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pks-doip-conf-'));
  entity = await serveDoip({ identity: { vin: VIN, logicalAddress: 0x1000, eid: Buffer.from('02000000aa01', 'hex'), gid: Buffer.from('02000000aa01', 'hex') }, ecus: (a) => ecus.get(a), tcp: { host: '127.0.0.1', port: 0 }, udp: { host: '127.0.0.1', port: 0 }, timers: { A_DoIP_Announce_Wait: 50 } });
});
ts.after(async () => {
  await entity.close();
  await rm(dir, { recursive: true, force: true });
});

ts('a live capture on lo: vehicle identification, routing, status, alive check, both carriages, 0x78, NACK, negative response', async () => {
  if (!haveTshark) {
    console.log('  (skipped: tshark/dumpcap not installed; scripts/deps.sh test installs them)');
    return;
  }
  const tcp = entity.tcpPort!;
  const udp = entity.udpPort!;
  const cap = await startCapture({ iface: 'lo', filter: `tcp port ${tcp} or udp port ${udp}`, file: path.join(dir, 'doip.pcapng') });
  const bcm = add(0x1101, 'oem1.bcm.key4', { pendingMs: 60 });
  const gw = add(0x1102, 'oem1.gateway.key5');
  try {
    const d = await discover({ address: '127.0.0.1', port: udp, waitMs: 300 });
    assert.is(d.found[0]?.vin, VIN);
    const c = await DoipClient.connect({ host: '127.0.0.1', port: tcp, sourceAddress: 0x0e80 });
    try {
      await c.activate();
      await c.entityStatus();
      await c.aliveCheck();
      let u = new UdsClient(c.link(0x1101));
      await u.session(0x02);
      await u.securityAccess(0x11, (seed) => securityKey('aes128-cmac', devSecuritySecret('bcm', 0x11), seed));
      await u.readDid(0xf1a0);
      const a = she(bcm, 4);
      const proof = await u.routine(0x0301, Buffer.concat([a.m.m1, a.m.m2, a.m.m3]));
      assert.ok(sheVerify(a.u, proof.subarray(0, 32), proof.subarray(32)));
      await u.testerPresent(false);
      await u.testerPresent(true);
      await u.request(Buffer.from([0x85, 0x02])).catch(() => {}); // a negative response (serviceNotSupported)
      await u.ecuReset(1);
      u = new UdsClient(c.link(0x1102));
      await u.session(0x03);
      await u.securityAccess(0x01, (seed) => securityKey('aes128-cmac', devSecuritySecret('gateway', 0x01), seed));
      const b = she(gw, 5);
      await u.writeDid(0xf1a1, Buffer.concat([b.m.m1, b.m.m2, b.m.m3]));
      await u.readDid(0xf1a2);
      await c.link(0x1999).send(Buffer.from([0x3e, 0x00])).catch(() => {}); // NACK 0x03
    } finally {
      c.close();
    }
  } finally {
    await cap.stop();
  }
  const decode = [`tcp.port==${tcp},doip`, `udp.port==${udp},doip`];
  const rows = await tsharkFields(cap.file, decode, ['doip.type', 'uds.sid', 'uds.reply', 'uds.err.code'], 'doip');
  const types = new Set(rows.flatMap((r) => r[0]!.split(',')).map((t) => Number(t)));
  for (const t of [PT.VEHICLE_ID_REQ, PT.VEHICLE_ANNOUNCEMENT, PT.ROUTING_ACTIVATION_REQ, PT.ROUTING_ACTIVATION_RES, PT.ENTITY_STATUS_REQ, PT.ENTITY_STATUS_RES, PT.ALIVE_CHECK_REQ, PT.ALIVE_CHECK_RES, PT.DIAG_MESSAGE, PT.DIAG_ACK, PT.DIAG_NACK])
    assert.ok(types.has(t), `tshark saw DoIP type 0x${t.toString(16).padStart(4, '0')} (saw ${[...types].map((x) => x.toString(16)).join(' ')})`);
  // the UDS dissector shows an answer as its request's service with uds.reply set
  const seen = new Set(rows.flatMap((r) => r[1]!.split(',').map((sid, i) => `${sid}/${r[2]!.split(',')[i] ?? ''}`)));
  for (const sid of [0x10, 0x27, 0x22, 0x31, 0x3e, 0x11, 0x2e])
    for (const reply of ['0x00', '0x01']) assert.ok(seen.has(`0x${sid.toString(16).padStart(2, '0')}/${reply}`), `tshark's UDS dissector saw service 0x${sid.toString(16)} reply ${reply} (saw ${[...seen].join(' ')})`);
  const nrcs = new Set(rows.flatMap((r) => r[3]!.split(',')).filter(Boolean).map((s) => Number(s)));
  assert.ok(nrcs.has(0x78) && nrcs.has(0x11), `NRCs decoded: ${[...nrcs]}`);
  assert.equal(await malformed(cap.file, decode), [], 'no malformed packets');
});

ts.run();

const sc = suite('scapy (python3-scapy automotive contrib) interop, both directions');

sc("scapy's DoIP/UDS client against our ECU simulator: identification over UDP, the whole programming sequence", async () => {
  if (!haveScapy) {
    console.log('  (skipped: Debian python3-scapy or python3-cryptography missing; scripts/deps.sh test installs them)');
    return;
  }
  const e = await serveDoip({ identity: { vin: VIN, logicalAddress: 0x1000, eid: Buffer.alloc(6, 4), gid: Buffer.alloc(6, 4) }, ecus: (a) => ecus.get(a), tcp: { host: '127.0.0.1', port: 0 }, udp: { host: '127.0.0.1', port: 0 }, timers: { A_DoIP_Announce_Wait: 20 } });
  try {
    const ecu = add(0x1201, 'oem1.bcm.key4', { pendingMs: 40 });
    const x = she(ecu, 4);
    const arg = { host: '127.0.0.1', tcp: e.tcpPort, udp: e.udpPort, ta: 0x1201, secret: devSecuritySecret('bcm', 0x11).toString('hex'), m123: Buffer.concat([x.m.m1, x.m.m2, x.m.m3]).toString('hex') };
    const { stdout } = await run(PY, [path.join(here, 'scapy/client.py'), JSON.stringify(arg)], { timeout: 60_000 });
    const out = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    assert.is(out.vin, VIN);
    assert.is(out.logical_address, 0x1000);
    assert.is(out.session, 0x50);
    assert.is(out.security, 0x67);
    assert.is(out.uid, ecu.uid.toString('hex'));
    assert.is(out.routine, 0x71);
    const proof = Buffer.from(out.proof as string, 'hex');
    assert.ok(sheVerify(x.u, proof.subarray(0, 32), proof.subarray(32)), 'the proof scapy read verifies');
    assert.is(out.tester_present, 0x7e);
    assert.is(out.reset, 0x51);
  } finally {
    await e.close();
  }
});

sc('our client against a scapy-built DoIP entity and UDS ECU (with a 0x78 response pending)', async () => {
  if (!haveScapy) {
    console.log('  (skipped: Debian python3-scapy missing)');
    return;
  }
  const uid = Buffer.concat([Buffer.from([0x10]), randomBytes(14)]);
  const proof = randomBytes(48);
  const py = spawn(PY, [path.join(here, 'scapy/ecu.py'), JSON.stringify({ ta: 0x1301, uid: uid.toString('hex'), proof: proof.toString('hex') })], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  py.stdout.on('data', (b: Buffer) => (out += b.toString()));
  py.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<void>((r) => py.once('exit', () => r()));
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`scapy ECU did not start: ${err}`)), 30_000);
      const check = (): void => {
        const m = /READY (\d+)/.exec(out);
        if (m) {
          clearTimeout(t);
          resolve(Number(m[1]));
        }
      };
      py.stdout.on('data', check);
      py.once('exit', () => reject(new Error(`scapy ECU exited: ${err}`)));
    });
    const c = await DoipClient.connect({ host: '127.0.0.1', port, sourceAddress: 0x0e80 });
    const m123 = randomBytes(64);
    try {
      assert.is(await c.activate(), 0x1000);
      const u = new UdsClient(c.link(0x1301));
      assert.equal(await u.session(0x02), { p2Ms: 50, p2StarMs: 5000 });
      await u.securityAccess(0x11, (seed) => securityKey('aes128-cmac', devSecuritySecret('bcm', 0x11), seed));
      assert.ok((await u.readDid(0xf1a0)).equals(uid));
      assert.ok((await u.routine(0x0301, m123)).equals(proof), 'the proof after 0x78 response pending');
      await u.writeDid(0xf1a1, m123).then(
        () => assert.unreachable(),
        (e) => assert.match(String(e), /conditionsNotCorrect/),
      );
      await u.testerPresent(false);
      await u.ecuReset(1);
    } finally {
      c.close();
    }
    await exited;
    const seen = (JSON.parse(out.trim().split('\n').pop()!) as { seen: string[] }).seen;
    assert.ok(seen.includes(`310103 01${m123.toString('hex')}`.replace(' ', '')), 'scapy received our RoutineControl with M1-M3');
    assert.is(seen[0], '1002');
  } finally {
    if (py.exitCode === null) py.kill('SIGTERM');
    await exited;
  }
});

sc.run();
