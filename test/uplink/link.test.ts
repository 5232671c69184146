// The KMS link end to end over the real broker: a real vault (transport, audit keys), the
// reference KMS as a process, the uplink in-process against a keystore stub. Covers the
// re-order, batches in chunks (lost, duplicated, reordered, tampered), the outbox through a
// broker outage and a KMS restart, and ops commands good and bad.
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadTrustAnchor } from '../../appliance/batch-format.js';
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { createLogger } from '../../appliance/log.js';
import { signCommand, type CommandPayload } from '../../appliance/contracts/commands.js';
import type { UplinkConfig } from '../../services/uplink/config.js';
import { boxTopic } from '../../appliance/contracts/topics.js';
import { Uplink } from '../../services/uplink/uplink.js';
import { allocate, buildChunks } from '../../scripts/kms/batches.js';
import { main as fleet } from '../../scripts/fleet/main.js';
import { importOem } from '../../scripts/kms/oem.js';
import { keySigner } from '../../scripts/kms/signer.js';
import { KmsStore } from '../../scripts/kms/store.js';
import { startVault, type VaultHandle } from '../../scripts/plant/vault.js';
import { waitFor } from '../../scripts/plant/process.js';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { startKms, type TestKms } from '../helpers/kms.js';
import { KeystoreStub } from './keystore-stub.js';

const run = promisify(execFile);
const BOX = 'box-1';
const POOL = 'oemA.bcm.k4';
const authKey = randomBytes(16);
const ops = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const logs: string[] = [];

let dir: string;
let broker: TestBroker;
let kms: TestKms;
let vault: VaultHandle;
let stub: KeystoreStub;
let uplink: Uplink;
let ksClient: IpcClient;
let side: MqttClient; // a second `kms` identity the test uses to play a KMS that misbehaves
const sideGot: Array<{ topic: string; payload: string }> = [];

const box = () => kms.fleet.call<Record<string, any>>('box', { boxId: BOX });

test.before(async () => {
  try {
    dir = await mkdtemp(path.join(os.tmpdir(), 'pks-link-'));
    broker = await startBroker();
    [kms, vault] = await Promise.all([
      startKms(broker, path.join(dir, 'kms')),
      startVault({ dir: path.join(dir, 'vault'), runDir: path.join(dir, 'run'), logDir: dir, boxId: BOX }),
    ]);
    stub = new KeystoreStub(loadTrustAnchor(readFileSync(kms.caCert, 'utf8')), BOX);
    stub.vault = vault.client('keystore');
    const ksSock = await stub.start(path.join(dir, 'run', 'keystore'));
    ksClient = ipcClient(ksSock);

    const vu = vault.client('uplink');
    const pk = async (name: string) => (await vu.call<{ spki: string }>('public-key', { name })).spki;
    await kms.fleet.call('register', { boxId: BOX, identity: await pk('identity'), transport: await pk('transport'), audit: await pk('audit') });
    const oem = path.join(dir, 'oem.json');
    await writeFile(oem, JSON.stringify({ v: 1, oem: 'oemA', pools: [{ pool: POOL, she: { keyId: 4, authKeyId: 1, counter: 1, flags: 0 }, authKey: authKey.toString('hex'), generate: 2000 }] }));
    await kms.fleet.call('import-oem', { path: oem });

    const id = await broker.clientCert(BOX);
    const opsFile = path.join(dir, 'ops.pub');
    await writeFile(opsFile, ops.publicKey.export({ type: 'spki', format: 'pem' }));
    const cfg: UplinkConfig = {
      boxId: BOX,
      stateDir: path.join(dir, 'uplink'),
      mqtt: { host: '127.0.0.1', port: broker.port, caFile: broker.caCert, certFile: id.cert, sessionExpirySeconds: 3600, keepaliveSeconds: 5, reconnectSeconds: 0.3 },
      opsPublicKeyFile: opsFile,
      kmsCaFile: kms.caCert,
      schedule: { mode: 'always', cron: '0 * * * *', windowSeconds: 60 },
      timing: { tickSeconds: 0.2, chunkTimeoutSeconds: 0.5, reorderRetrySeconds: 30, ackTimeoutSeconds: 1, statusSeconds: 1 },
    };
    uplink = new Uplink({ cfg, keystore: ksClient, vault: vu, opsKey: ops.publicKey, mqttKey: readFileSync(id.key, 'utf8'), log: createLogger('uplink', { level: 'debug', write: (l) => logs.push(l) }), version: '0.1.0-test' });
    await uplink.start();

    const sideId = await broker.clientCert('kms');
    side = mqtt.connect({ protocol: 'mqtts', host: '127.0.0.1', port: broker.port, servername: 'localhost', ca: readFileSync(broker.caCert), key: readFileSync(sideId.key), cert: readFileSync(sideId.cert), protocolVersion: 5, clientId: 'kms-test-side', reconnectPeriod: 300 });
    side.on('message', (topic, p) => sideGot.push({ topic, payload: p.toString() }));
    await new Promise<void>((r) => side.once('connect', () => r()));
    await side.subscribeAsync(boxTopic(BOX, 'resend'), { qos: 1 });
  } catch (err) {
    console.error('link: setup failed:', err);
    throw err;
  }
});

