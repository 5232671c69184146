// DoIP (ISO 13400-2): the codec byte for byte, and our client against our entity over real
// TCP and TLS sockets on loopback: routing activation and its refusals, alive check, entity
// status, diagnostic messages with ACK and NACK, the timers, and a peer sending garbage.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { DoipClient } from '../../appliance/doip/client.js';
import { DIAG_NACK, DoipDecodeError, DoipStream, HEADER_NACK, PT, ROUTING, decodeHeader, decodePayload, encode, type Message } from '../../appliance/doip/codec.js';
import { startEntity, type DoipEntity } from '../../appliance/doip/entity.js';
import { issue, makeCa } from '../helpers/pki.js';

const ID = { vin: 'WPKS0000000000001', logicalAddress: 0x1000, eid: Buffer.from('0200000000a1', 'hex'), gid: Buffer.from('0200000000a1', 'hex') };
const echo = (): ((a: number) => ((req: { data: Buffer }, reply: (b: Buffer) => void) => void) | undefined) => (a) => (a === 0x1001 ? (req, reply) => reply(Buffer.concat([Buffer.from([req.data[0]! + 0x40]), req.data.subarray(1)])) : undefined);

const codec = suite('DoIP codec');

codec('every message type round-trips, header carries the inverse version', () => {
  const msgs: Message[] = [
    { type: PT.GENERIC_NACK, code: 2 },
    { type: PT.VEHICLE_ID_REQ },
    { type: PT.VEHICLE_ID_REQ_EID, eid: Buffer.alloc(6, 1) },
    { type: PT.VEHICLE_ID_REQ_VIN, vin: 'WPKS0000000000001' },
    { type: PT.VEHICLE_ANNOUNCEMENT, ...ID, furtherAction: 0 },
    { type: PT.VEHICLE_ANNOUNCEMENT, ...ID, furtherAction: 0x10, syncStatus: 0 },
    { type: PT.ROUTING_ACTIVATION_REQ, sourceAddress: 0x0e80, activationType: 0 },
    { type: PT.ROUTING_ACTIVATION_REQ, sourceAddress: 0x0e80, activationType: 0, oem: Buffer.alloc(4) },
    { type: PT.ROUTING_ACTIVATION_RES, testerAddress: 0x0e80, entityAddress: 0x1000, code: 0x10 },
    { type: PT.ALIVE_CHECK_REQ },
    { type: PT.ALIVE_CHECK_RES, sourceAddress: 0x0e80 },
    { type: PT.ENTITY_STATUS_REQ },
    { type: PT.ENTITY_STATUS_RES, nodeType: 0, maxSockets: 4, openSockets: 1, maxDataSize: 4100 },
    { type: PT.POWER_MODE_REQ },
    { type: PT.POWER_MODE_RES, mode: 1 },
    { type: PT.DIAG_MESSAGE, sourceAddress: 0x0e80, targetAddress: 0x1001, data: Buffer.from([0x10, 0x02]) },
    { type: PT.DIAG_ACK, sourceAddress: 0x1001, targetAddress: 0x0e80, code: 0, previous: Buffer.alloc(0) },
    { type: PT.DIAG_NACK, sourceAddress: 0x1001, targetAddress: 0x0e80, code: 3, previous: Buffer.from([0x10]) },
  ];
  for (const m of msgs) {
    const b = encode(m);
    assert.is(b[0], 0x03);
    assert.is(b[1], 0xfc);
    assert.is(b.readUInt16BE(2), m.type);
    assert.is(b.readUInt32BE(4), b.length - 8);
    const back = decodePayload(decodeHeader(b, 4096), b.subarray(8));
    assert.equal(back, m);
  }
  // a known frame: routing activation request of ISO 13400-2 Annex examples
  assert.is(encode({ type: PT.ROUTING_ACTIVATION_REQ, sourceAddress: 0x0e80, activationType: 0, oem: Buffer.alloc(4) }).toString('hex'), '03fc' + '0005' + '0000000b' + '0e80' + '00' + '00000000' + '00000000');
});

