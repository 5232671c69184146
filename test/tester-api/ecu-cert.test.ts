// ECU certificates end to end: the tester-api service process (main.ts) over mTLS, the REAL
// vault on a fresh SoftHSM token signing with its ecu-ca key, the keystore stub logging them.
import { execFile } from 'node:child_process';
import { X509Certificate, webcrypto } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { IpcClient } from '../../appliance/ipc.js';
import { startService, waitFor, type Proc } from '../../scripts/plant/process.js';
import { makeEcuCa } from '../../scripts/plant/tester-api.js';
import { startVault, type VaultHandle } from '../../scripts/plant/vault.js';
import { startKeystoreStub, type KeystoreStub } from '../helpers/keystore-stub.js';
import { freePort } from '../helpers/ports.js';
import { POOL_A, call, pki, startRig, uid, type Pki } from './fixture.js';
import { Client } from 'undici';

const run = promisify(execFile);
const wc = webcrypto as unknown as Crypto;

interface Ctx {
  dir: string;
  pki: Pki;
  stub: KeystoreStub;
  vault: VaultHandle;
  vaultClient: IpcClient;
  caPem: string;
  caFile: string;
  api: Proc;
  client: Client;
}
const test = suite<Ctx>('tester-api: ECU certificates (real vault, service process)');

async function csrFor(cn: string, alg: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' }): Promise<string> {
  const keys = (await wc.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${cn}`, keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } }, wc);
  return csr.toString('pem');
}

test.before(async (ctx) => {
  ctx.dir = await mkdtemp(path.join(os.tmpdir(), 'pks-tapi-ecu-'));
  const runDir = path.join(ctx.dir, 'run');
  const logDir = ctx.dir;
  ctx.pki = await pki();
  ctx.stub = await startKeystoreStub(runDir, { pools: [POOL_A] });
  ctx.stub.testers.set('ecu-station', { cn: 'ecu-station', station: 'eol-7', pools: [POOL_A], expiresAt: new Date(Date.now() + 86_400_000).toISOString(), revoked: false });
  ctx.vault = await startVault({ dir: path.join(ctx.dir, 'vault'), runDir, logDir, boxId: 'box-ecu-1' });
  ctx.vaultClient = ctx.vault.client('tester-api');

  // the issuing CA certificate over the HSM key, self-signed through the vault
  ctx.caFile = await makeEcuCa(ctx.vaultClient, ctx.dir);
  ctx.caPem = await readFile(ctx.caFile, 'utf8');

  const port = await freePort();
  const configFile = path.join(ctx.dir, 'tester-api.json');
  await writeFile(
    configFile,
    JSON.stringify({
      listen: { host: '127.0.0.1', port },
      tls: { cert: ctx.pki.serverCertFile, keyFile: ctx.pki.serverKeyFile, ca: ctx.pki.testerCaFile },
      ecuCa: { cert: ctx.caFile, validityDays: 365, subjectTemplate: 'CN={uid},OU=ECU,O=OEM1' },
    }),
  );
  ctx.api = startService('tester-api', { PKS_CONFIG: configFile, PKS_RUN_DIR: runDir, CREDENTIALS_DIRECTORY: '' }, logDir);
  const cred = ctx.pki.testers['ecu-station']!;
  ctx.client = new Client(`https://localhost:${port}`, { connect: { ca: ctx.pki.boxCa, cert: cred.cert, key: cred.key } });
  await waitFor('tester-api ready', async () => (await call(ctx.client, 'GET', '/v1/health')).body?.ready === true, 20_000);
});

test.after(async (ctx) => {
  await ctx.client?.destroy().catch(() => {});
  await ctx.api?.stop();
  await ctx.vault?.stop();
  await ctx.stub?.close();
  if (ctx.dir) await rm(ctx.dir, { recursive: true, force: true });
});

test('a CSR becomes a certificate signed by the HSM key, valid under the CA, and logged', async (ctx) => {
  const u = uid(0xabcdef).toUpperCase();
  const r = await call(ctx.client, 'POST', '/v1/ecu/certificates', { uid: u, csr: await csrFor(u) });
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
  // OpenSSL agrees: chain, key usage, client purpose
  const certFile = path.join(ctx.dir, 'ecu.crt');
  await writeFile(certFile, r.body.certificate);
  const v = await run('openssl', ['verify', '-CAfile', ctx.caFile, '-purpose', 'sslclient', certFile]);
  assert.match(v.stdout, /: OK/);
  const text = (await run('openssl', ['x509', '-in', certFile, '-noout', '-text'])).stdout;
  assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature\s/);
  assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
  assert.match(text, /X509v3 Subject Key Identifier/);
  assert.match(text, /X509v3 Authority Key Identifier/);
  assert.match(text, /ecdsa-with-SHA256/);
  const logged = ctx.stub.certs.at(-1)!;
  assert.equal(logged, { tester: 'ecu-station', station: 'eol-7', uid: u.toLowerCase(), serial: r.body.serial, subject: `CN=${u}, OU=ECU, O=OEM1`, notAfter: new Date(cert.validTo).toISOString() });
});

test('bad CSRs: coded PKS_CSR_INVALID, nothing signed or logged', async (ctx) => {
  const u = uid(0x77);
  const logged = ctx.stub.certs.length;
  const good = await csrFor(u);
  // flip a byte inside the signature: the self-signature no longer verifies
  const der = Buffer.from(good.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - 5]! ^= 0x01;
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE REQUEST-----\n`;
  const cases: [string, string][] = [
    ['CN is another ECU', await csrFor(uid(0x78))],
    ['P-384 key', await csrFor(u, { name: 'ECDSA', namedCurve: 'P-384' })],
    ['tampered signature', tampered],
    ['not a CSR', `-----BEGIN CERTIFICATE REQUEST-----\n${Buffer.alloc(90, 7).toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`],
    ['a certificate instead', ctx.caPem],
  ];
  for (const [name, csr] of cases) {
    const r = await call(ctx.client, 'POST', '/v1/ecu/certificates', { uid: u, csr });
    assert.is(r.status, 400, `${name}: ${r.text}`);
    assert.is(r.body.code, 'PKS_CSR_INVALID', `${name}: ${r.text}`);
  }
  assert.is(ctx.stub.certs.length, logged);
});

test('a CA certificate that is not the HSM key is refused before anything is issued', async (ctx) => {
  const rig = await startRig({
    ecuCa: { cert: ctx.pki.testerCaFile },
    ecuCaPem: ctx.pki.testerCa,
    vault: ctx.vaultClient,
  });
  try {
    const u = uid(0x99);
    const r = await call(rig.client('alice'), 'POST', '/v1/ecu/certificates', { uid: u, csr: await csrFor(u) });
    assert.is(r.status, 500, r.text);
    assert.is(r.body.code, 'PKS_CONFIG_INVALID');
    assert.is(rig.stub.certs.length, 0);
  } finally {
    await rig.close();
  }
});

test('the service stops gracefully on SIGTERM', async (ctx) => {
  await ctx.client.destroy();
  ctx.api.child.kill('SIGTERM');
  assert.is(await ctx.api.exited, 0);
});

test.run();
