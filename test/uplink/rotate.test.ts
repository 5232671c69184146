// rotate-cert end to end: the signed command, a new key and CSR made on the box, the reference
// KMS issuing the certificate with the broker's client CA, the box checking it, storing it
// (state dir, key 0600), reconnecting with it and only then reporting success; the new identity
// survives a restart. A failed rotation keeps the old identity. The KMS refuses CSRs for
// another name, with another key type, without a valid proof of possession, or from a box it
// does not know.
//
// What the old certificate can do afterwards: the dev broker has no CRL, so a connection with
// ONLY the old certificate still works until it expires; the test asserts exactly that, so a
// change here (revocation added) is noticed. Proof that the link uses the new certificate: the
// serial of the local certificate on the uplink's live TLS socket.
import { X509Certificate, generateKeyPairSync, webcrypto } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as x509 from '@peculiar/x509';
import mqtt from 'mqtt';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isPksError } from '../../appliance/errors.js';
import { checkIssuedCert, makeCsr } from '../../services/uplink/identity.js';
import { boxTopic } from '../../appliance/contracts/topics.js';
import { ClientCa } from '../../scripts/kms/client-ca.js';
import { main as fleet } from '../../scripts/fleet/main.js';
import { waitFor } from '../../scripts/plant/process.js';
import { makeCa } from '../helpers/pki.js';
import { startRig, type Rig } from './rig.js';

let rig: Rig;
const crypto = webcrypto as unknown as Crypto;

test.before(async () => {
  rig = await startRig({ name: 'rotate', timing: { certTimeoutSeconds: 3 } });
  await waitFor('uplink connected', async () => rig.uplink.connected, 10_000);
});

test.after(async () => {
  await rig?.stop();
});

test.after.each(() => {
  if (process.env.PKS_DEBUG_LINK) console.error(rig.logs.join('\n'));
  rig.logs.length = 0;
});

const resultOf = (seq: number) =>
  waitFor(
    `cmd-result ${seq}`,
    async () => rig.got.filter((m) => m.topic.endsWith('/cmd-result')).map((m) => JSON.parse(m.payload) as { seq?: number; ok: boolean; result?: Record<string, any>; error?: { code: string } }).find((r) => r.seq === seq),
    15_000,
  );

const sameSerial = (a: string | null | undefined, b: string | null | undefined): boolean => !!a && !!b && a.toLowerCase().replace(/^0+/, '') === b.toLowerCase().replace(/^0+/, '');

/** connects once with the given identity; true if the broker accepted it */
async function canConnect(cert: string, key: string, clientId: string): Promise<boolean> {
  const c = mqtt.connect({ protocol: 'mqtts', host: '127.0.0.1', port: rig.broker.port, servername: 'localhost', ca: readFileSync(rig.broker.caCert), cert, key, protocolVersion: 5, clientId, reconnectPeriod: 0, connectTimeout: 5000 });
  try {
    return await new Promise<boolean>((resolve) => {
      c.once('connect', () => resolve(true));
      c.once('error', () => resolve(false));
      c.once('close', () => resolve(false));
    });
  } finally {
    await c.endAsync(true).catch(() => undefined);
  }
}