codec('bad headers become coded errors with the NACK the standard wants', () => {
  const cases: [string, string, number, boolean][] = [
    ['03fd000100000000', 'PKS_DOIP_HEADER', HEADER_NACK.INCORRECT_PATTERN, true], // inverse wrong
    ['07f8000100000000', 'PKS_DOIP_HEADER', HEADER_NACK.INCORRECT_PATTERN, true], // unknown version
    ['03fc123400000000', 'PKS_DOIP_UNKNOWN_TYPE', HEADER_NACK.UNKNOWN_TYPE, false],
    ['03fc800100100000', 'PKS_DOIP_TOO_LARGE', HEADER_NACK.TOO_LARGE, false],
    ['03fc000500000003', 'PKS_DOIP_LENGTH', HEADER_NACK.INVALID_LENGTH, true], // routing activation of 3 bytes
    ['03fc800100000002', 'PKS_DOIP_LENGTH', HEADER_NACK.INVALID_LENGTH, true], // diagnostic message too short
    ['03fc0001', 'PKS_DOIP_HEADER', HEADER_NACK.INCORRECT_PATTERN, true], // truncated
  ];
  for (const [hex, code, nack, close] of cases) {
    try {
      decodeHeader(Buffer.from(hex, 'hex'), 4096);
      assert.unreachable(hex);
    } catch (e) {
      assert.instance(e, DoipDecodeError, hex);
      const d = e as DoipDecodeError;
      assert.is(d.code, code, hex);
      assert.is(d.nack, nack, hex);
      assert.is(d.close, close, hex);
      assert.is(d.toPks().code, code);
    }
  }
  // encode refuses fields out of range
  assert.throws(() => encode({ type: PT.ALIVE_CHECK_RES, sourceAddress: 0x10000 }), /PKS_OUT_OF_RANGE/);
  assert.throws(() => encode({ type: PT.VEHICLE_ID_REQ_VIN, vin: 'short' }), /PKS_OUT_OF_RANGE/);
});

codec('the stream splitter reassembles byte by byte and skips a refused payload without buffering it', () => {
  const got: Message[] = [];
  const errs: string[] = [];
  const s = new DoipStream(64, { message: (m) => got.push(m), error: (e) => errs.push(e.code) });
  const a = encode({ type: PT.ALIVE_CHECK_RES, sourceAddress: 0x0e80 });
  const big = Buffer.concat([Buffer.from('03fc8001000003e8', 'hex'), Buffer.alloc(1000, 0xaa)]); // 1000 > 64: NACK 0x02, skipped
  const d = encode({ type: PT.DIAG_MESSAGE, sourceAddress: 1, targetAddress: 2, data: Buffer.from([0x3e, 0x00]) });
  for (const b of Buffer.concat([a, big, d])) s.push(Buffer.from([b]));
  assert.equal(errs, ['PKS_DOIP_TOO_LARGE']);
  assert.is(got.length, 2);
  assert.is(got[1]!.type, PT.DIAG_MESSAGE);
});

codec.run();

const tcp = suite('DoIP client and entity over TCP and TLS');
let entity: DoipEntity;
let dir: string;
let tlsEntity: DoipEntity;
let ca: string;

tcp.before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pks-doip-'));
  const c = await makeCa(dir, 'ecu-ca');
  const s = await issue(dir, 'ecu-ca', 'entity', { cn: 'doip-entity', server: true, san: ['DNS:localhost', 'IP:127.0.0.1'] });
  ca = await readFile(c.cert, 'utf8');
  entity = await startEntity({ identity: ID, resolve: echo(), tcp: { host: '127.0.0.1', port: 0 }, timers: { T_TCP_Initial_Inactivity: 300, T_TCP_Alive_Check: 200 }, maxSockets: 3 });
  tlsEntity = await startEntity({
    identity: ID,
    resolve: echo(),
    tcp: { host: '127.0.0.1', port: 0 },
    tls: { host: '127.0.0.1', port: 0, key: await readFile(s.key), cert: await readFile(s.cert) },
    requireTls: true,
  });
});
tcp.after(async () => {
  await entity.close();
  await tlsEntity.close();
  await rm(dir, { recursive: true, force: true });
});

const connect = (port: number, sa = 0x0e80): Promise<DoipClient> => DoipClient.connect({ host: '127.0.0.1', port, sourceAddress: sa });