test.after(async () => {
  await side?.endAsync(true).catch(() => undefined);
  await uplink?.stop().catch(() => undefined);
  await ksClient?.close().catch(() => undefined);
  await stub?.stop().catch(() => undefined);
  await kms?.stop().catch(() => undefined);
  await kms?.fleet.close().catch(() => undefined);
  await vault?.stop().catch(() => undefined);
  await broker?.stop().catch(() => undefined);
  if (process.env.PKS_KEEP_TEST_DIR) console.error('kept', dir);
  else await rm(dir, { recursive: true, force: true });
});

test.after.each(() => {
  if (process.env.PKS_DEBUG_LINK) console.error(logs.join('\n'));
  logs.length = 0;
});

test('below its minimum the box re-orders once and the batch fills the pool', async () => {
  await ksClient.call('pool-set', { pool: POOL, minimum: 100, reorder: 1500 });
  await waitFor('stock', async () => stub.stats(POOL).available === 1500, 20_000);
  await waitFor('pending cleared', async () => Object.keys(uplink.state.state.pending).length === 0);
  assert.is(uplink.state.state.reorders, 1);
  assert.is((await box()).counters.batches, 1);
  await waitFor('retained status at the KMS', async () => (await box()).status?.stock?.[POOL]?.available === 1500);
});

test('injections reach the KMS, are verified there and acknowledged', async () => {
  const ks = vault.client('keystore');
  const done = await stub.inject(ks, POOL, 25, authKey);
  await waitFor('outbox drained', async () => stub.outbox.length === 0, 15_000);
  const { items } = await kms.fleet.call<{ items: Array<{ recordId: string; state: string }> }>('report', { oem: 'oemA', ecuType: 'bcm' });
  const verified = new Set(items.filter((i) => i.state === 'VERIFIED').map((i) => i.recordId));
  for (const r of done) assert.ok(verified.has(r), `${r} verified`);
  assert.is(stub.stats(POOL).reported, 25);
  assert.is((await box()).counters.rejected, 0);
});

test('broker down for a while: production goes on, nothing is lost, all delivered afterwards', async () => {
  const ks = vault.client('keystore');
  await run(path.resolve('scripts/broker.sh'), ['stop', broker.dir]);
  await waitFor('uplink sees the outage', async () => !uplink.connected);
  const done = await stub.inject(ks, POOL, 30, authKey); // the line keeps running from stock
  await new Promise((r) => setTimeout(r, 800));
  assert.ok(stub.outbox.length >= 31, 'records wait in the outbox');
  await run(path.resolve('scripts/broker.sh'), ['start', broker.dir], { env: { ...process.env, BROKER_PORT: String(broker.port) } });
  await waitFor('outbox drained after the outage', async () => stub.outbox.length === 0, 20_000);
  const { items } = await kms.fleet.call<{ items: Array<{ recordId: string; state: string }> }>('report', { boxId: BOX });
  const verified = new Set(items.filter((i) => i.state === 'VERIFIED').map((i) => i.recordId));
  for (const r of done) assert.ok(verified.has(r));
  assert.is(verified.size, 55);
});

test('the KMS restarted mid-sync: unacknowledged records stay and go through afterwards', async () => {
  const ks = vault.client('keystore');
  await kms.stop();
  await stub.inject(ks, POOL, 10, authKey);
  await new Promise((r) => setTimeout(r, 1500)); // at least one file sent and not acknowledged
  assert.ok(stub.outbox.length >= 11);
  await kms.restart();
  await waitFor('outbox drained after the KMS came back', async () => stub.outbox.length === 0, 20_000);
  assert.is((await box()).counters.verified, 65);
});