test('rotate-cert: a new key and certificate, in use on the link, kept across a restart', async () => {
  const setupSerial = new X509Certificate(readFileSync(rig.identity.cert)).serialNumber;
  assert.ok(sameSerial(rig.uplink.linkCertSerial, setupSerial), 'starts with the setup identity');
  const setupCertText = readFileSync(rig.identity.cert, 'utf8');

  // the way ops does it: pks-fleet signs, the KMS relays
  const keyFile = path.join(rig.dir, 'ops.key');
  writeFileSync(keyFile, rig.ops.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const out: string[] = [];
  assert.is(await fleet(['--socket', rig.kms.socket, '--json', 'cmd', rig.boxId, 'rotate-cert', '--ops-key', keyFile], (l) => out.push(l)), 0);
  const r = await resultOf((JSON.parse(out[0]!) as { seq: number }).seq);
  assert.ok(r.ok, JSON.stringify(r));
  const serial = r.result!.serial as string;
  assert.not.ok(sameSerial(serial, setupSerial));
  assert.ok(rig.uplink.connected);
  assert.ok(sameSerial(rig.uplink.linkCertSerial, serial), 'the live TLS connection presents the new certificate');

  // stored in the state dir, key private, the setup files untouched
  const id = rig.uplink.state.state.identity!;
  assert.ok(id && sameSerial(id.serial, serial));
  assert.ok(id.keyFile.startsWith(rig.cfg.stateDir));
  assert.is(statSync(id.keyFile).mode & 0o777, 0o600);
  const cert = new X509Certificate(readFileSync(id.certFile));
  assert.ok(cert.checkIssued(new X509Certificate(readFileSync(rig.broker.caCert))));
  assert.ok(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(readFileSync(id.keyFile))));
  assert.is(cert.subject, `CN=${rig.boxId}`);
  assert.is(readFileSync(rig.identity.cert, 'utf8'), setupCertText);

  // the KMS keeps a record of what it issued
  const box = await rig.kms.fleet.call<{ events: Array<{ type?: string; serial?: string }> }>('box', { boxId: rig.boxId });
  assert.ok(box.events.some((e) => e.type === 'mqtt-cert-issued' && sameSerial(e.serial, serial)));

  // every later connect uses it: a restarted uplink comes back with the rotated identity
  await rig.uplink.stop();
  rig.uplink = rig.newUplink();
  await rig.uplink.start();
  await waitFor('reconnected after restart', async () => rig.uplink.connected, 10_000);
  assert.ok(sameSerial(rig.uplink.linkCertSerial, serial));
  assert.ok(sameSerial(rig.uplink.identitySerial, serial));

  // no CRL in the dev broker: the old certificate alone still gets in (see the header)
  assert.ok(await canConnect(setupCertText, readFileSync(rig.identity.key, 'utf8'), `${rig.boxId}-old-probe`));

  // a second rotation replaces the first and leaves only its own files behind
  const seq2 = await rig.command('rotate-cert');
  const r2 = await resultOf(seq2);
  assert.ok(r2.ok, JSON.stringify(r2));
  assert.ok(sameSerial(rig.uplink.linkCertSerial, r2.result!.serial as string));
  const files = readdirSync(path.join(rig.cfg.stateDir, 'identity')).sort();
  assert.equal(files, [path.basename(rig.uplink.state.state.identity!.certFile), path.basename(rig.uplink.state.state.identity!.keyFile)].sort());
});

test('a failed rotation keeps the old identity and reports a coded error', async () => {
  const before = rig.uplink.state.state.identity!;
  const serialBefore = rig.uplink.linkCertSerial;
  await rig.kms.stop(); // nobody answers the CSR
  try {
    const seq = await rig.command('rotate-cert');
    const r = await resultOf(seq);
    assert.not.ok(r.ok);
    assert.is(r.error!.code, 'PKS_UPLINK_DOWN');
    assert.equal(rig.uplink.state.state.identity, before);
    assert.ok(sameSerial(rig.uplink.linkCertSerial, serialBefore));
    assert.ok(rig.uplink.state.state.alerts.some((a) => a.code === 'PKS_UPLINK_DOWN' && a.detail.includes('rotate-cert')));
    assert.is(readdirSync(path.join(rig.cfg.stateDir, 'identity')).length, 2);
  } finally {
    await rig.kms.restart();
  }
  // the KMS answers the queued CSR after its restart: an answer nobody waits for changes nothing
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(rig.uplink.state.state.identity, before);
});