tcp('routing activation, entity status, alive check, a diagnostic message ACKed and answered', async () => {
  const c = await connect(entity.tcpPort!);
  try {
    assert.is(await c.activate(), 0x1000);
    const st = await c.entityStatus();
    assert.is(st.maxSockets, 3);
    assert.is(st.openSockets, 1);
    assert.is(await c.aliveCheck(), 0x1000);
    const l = c.link(0x1001);
    await l.send(Buffer.from([0x3e, 0x00]));
    assert.equal([...(await l.receive(1000))], [0x7e, 0x00]);
  } finally {
    c.close();
  }
});

tcp('unknown target: NACK 0x03 as PKS_DOIP_NACK; the socket stays usable', async () => {
  const c = await connect(entity.tcpPort!);
  try {
    await c.activate();
    try {
      await c.link(0x2222).send(Buffer.from([0x3e, 0x00]));
      assert.unreachable();
    } catch (e) {
      assert.is((e as { code: string }).code, 'PKS_DOIP_NACK');
      assert.match(String(e), /NACK code 0x03/);
    }
    await c.link(0x1001).send(Buffer.from([0x3e, 0x00]));
  } finally {
    c.close();
  }
});

tcp('refusals: unknown source address (0x00), second socket with the same live address (0x03), TLS required (0x07)', async () => {
  const bad = await connect(entity.tcpPort!, 0x0100);
  await bad.activate().then(
    () => assert.unreachable(),
    (e) => assert.match(String(e), /PKS_DOIP_ROUTING_DENIED.*0x00/),
  );
  const a = await connect(entity.tcpPort!);
  await a.activate();
  const b = await connect(entity.tcpPort!);
  // a answers the entity's alive check, so b is refused
  await b.activate().then(
    () => assert.unreachable(),
    (e) => assert.match(String(e), /0x03/),
  );
  a.close();
  await new Promise((r) => setTimeout(r, 50));
  const c = await connect(entity.tcpPort!);
  assert.is(await c.activate(), 0x1000, 'after the first socket closed the address is free');
  c.close();
  const plain = await connect(tlsEntity.tcpPort!);
  await plain.activate().then(
    () => assert.unreachable(),
    (e) => assert.match(String(e), new RegExp(`0x0${ROUTING.TLS_REQUIRED}`)),
  );
});

tcp('TLS on its own port: activation and diagnostics, certificate checked against the CA', async () => {
  const c = await DoipClient.connect({ host: '127.0.0.1', port: tlsEntity.tlsPort!, sourceAddress: 0x0e80, tls: { ca } });
  try {
    await c.activate();
    const l = c.link(0x1001);
    await l.send(Buffer.from([0x22, 0xf1, 0x90]));
    assert.equal([...(await l.receive(1000))], [0x62, 0xf1, 0x90]);
  } finally {
    c.close();
  }
  // a foreign CA: the handshake fails, a coded error
  const other = await makeCa(dir, 'other');
  await DoipClient.connect({ host: '127.0.0.1', port: tlsEntity.tlsPort!, sourceAddress: 0x0e80, tls: { ca: await readFile(other.cert, 'utf8') } }).then(
    () => assert.unreachable(),
    (e) => assert.is((e as { code: string }).code, 'PKS_DOIP_CLOSED'),
  );
});

/** A raw socket to see exactly what the entity answers. */
async function raw(port: number, send: Buffer, ms = 400): Promise<{ data: Buffer; closed: boolean }> {
  const s = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  let closed = false;
  s.on('data', (b) => chunks.push(b));
  s.on('close', () => (closed = true));
  s.on('error', () => {});
  await new Promise((r) => s.once('connect', r));
  s.write(send);
  await new Promise((r) => setTimeout(r, ms));
  s.destroy();
  return { data: Buffer.concat(chunks), closed };
}

