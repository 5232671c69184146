// Writes the seed corpus of every fuzz target (test/campaign/corpus/<target>/): well-formed
// inputs of each format, small, so that the mutations start from something the parser takes.
// Run once and commit what it writes: `node --import tsx test/campaign/fuzz/make-corpus.ts`.
// Signed formats are seeded as 0x00 + payload (the harness signs them); "@expires" and "@now"
// in a payload are replaced by the harness with times that are valid when the fuzzer runs.
import { generateKeyPairSync, randomBytes, sign as signRaw } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PT, encode } from '../../../appliance/doip/codec.js';
import { encodeCF, encodeFC, encodeFF, encodeSF } from '../../../appliance/isotp/frames.js';
import { encodeSocketCan } from '../../../appliance/isotp/socketcan.js';
import { sheMessages } from '../../../appliance/she.js';
import { encodeSigned, tokenKeyId } from '../../../appliance/unlock-token.js';
import { buildBatch, randomSheKeys } from '../../../scripts/plant/batch.js';
import { challengeRequest, proofRequest } from '../../../scripts/plant/ecu-unlock.js';
import { makeKmsPki } from '../../../scripts/plant/keystore.js';
import { CORPUS_DIR } from './engine.js';
import { BOX_ID } from './targets.js';

// only when run as a script (a test runner that imports every file under test/ must not rewrite the corpus)
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await makeCorpus();