test('lost, duplicated and reordered chunks: the box asks for what is missing and imports each once', async () => {
  // a second KMS store playing the central side, same signer, a pool of its own
  const st = new KmsStore(path.join(dir, 'side-state'));
  try {
    const b = await box();
    const reg = (await kms.fleet.call<{ boxes: unknown[] }>('boxes')) && b;
    void reg;
    const vu = vault.client('uplink');
    const pk = async (name: string) => (await vu.call<{ spki: string }>('public-key', { name })).spki;
    st.boxes.putSync(BOX, { boxId: BOX, identity: await pk('identity'), transport: await pk('transport'), audit: await pk('audit'), registeredAt: '', alerts: [], events: [], cmdResults: [], counters: { batches: 0, keysSent: 0, verified: 0, burned: 0, rejected: 0, files: 0 } });
    importOem(st, { v: 1, oem: 'oemB', pools: [{ pool: 'oemB.gw.k5', she: { keyId: 5, authKeyId: 1, counter: 2, flags: 0 }, authKey: authKey.toString('hex'), generate: 9000 }] });
    const { batch } = allocate(st, BOX, 'side-1', 'oemB.gw.k5', 9000);
    assert.ok(batch.chunks >= 4, `${batch.chunks} chunks`);
    const signer = keySigner(createPrivateKey(readFileSync(kms.signer.key)), readFileSync(kms.signer.cert, 'utf8'));
    const chunks = [...buildChunks(st, batch, signer)].map((c) => JSON.stringify(c));
    const topic = boxTopic(BOX, 'batch');
    // chunk 1 is lost, chunk 0 comes twice, the rest out of order
    for (const i of [2, 0, 0, ...Array.from({ length: batch.chunks - 3 }, (_, k) => batch.chunks - 1 - k)]) await side.publishAsync(topic, chunks[i]!, { qos: 1 });
    const ask = await waitFor('resend request', async () => sideGot.find((m) => m.topic.endsWith('/resend')), 10_000);
    assert.equal(JSON.parse(ask.payload), { batchId: batch.batchId, chunks: [1] });
    await side.publishAsync(topic, chunks[1]!, { qos: 1 });
    await waitFor('batch complete', async () => stub.stats('oemB.gw.k5').available === 9000, 10_000);
    assert.ok(uplink.counters.duplicates >= 1);
    assert.not.ok(uplink.state.state.batches[batch.batchId]);

    // a tampered chunk: refused whole, alert raised, stock untouched
    const before = stub.stats('oemB.gw.k5').available;
    const c = JSON.parse(chunks[0]!) as { payload: string };
    c.payload = c.payload.replace('"chunk":0', '"chunk":0 ');
    await side.publishAsync(topic, JSON.stringify(c), { qos: 1 });
    await waitFor('alert at the KMS', async () => (await box()).alerts.some((a: { code: string }) => a.code === 'PKS_BATCH_SIGNATURE'), 10_000);
    assert.is(stub.stats('oemB.gw.k5').available, before);
  } finally {
    await st.close();
  }
});

test('ops commands: a signed one runs, the bad ones are refused with a code and change nothing', async () => {
  const keyFile = path.join(dir, 'ops.key');
  await writeFile(keyFile, ops.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const out: string[] = [];
  assert.is(await fleet(['--socket', kms.socket, '--json', 'cmd', BOX, 'set-quota', JSON.stringify({ pool: POOL, minimum: 7, reorder: 99 }), '--ops-key', keyFile], (s) => out.push(s)), 0);
  const seq = (JSON.parse(out[0]!) as { seq: number }).seq;
  await waitFor('good command result', async () => (await box()).cmdResults.find((r: { seq: number; ok: boolean }) => r.seq === seq && r.ok));
  assert.equal(stub.pools[POOL], { minimum: 7, reorder: 99 });
  assert.is(uplink.state.state.lastSeq, seq);

  const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const p = (o: Partial<CommandPayload>): CommandPayload => ({ v: 1, seq: seq + 1, expiresAt: new Date(Date.now() + 60_000).toISOString(), boxId: BOX, command: 'set-quota', args: { pool: POOL, minimum: 0, reorder: 0 }, ...o });
  const bad: Array<[string, string]> = [
    [JSON.stringify({ payload: JSON.stringify(p({ seq: seq + 10 })) }), 'PKS_COMMAND_SIGNATURE'],
    [JSON.stringify(signCommand(p({ seq: seq + 11 }), other.privateKey)), 'PKS_COMMAND_SIGNATURE'],
    [JSON.stringify(signCommand(p({ seq: seq + 12, expiresAt: new Date(Date.now() - 1000).toISOString() }), ops.privateKey)), 'PKS_COMMAND_STALE'],
    [JSON.stringify(signCommand(p({ seq }), ops.privateKey)), 'PKS_COMMAND_STALE'],
    [JSON.stringify(signCommand(p({ seq: seq + 13, boxId: 'box-2' }), ops.privateKey)), 'PKS_COMMAND_INVALID'],
    ['{"payload": 1', 'PKS_COMMAND_INVALID'],
  ];
  for (const [raw] of bad) await side.publishAsync(boxTopic(BOX, 'cmd'), raw, { qos: 1 });
  const results = await waitFor(
    'refusals',
    async () => {
      const r = ((await box()).cmdResults as Array<{ ok: boolean; error?: { code: string }; receivedAt: string }>).filter((x) => !x.ok);
      return r.length >= bad.length ? r.slice(-bad.length) : undefined;
    },
    10_000,
  );
  assert.equal(
    results.map((r) => r.error!.code),
    bad.map(([, c]) => c),
  );
  assert.equal(stub.pools[POOL], { minimum: 7, reorder: 99 }, 'nothing changed');
  assert.is(uplink.state.state.lastSeq, seq, 'the last seq did not move');
  assert.ok(uplink.state.state.alerts.some((a) => a.code === 'PKS_COMMAND_SIGNATURE'));

  // the fleet view shows it all
  const listing: string[] = [];
  await fleet(['--socket', kms.socket, '--json', 'list'], (s) => listing.push(s));
  const boxes = JSON.parse(listing[0]!) as Array<{ boxId: string; version: string; lastSeen: string }>;
  assert.is(boxes[0]!.boxId, BOX);
  assert.is(boxes[0]!.version, '0.1.0-test');
  assert.ok(boxes[0]!.lastSeen);
});

test.run();