test('the KMS refuses forged, misnamed and non-P-256 CSRs, and boxes it does not know', async () => {
  const asBox = async (cn: string) => {
    const id = await rig.broker.clientCert(cn);
    const c = await mqtt.connectAsync({ protocol: 'mqtts', host: '127.0.0.1', port: rig.broker.port, servername: 'localhost', ca: readFileSync(rig.broker.caCert), cert: readFileSync(id.cert), key: readFileSync(id.key), protocolVersion: 5, clientId: `${cn}-csr-probe`, reconnectPeriod: 0 });
    return c;
  };
  const p256 = () => crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
  const csrOf = async (cn: string, keys: CryptoKeyPair, alg: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' }) =>
    (await x509.Pkcs10CertificateRequestGenerator.create({ name: new x509.Name([{ CN: [cn] }]), keys, signingAlgorithm: alg }, crypto)).toString('pem');
  const a = await p256();
  const b = await p256();
  const p384 = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cases: Array<[string, string, string]> = [
    ['wrong-cn', await csrOf('box-2', a), 'PKS_CSR_INVALID'],
    // A's public key, signed by B: no proof of possession of the key it names
    ['forged', await csrOf(rig.boxId, { publicKey: a.publicKey, privateKey: b.privateKey }), 'PKS_CSR_INVALID'],
    ['p384', await csrOf(rig.boxId, p384, { name: 'ECDSA', hash: 'SHA-384' } as EcdsaParams), 'PKS_CSR_INVALID'],
    ['junk', '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', 'PKS_CSR_INVALID'],
    // issue 9: a good CSR from whoever holds the box's MQTT key, without the HSM identity's endorsement
    ['not-endorsed', await csrOf(rig.boxId, a), 'PKS_CSR_INVALID'],
  ];
  const box1 = await asBox(rig.boxId);
  const box9 = await asBox('box-9');
  try {
    await rig.side.subscribeAsync(boxTopic('box-9', 'cert'), { qos: 1 });
    for (const [requestId, csr] of cases) await box1.publishAsync(boxTopic(rig.boxId, 'csr'), JSON.stringify({ requestId, csr }), { qos: 1 });
    // a box the KMS never registered, asking for its own (broker-authenticated) name
    await box9.publishAsync(boxTopic('box-9', 'csr'), JSON.stringify({ requestId: 'unknown-box', csr: await csrOf('box-9', a) }), { qos: 1 });
    const answers = await waitFor(
      'refusals',
      async () => {
        const m = new Map(rig.got.filter((g) => g.topic.endsWith('/cert')).map((g) => JSON.parse((JSON.parse(g.payload) as { payload: string }).payload).body as { requestId: string; cert?: string; error?: { code: string } }).map((x) => [x.requestId, x]));
        return [...cases.map(([id]) => id), 'unknown-box'].every((id) => m.has(id)) ? m : undefined;
      },
      10_000,
    );
    for (const [id, , code] of cases) {
      assert.not.ok(answers.get(id)!.cert, `${id}: no certificate`);
      assert.is(answers.get(id)!.error?.code, code, id);
    }
    assert.is(answers.get('unknown-box')!.error?.code, 'PKS_NOT_FOUND');
    const box = await rig.kms.fleet.call<{ alerts: Array<{ code: string; detail: string }> }>('box', { boxId: rig.boxId });
    assert.ok(box.alerts.filter((x) => x.detail.startsWith('csr refused')).length >= cases.length);
    // and the box's own identity did not move
    assert.ok(sameSerial(rig.uplink.linkCertSerial, rig.uplink.state.state.identity!.serial));
  } finally {
    await box1.endAsync(true);
    await box9.endAsync(true);
  }
});

test('the box refuses a certificate from another CA or for another key', async () => {
  const other = await makeCa(path.join(rig.dir, 'other-ca'), 'other');
  const fresh = await makeCsr(rig.boxId);
  const caPem = readFileSync(rig.broker.caCert, 'utf8');
  const refused = (pem: string, spki: Buffer, why: RegExp) => {
    try {
      checkIssuedCert(pem, { caPem, boxId: rig.boxId, spki });
    } catch (e) {
      assert.ok(isPksError(e) && e.code === 'PKS_CSR_INVALID', String(e));
      assert.match((e as Error).message, why);
      return;
    }
    assert.unreachable('accepted');
  };
  const foreign = await ClientCa.load({ certFile: other.cert, keyFile: other.key }).issue(rig.boxId, fresh.csrPem);
  refused(foreign.cert, fresh.spki, /not issued by the broker client CA/);
  const good = await ClientCa.load({ certFile: rig.broker.caCert, keyFile: rig.broker.caCert.replace(/\.crt$/, '.key') }).issue(rig.boxId, fresh.csrPem);
  const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
  refused(good.cert, otherKey, /does not carry the key/);
  assert.throws(() => checkIssuedCert(good.cert, { caPem, boxId: 'box-2', spki: fresh.spki }), /does not name box-2/);
  assert.throws(() => checkIssuedCert(good.cert, { caPem, boxId: rig.boxId, spki: fresh.spki, now: new Date(Date.now() + 400 * 86_400_000) }), /not valid now/);
  assert.ok(sameSerial(checkIssuedCert(good.cert, { caPem, boxId: rig.boxId, spki: fresh.spki }).serial, good.serial));
});

test.run();