async function makeCorpus(): Promise<void> {
  const files: Record<string, Record<string, Buffer | string>> = {};
  const put = (target: string, name: string, data: Buffer | string): void => void ((files[target] ??= {})[name] = data);
  const signedSeed = (payload: unknown): Buffer => Buffer.concat([Buffer.from([0]), Buffer.from(JSON.stringify(payload))]);

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'pks-corpus-'));
  try {
    // batch chunks: a payload for this box (signed by the harness) and a whole chunk off the wire
    const kms = await makeKmsPki(tmp);
    const transport = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
    const chunks = buildBatch({ batchId: 'b-fuzz-1', boxId: BOX_ID, transportSpki: transport, signer: kms.signer, set: { pool: 'oem1.bcm.key4', keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: randomBytes(16), keys: randomSheKeys('r', 5) }, chunkSize: 3 });
    chunks.forEach((c, i) => put('batch-chunk', `payload-${i}.bin`, signedSeed(JSON.parse(c.payload))));
    put('batch-chunk', 'wire-0.json', JSON.stringify(chunks[0]));

    // ops commands, one of each kind
    const cmd = (command: string, args: Record<string, unknown>, seq = 10) => signedSeed({ v: 1, seq, expiresAt: '@expires', boxId: BOX_ID, command, args });
    put('mqtt-command', 'set-quota.bin', cmd('set-quota', { pool: 'oem1.bcm.key4', minimum: 10, reorder: 100, critical: 5 }));
    put('mqtt-command', 'set-schedule.bin', cmd('set-schedule', { mode: 'windows', cron: '0 */2 * * *', windowSeconds: 600 }));
    put('mqtt-command', 'sync-now.bin', cmd('sync-now', {}));
    put('mqtt-command', 'revoke-tester.bin', cmd('revoke-tester', { cn: 'eol-tester-01' }));
    put('mqtt-command', 'rotate-cert.bin', cmd('rotate-cert', {}));
    put('mqtt-command', 'unlock-revoke.bin', cmd('unlock-revoke', { cn: 'engineer-1' }));
    put('mqtt-command', 'wire.json', JSON.stringify({ payload: JSON.stringify({ v: 1, seq: 4, expiresAt: '2030-01-01T00:00:00.000Z', boxId: BOX_ID, command: 'sync-now', args: {} }), sig: 'MEUCIQDabcdefghij0123456789abcdefghij0123456789abcdefghijklmnAiAabcdefghij0123456789abcdefghij0123456789abcdefgh' }));

    // KMS answers: ack (with ids, rejections, anchors), cert answer, sync answer
    const kmsMsg = (kind: string, body: Record<string, unknown>) => signedSeed({ type: 'pks-kms-message', v: 1, kind, boxId: BOX_ID, at: '@now', body });
    put('mqtt-kms', 'ack.bin', kmsMsg('ack', { fileId: '0000010000000042', ids: ['0000010000000040', '0000010000000041'], rejected: [{ id: '0000010000000039', code: 'PKS_CONFLICT', detail: 'already reported' }], anchors: [{ seq: 3, auditSeq: 40, head: 'ab'.repeat(32), at: '2026-01-01T00:00:00Z', sig: 'MEUC' }] }));
    put('mqtt-kms', 'ack-error.bin', kmsMsg('ack', { fileId: null, ids: [], error: { code: 'PKS_BAD_REQUEST', detail: 'file signature' } }));
    put('mqtt-kms', 'cert.bin', kmsMsg('cert', { requestId: 'rq-1', cert: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' }));
    put('mqtt-kms', 'sync.bin', kmsMsg('sync', { requestId: 'rq-2', lastSeq: 17 }));

    // tester API: first byte the route (0 reserve, 1 confirm, 2 fail, 3 history, 4 ECU certificate, 5 reserve as another tester)
    const route = (n: number, body: unknown): Buffer => Buffer.concat([Buffer.from([n]), Buffer.from(typeof body === 'string' ? body : JSON.stringify(body))]);
    put('tester-api', 'reserve.bin', route(0, { pool: 'oem1.bcm.key4', uid: '00'.repeat(14) + '01' }));
    put('tester-api', 'confirm.bin', route(1, { m4: 'ab'.repeat(32), m5: 'cd'.repeat(16) }));
    put('tester-api', 'fail.bin', route(2, { reason: 'ECU did not answer' }));
    put('tester-api', 'history.bin', route(3, 'uid=000000000000000000000000000001&limit=10'));
    put('tester-api', 'ecu-cert.bin', route(4, { profile: 'oem1.bcm', uid: '00'.repeat(14) + '02', csr: '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n' }));
    put('tester-api', 'reserve-other.bin', route(5, { pool: 'oem1.gw.key4', uid: '00'.repeat(14) + '03' }));

    // config files: "<service>\n" + a config as plant IT writes it
    const cfg = (service: string, c: unknown): Buffer => Buffer.from(`${service}\n${JSON.stringify(c, null, 1)}`);
    put('config', 'vault.bin', cfg('vault', { boxId: 'box-1', hsm: { module: '/usr/lib/softhsm/libsofthsm2.so', tokenLabel: 'pks-box-1', pinFile: '/run/credentials/hsm-pin' }, unlock: { tokenKeys: ['oem1'] } }));
    put('config', 'keystore.bin', cfg('keystore', { boxId: 'box-1', dataDir: '/var/lib/pks/keystore', kmsCa: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', mapSizeMb: 4096, pools: [{ pool: 'oem1.bcm.key4', minimum: 100, reorder: 500 }], audit: { checkpointEvery: 1000, checkpointSeconds: 60 } }));
    put('config', 'tester-api.bin', cfg('tester-api', { listen: { host: '0.0.0.0', port: 8443 }, tls: { cert: '/etc/pks/tls.crt', keyFile: '/etc/pks/tls.key', ca: '/etc/pks/tester-ca.crt' }, limits: { requestsPerSecond: 20, burst: 40 } }));
    put('config', 'uplink.bin', cfg('uplink', { boxId: 'box-1', stateDir: '/var/lib/pks/uplink', mqtt: { host: 'kms.example', port: 8883, caFile: '/etc/pks/mqtt-ca.crt', certFile: '/etc/pks/mqtt.crt', keyFile: '/etc/pks/mqtt.key' }, opsPublicKeyFile: '/etc/pks/ops.pub', kmsCaFile: '/etc/pks/kms-ca.crt', schedule: { mode: 'windows', cron: '0 * * * *', windowSeconds: 600 } }));
    put('config', 'sentinel.bin', cfg('sentinel', { site: 'plant-1', boxId: 'box-1', dataDir: '/var/lib/pks/sentinel', mail: { host: 'smtp.example', port: 587, from: 'pks@plant.example', to: ['it@plant.example'] } }));
    put('config', 'unlock.bin', cfg('unlock', { boxId: 'box-1', tls: { cert: '/etc/pks/unlock.crt' }, ecuTypes: { bcm: { tokenKey: 'oem1' } } }));
    put('config', 'updater.bin', cfg('updater', { boxId: 'box-1', stateDir: '/var/lib/pks/updater' }));

    // SHE: a confirm's M4/M5 as text, a whole M1..M3 the simulator takes, proofs of odd lengths
    const uid = Buffer.from('0102030405060708090a0b0c0d0e0f', 'hex');
    const m = sheMessages({ uid, keyId: 4, authKeyId: 1, authKey: Buffer.alloc(16, 0x42), newKey: Buffer.alloc(16, 7), counter: 1, flags: 0 });
    put('she', 'confirm.bin', Buffer.concat([Buffer.from([0]), Buffer.from(`${m.m4.toString('hex')} ${m.m5.toString('hex')}`)]));
    put('she', 'load.bin', Buffer.concat([Buffer.from([1]), m.m1, m.m2, m.m3]));
    put('she', 'verify.bin', Buffer.concat([Buffer.from([2]), m.m4, m.m5]));

    // unlock tokens: a well-formed signed token, and the ECU's 0x29 requests
    const tk = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = tk.publicKey.export({ type: 'spki', format: 'der' });
    const now = Math.floor(Date.now() / 1000);
    const signed = encodeSigned({ keyId: tokenKeyId(spki), tokenId: randomBytes(16), ecuType: 'bcm', uid: Buffer.alloc(15, 1), challenge: randomBytes(32), permissions: 0b1011n, notBefore: now, notAfter: now + 3600 });
    const token = Buffer.concat([signed, signRaw('sha256', signed, { key: tk.privateKey, dsaEncoding: 'ieee-p1363' })]);
    put('unlock-token', 'token.bin', token);
    put('unlock-token', 'uds-challenge.bin', challengeRequest());
    put('unlock-token', 'uds-proof.bin', proofRequest(token));

    // DoIP: the messages a tester and an ECU exchange
    put('doip', 'routing-activation.bin', encode({ type: PT.ROUTING_ACTIVATION_REQ, sourceAddress: 0x0e80, activationType: 0 }));
    put('doip', 'alive.bin', encode({ type: PT.ALIVE_CHECK_REQ }));
    put('doip', 'diag.bin', encode({ type: PT.DIAG_MESSAGE, sourceAddress: 0x0e80, targetAddress: 0x1001, data: Buffer.from('2701', 'hex') }));

    // ISO-TP / CAN: mode byte (0 classic, 1 FD, 2 SocketCAN, 3 UDS answers) + frame
    const classic = { fd: false, txDl: 8 };
    const fd = { fd: true, txDl: 64 };
    put('isotp', 'sf.bin', Buffer.concat([Buffer.from([0]), encodeSF(classic, Buffer.from('2701', 'hex'))]));
    put('isotp', 'ff.bin', Buffer.concat([Buffer.from([0]), encodeFF(classic, 20, Buffer.alloc(6, 1))]));
    put('isotp', 'cf.bin', Buffer.concat([Buffer.from([0]), encodeCF(classic, 1, Buffer.alloc(7, 2))]));
    put('isotp', 'fc.bin', Buffer.concat([Buffer.from([0]), encodeFC(classic, 0, 8, 5)]));
    put('isotp', 'fd-sf.bin', Buffer.concat([Buffer.from([1]), encodeSF(fd, Buffer.alloc(30, 3))]));
    put('isotp', 'socketcan.bin', Buffer.concat([Buffer.from([2]), encodeSocketCan({ id: 0x7e0, data: Buffer.from('0227010000000000', 'hex') })]));
    put('isotp', 'uds-positive.bin', Buffer.concat([Buffer.from([3, 0x29]), Buffer.from('6905000000', 'hex')]));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  for (const [target, seeds] of Object.entries(files)) {
    const dir = path.join(CORPUS_DIR, target);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    for (const [name, data] of Object.entries(seeds)) writeFileSync(path.join(dir, name), data);
    console.log(`${target}: ${Object.keys(seeds).length} seeds`);
  }
}
