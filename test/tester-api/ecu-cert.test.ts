// ECU certificates end to end (issue 9, items 1 and 2): the tester-api service process over
// mTLS, the REAL keystore recording each request on disk before the REAL vault (fresh SoftHSM
// token) builds and signs the certificate from its profile. A compromised tester API (a direct
// call on its vault socket) gets nothing signed; a tester without the profile's grant gets no
// certificate; every certificate counts against the tester's limits.
import { execFile } from 'node:child_process';
import { X509Certificate, createPublicKey, verify, webcrypto } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { IpcClient } from '../../appliance/ipc.js';
import { boxCsrMessage } from '../../appliance/signed-messages.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { startService, waitFor, type Proc } from '../../scripts/plant/process.js';
import { openDbs } from '../../services/keystore/db.js';
import { freePort } from '../helpers/ports.js';
import { call, pki, uid, type Pki } from './fixture.js';
import { Client } from 'undici';

const run = promisify(execFile);
const wc = webcrypto as unknown as Crypto;
const PROFILE = 'oem1.bcm';

interface Ctx {
  dir: string;
  pki: Pki;
  box: Box;
  caPem: string;
  caFile: string;
  api: Proc;
  client: Client;
  url: string;
  /** the tester API's own vault socket, as a compromised tester API would use it */
  apiVault: IpcClient;
}
const test = suite<Ctx>('tester-api: ECU certificates (real keystore and vault, service process)');

async function csrFor(cn: string, alg: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' }): Promise<string> {
  const keys = (await wc.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${cn}`, keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } }, wc);
  return csr.toString('pem');
}

const code = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return 'no error';
};

/** The audit entries of the stopped-or-running keystore, read from its LMDB files. */
function auditEvents(box: Box): Record<string, unknown>[] {
  const dbs = openDbs(box.keystore.dataDir, { readOnly: true });
  try {
    return [...dbs.audit.getRange({})].map((e) => JSON.parse(e.value.line) as Record<string, unknown>);
  } finally {
    void dbs.root.close();
  }
}

test.before(async (ctx) => {
  ctx.dir = await mkdtemp(path.join(os.tmpdir(), 'pks-tapi-ecu-'));
  ctx.pki = await pki();
  ctx.box = await startBox({
    base: path.join(ctx.dir, 'box'),
    boxId: 'box-ecu-1',
    pools: [{ pool: 'oem1.bcm.key4', minimum: 0, reorder: 1 }],
    ecuCa: { profiles: { [PROFILE]: { validityDays: 365, subjectTemplate: 'CN={uid},OU=ECU,O=OEM1' } } },
  });
  ctx.caFile = ctx.box.vault.ecuCaFile!;
  ctx.caPem = await readFile(ctx.caFile, 'utf8');
  const admin = ctx.box.keystore.client('pksctl');
  const future = new Date(Date.now() + 86_400_000).toISOString();
  await admin.call('tester-put', { cn: 'ecu-station', station: 'eol-7', pools: ['oem1.bcm.key4'], expiresAt: future, revoked: false, certProfiles: [PROFILE] });
  await admin.call('tester-put', { cn: 'alice', station: 'eol-1', pools: ['oem1.bcm.key4'], expiresAt: future, revoked: false });
  await admin.call('tester-put', { cn: 'greedy', station: 'eol-2', pools: [], expiresAt: future, revoked: false, certProfiles: [PROFILE] });

  const port = await freePort();
  const configFile = path.join(ctx.dir, 'tester-api.json');
  await writeFile(
    configFile,
    JSON.stringify({
      listen: { host: '127.0.0.1', port },
      tls: { cert: ctx.pki.serverCertFile, keyFile: ctx.pki.serverKeyFile, ca: ctx.pki.testerCaFile },
      limits: { newReservationsPerHour: 3 },
    }),
  );
  ctx.api = startService('tester-api', { PKS_CONFIG: configFile, PKS_RUN_DIR: ctx.box.runDir, CREDENTIALS_DIRECTORY: '' }, ctx.box.logDir);
  const cred = ctx.pki.testers['ecu-station']!;
  ctx.url = `https://localhost:${port}`;
  ctx.client = new Client(ctx.url, { connect: { ca: ctx.pki.boxCa, cert: cred.cert, key: cred.key } });
  ctx.apiVault = ctx.box.vault.client('tester-api');
  await waitFor('tester-api ready', async () => (await call(ctx.client, 'GET', '/v1/health')).body?.ready === true, 20_000);
});

test.after(async (ctx) => {
  await ctx.client?.destroy().catch(() => {});
  await ctx.api?.stop();
  await ctx.box?.stop();
  if (ctx.dir) await rm(ctx.dir, { recursive: true, force: true });
});