tcp('garbage on the socket: NACK 0x00 and close; unknown type NACK 0x01 and stay; diagnostics before activation NACK 0x02 and close', async () => {
  let r = await raw(entity.tcpPort!, Buffer.from('0102030405060708', 'hex'), 150);
  assert.is(r.data.toString('hex'), encode({ type: PT.GENERIC_NACK, code: HEADER_NACK.INCORRECT_PATTERN }).toString('hex'));
  assert.ok(r.closed);
  r = await raw(entity.tcpPort!, Buffer.concat([Buffer.from('03fcabcd00000002aaaa', 'hex'), encode({ type: PT.ROUTING_ACTIVATION_REQ, sourceAddress: 0x0e81, activationType: 0 })]), 150);
  const msgs: Message[] = [];
  new DoipStream(4096, { message: (m) => msgs.push(m), error: () => {} }).push(r.data);
  assert.is(msgs[0]!.type, PT.GENERIC_NACK);
  assert.is((msgs[0] as { code: number }).code, HEADER_NACK.UNKNOWN_TYPE);
  assert.is(msgs[1]!.type, PT.ROUTING_ACTIVATION_RES, 'the socket lived on after the unknown type');
  r = await raw(entity.tcpPort!, encode({ type: PT.DIAG_MESSAGE, sourceAddress: 0x0e82, targetAddress: 0x1001, data: Buffer.from([0x3e, 0]) }), 150);
  const n = decodePayload(decodeHeader(r.data, 64), r.data.subarray(8));
  assert.is(n.type, PT.DIAG_NACK);
  assert.is((n as { code: number }).code, DIAG_NACK.INVALID_SA);
  assert.ok(r.closed);
});

tcp('T_TCP_Initial_Inactivity: a socket that never activates routing is closed', async () => {
  const r = await raw(entity.tcpPort!, Buffer.alloc(0), 600);
  assert.ok(r.closed, 'closed after the initial inactivity timer (300 ms in this test)');
});

tcp('A_DoIP_Diagnostic_Message: no ACK in time is PKS_DOIP_TIMEOUT; no UDS answer in time is PKS_UDS_TIMEOUT', async () => {
  // an entity that activates routing and then swallows diagnostic messages
  const srv = net.createServer((s) => {
    s.on('data', (b) => {
      if (b.readUInt16BE(2) === PT.ROUTING_ACTIVATION_REQ) s.write(encode({ type: PT.ROUTING_ACTIVATION_RES, testerAddress: 0x0e80, entityAddress: 0x1000, code: 0x10 }));
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const c = await DoipClient.connect({ host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port, sourceAddress: 0x0e80, timers: { A_DoIP_Diagnostic_Message: 150 } });
  try {
    await c.activate();
    await c.link(0x1001).send(Buffer.from([0x3e, 0])).then(
      () => assert.unreachable(),
      (e) => assert.is((e as { code: string }).code, 'PKS_DOIP_TIMEOUT'),
    );
    await c.link(0x1001).receive(100).then(
      () => assert.unreachable(),
      (e) => assert.is((e as { code: string }).code, 'PKS_UDS_TIMEOUT'),
    );
  } finally {
    c.close();
    srv.close();
  }
});

tcp('all sockets taken: routing activation answered 0x01; T_TCP_General_Inactivity closes an idle active socket', async () => {
  const cs = await Promise.all([0x0e90, 0x0e91, 0x0e92].map((sa) => connect(entity.tcpPort!, sa)));
  try {
    await Promise.all(cs.map((c) => c.activate()));
    const extra = await connect(entity.tcpPort!, 0x0e93);
    await extra.activate().then(
      () => assert.unreachable(),
      (e) => assert.match(String(e), new RegExp(`0x0${ROUTING.NO_FREE_SOCKET}`)),
    );
  } finally {
    for (const c of cs) c.close();
  }
  const idle = await startEntity({ identity: ID, resolve: echo(), tcp: { host: '127.0.0.1', port: 0 }, timers: { T_TCP_General_Inactivity: 200 } });
  try {
    const c = await connect(idle.tcpPort!);
    await c.activate();
    await new Promise((r) => setTimeout(r, 400));
    await c.link(0x1001).send(Buffer.from([0x3e, 0x00])).then(
      () => assert.unreachable(),
      (e) => assert.is((e as { code: string }).code, 'PKS_DOIP_CLOSED'),
    );
  } finally {
    await idle.close();
  }
});

tcp.run();