test('item 1: the tester API socket of the vault signs nothing, not "hello world", not an ECU certificate; the uplink only its own CSR', async (ctx) => {
  const hello = Buffer.from('hello world').toString('base64');
  // today's main signed this with the OEM's ECU CA key
  assert.ok(['PKS_IPC_FORBIDDEN', 'PKS_IPC_UNKNOWN_VERB'].includes(await code(ctx.apiVault.call('sign-ecu-ca', { data: hello }))));
  const spki = Buffer.from(new X509Certificate(ctx.caPem).publicKey.export({ type: 'spki', format: 'der' })).toString('base64');
  assert.is(await code(ctx.apiVault.call('ecu-cert-issue', { uid: uid(0x1234), spki, profile: PROFILE, serial: '40'.repeat(16) })), 'PKS_IPC_FORBIDDEN');
  for (const verb of ['audit-checkpoint', 'verification-file', 'ecu-ca-certificate', 'sign-audit', 'sign-identity', 'record-seal']) {
    assert.ok(['PKS_IPC_FORBIDDEN', 'PKS_IPC_UNKNOWN_VERB'].includes(await code(ctx.apiVault.call(verb, {}))), verb);
  }
  // the uplink (MQTT-facing) signs nothing either: no audit checkpoints, no identity signatures
  const up = ctx.box.vault.client('uplink');
  for (const verb of ['sign-audit', 'sign-identity', 'audit-checkpoint', 'verification-file', 'ecu-cert-issue']) {
    assert.ok(['PKS_IPC_FORBIDDEN', 'PKS_IPC_UNKNOWN_VERB'].includes(await code(up.call(verb, { data: hello }))), `uplink ${verb}`);
  }
  // its one signing verb: the box's own rotate-cert CSR, endorsed by the identity key only when it names this box
  assert.is(await code(up.call('box-csr', { csr: await csrFor('another-box') })), 'PKS_CSR_INVALID');
  assert.is(await code(up.call('box-csr', { csr: 'x'.repeat(100) })), 'PKS_CSR_INVALID');
  const csr = await csrFor('box-ecu-1');
  const { endorsement } = await up.call<{ endorsement: string }>('box-csr', { csr });
  const idKey = createPublicKey({ key: Buffer.from((await up.call<{ spki: string }>('public-key', { name: 'identity' })).spki, 'base64'), format: 'der', type: 'spki' });
  const csrKey = Buffer.from(new x509.Pkcs10CertificateRequest(csr).publicKey.rawData);
  assert.ok(verify('sha256', boxCsrMessage('box-ecu-1', csrKey), { key: idKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(endorsement, 'base64')));
});

test('item 1: the keystore socket gets only well-formed structures signed', async (ctx) => {
  const ks = ctx.box.vault.client('keystore');
  const h = 'ab'.repeat(32);
  const g = '0'.repeat(64);
  assert.is(await code(ks.call('sign-audit', { data: Buffer.from('hello world').toString('base64') })), 'PKS_IPC_UNKNOWN_VERB');
  assert.is(await code(ks.call('audit-checkpoint', { seq: 5, hash: h, prevSeq: 5, prevHash: g, at: new Date().toISOString() })), 'PKS_OUT_OF_RANGE');
  assert.is(await code(ks.call('audit-checkpoint', { seq: 5, hash: h, prevSeq: 0, prevHash: h, at: new Date().toISOString() })), 'PKS_BAD_REQUEST');
  assert.is(await code(ks.call('audit-checkpoint', { seq: 5, hash: h, prevSeq: 0, prevHash: g, at: new Date(Date.now() + 86_400_000).toISOString() })), 'PKS_OUT_OF_RANGE');
  assert.is(await code(ks.call('verification-file', { payload: 'hello world' })), 'PKS_BAD_REQUEST');
  const other = JSON.stringify({ type: 'pks-verification', v: 1, fileId: 'vf-00000000-0000-0000-0000-000000000000', boxId: 'another-box', createdAt: new Date().toISOString(), items: [{ id: '1', kind: 'event', at: 'x', body: {} }] });
  assert.is(await code(ks.call('verification-file', { payload: other })), 'PKS_BAD_REQUEST');
  const ok = await ks.call<{ sig: string }>('audit-checkpoint', { seq: 5, hash: h, prevSeq: 0, prevHash: g, at: new Date().toISOString() });
  assert.is(Buffer.from(ok.sig, 'base64').length, 64);
  // a CA:TRUE certificate is not in any profile: an ECU certificate is always an end entity
  assert.is(await code(ks.call('ecu-cert-issue', { uid: uid(0x55), spki: Buffer.alloc(91, 1).toString('base64'), profile: 'oem1.nosuch', serial: '40'.repeat(16) })), 'PKS_NOT_FOUND');
});

test('item 2: a CSR becomes a certificate built from the profile, recorded before it was signed', async (ctx) => {
  const u = uid(0xabcdef).toUpperCase();
  const r = await call(ctx.client, 'POST', '/v1/ecu/certificates', { uid: u, profile: PROFILE, csr: await csrFor(u) });
  assert.is(r.status, 200, r.text);
  assert.equal(Object.keys(r.body).sort(), ['certificate', 'serial']);
  const cert = new X509Certificate(r.body.certificate);
  const ca = new X509Certificate(ctx.caPem);
  assert.ok(cert.verify(ca.publicKey), 'signature verifies under the CA public key');
  assert.ok(cert.checkIssued(ca));
  assert.is(cert.ca, false);
  assert.is(cert.subject, `CN=${u}\nOU=ECU\nO=OEM1`);
  assert.is(cert.serialNumber.toLowerCase(), r.body.serial);
  assert.equal(cert.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'extKeyUsage clientAuth');
  const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
  assert.ok(Math.abs(days - 365) < 0.01, `validity ${days} days`);
  const certFile = path.join(ctx.dir, 'ecu.crt');
  await writeFile(certFile, r.body.certificate);
  const v = await run('openssl', ['verify', '-CAfile', ctx.caFile, '-purpose', 'sslclient', certFile]);
  assert.match(v.stdout, /: OK/);
  const text = (await run('openssl', ['x509', '-in', certFile, '-noout', '-text'])).stdout;
  assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature\s/);
  assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
  assert.match(text, /X509v3 Authority Key Identifier/);
  // on record: the request (with the serial) before, the issued certificate after, and in the outbox
  const out = await ctx.box.keystore.client('uplink').call<{ items: { kind: string; body: Record<string, unknown> }[] }>('outbox-peek', {});
  const item = out.items.find((i) => i.kind === 'cert' && i.body.serial === r.body.serial);
  assert.ok(item, 'cert item in the outbox');
  assert.is(item!.body.tester, 'ecu-station');
  assert.is(item!.body.uid, u.toLowerCase());
});

test('item 2: a tester without the grant for the profile is refused, at the route and at the keystore', async (ctx) => {
  const u = uid(0x4242);
  const alice = ctx.pki.testers['alice']!;
  const c = new Client(ctx.url, { connect: { ca: ctx.pki.boxCa, cert: alice.cert, key: alice.key } });
  try {
    const r = await call(c, 'POST', '/v1/ecu/certificates', { uid: u, profile: PROFILE, csr: await csrFor(u) });
    assert.is(r.status, 403, r.text);
    assert.is(r.body.code, 'PKS_POOL_FORBIDDEN');
  } finally {
    await c.close();
  }
  // a compromised tester API asking the keystore directly for a tester without the grant
  const ks = ctx.box.keystore.client('tester-api');
  assert.is(await code(ks.call('ecu-cert', { tester: 'alice', uid: u, profile: PROFILE, csr: await csrFor(u) })), 'PKS_POOL_FORBIDDEN');
  assert.is(await code(ks.call('ecu-cert', { tester: 'nobody', uid: u, profile: PROFILE, csr: await csrFor(u) })), 'PKS_TESTER_UNKNOWN');
});

test('bad CSRs: coded PKS_CSR_INVALID, nothing signed', async (ctx) => {
  const u = uid(0x77);
  const good = await csrFor(u);
  const der = Buffer.from(good.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - 5]! ^= 0x01;
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE REQUEST-----\n`;
  const cases: [string, string][] = [
    ['CN is another ECU', await csrFor(uid(0x78))],
    ['P-384 key', await csrFor(u, { name: 'ECDSA', namedCurve: 'P-384' })],
    ['tampered signature', tampered],
    ['a certificate instead', ctx.caPem],
  ];
  const ks = ctx.box.keystore.client('tester-api');
  for (const [name, csr] of cases) {
    assert.is(await code(ks.call('ecu-cert', { tester: 'ecu-station', uid: u, profile: PROFILE, csr })), 'PKS_CSR_INVALID', name);
  }
});

test('item 2: certificates count against the tester quota (3 per hour here)', async (ctx) => {
  const cred = ctx.pki.testers['greedy']!;
  const c = new Client(ctx.url, { connect: { ca: ctx.pki.boxCa, cert: cred.cert, key: cred.key } });
  try {
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const u = uid(0x9000 + i);
      codes.push((await call(c, 'POST', '/v1/ecu/certificates', { uid: u, profile: PROFILE, csr: await csrFor(u) })).status);
    }
    assert.equal(codes, [200, 200, 200, 429, 429]);
  } finally {
    await c.close();
  }
});

test('every certificate the vault signed is on record: a request entry with its serial comes first', async (ctx) => {
  await ctx.api.stop();
  await ctx.box.keystore.stop();
  const events = auditEvents(ctx.box);
  const requests = new Map<string, number>();
  let issued = 0;
  for (const [i, e] of events.entries()) {
    if (e.ev === 'ecu-cert-request') requests.set(e.serial as string, i);
    if (e.ev === 'ecu-cert') {
      issued++;
      const at = requests.get(e.serial as string);
      assert.ok(at !== undefined && at < i, `certificate ${String(e.serial)} was requested on record first`);
    }
  }
  assert.is(issued, 4, 'one certificate for ecu-station, three for greedy');
});

test.run();
