// Updates announced by the KMS: the manifest's signature against the pinned KMS CA (and every
// way it can be wrong), then the download: a power cut (SIGKILL) in the middle of it resumes
// with an HTTP Range from what was on disk, and the result must match the manifest's sha256;
// chunks over MQTT in any order and duplicated; a wrong byte is refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { isPksError } from '../../appliance/errors.js';
import { fetchUrl, putChunk } from '../../services/updater/fetch.js';
import { signManifest, verifyManifest } from '../../services/updater/manifest.js';
import type { ManifestPayload } from '../../appliance/contracts/update.js';
import { repoRoot, sh } from './rauc-host.js';

const codeOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    return isPksError(e) ? e.code : String(e);
  }
  return 'no error';
};

let dir: string;
let ca: X509Certificate;
let signerKey: string;
let signerCert: string;
let otherKey: string;
let otherCert: string;
test.before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pks-remote-'));
  // a KMS CA and its signer, and a signer from some other CA
  for (const who of ['kms', 'other']) {
    sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${dir}/${who}-ca.key`, '-out', `${dir}/${who}-ca.pem`, '-days', '30', '-subj', `/CN=${who} CA`]);
    sh('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${dir}/${who}.key`, '-out', `${dir}/${who}.csr`, '-subj', `/CN=${who} signer`]);
    sh('openssl', ['x509', '-req', '-in', `${dir}/${who}.csr`, '-CA', `${dir}/${who}-ca.pem`, '-CAkey', `${dir}/${who}-ca.key`, '-CAcreateserial', '-days', '30', '-out', `${dir}/${who}.pem`]);
  }
  ca = new X509Certificate(readFileSync(`${dir}/kms-ca.pem`));
  signerKey = readFileSync(`${dir}/kms.key`, 'utf8');
  signerCert = readFileSync(`${dir}/kms.pem`, 'utf8');
  otherKey = readFileSync(`${dir}/other.key`, 'utf8');
  otherCert = readFileSync(`${dir}/other.pem`, 'utf8');
});
test.after(() => rmSync(dir, { recursive: true, force: true }));

const manifest = (over: Partial<ManifestPayload> = {}): ManifestPayload => ({
  type: 'pks-update-manifest',
  v: 1,
  id: 'm-1',
  boxId: 'box-7',
  compatible: 'pks-appliance',
  version: '1.4.0',
  svn: 4,
  size: 1000,
  sha256: 'ab'.repeat(32),
  url: 'http://10.1.2.3:8080/bundles/pks-1.4.0.raucb',
  install: 'window',
  createdAt: new Date().toISOString(),
  expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  ...over,
});
const opts = () => ({ kmsCa: ca, boxId: 'box-7', compatible: 'pks-appliance', maxBytes: 1 << 30 });

test('a manifest signed by the KMS signer verifies; every forgery is PKS_UPDATE_MANIFEST', () => {
  const good = JSON.stringify(signManifest(manifest(), signerKey, signerCert));
  assert.is(verifyManifest(good, opts()).version, '1.4.0');
  assert.is(codeOf(() => verifyManifest(JSON.stringify(signManifest(manifest(), otherKey, otherCert)), opts())), 'PKS_UPDATE_MANIFEST');
  // right certificate, wrong key
  assert.is(codeOf(() => verifyManifest(JSON.stringify(signManifest(manifest(), otherKey, signerCert)), opts())), 'PKS_UPDATE_MANIFEST');
  const env = JSON.parse(good) as { payload: string };
  const tampered = JSON.stringify({ ...JSON.parse(good), payload: env.payload.replace('1.4.0', '1.4.1') });
  assert.is(codeOf(() => verifyManifest(tampered, opts())), 'PKS_UPDATE_MANIFEST');
  assert.is(codeOf(() => verifyManifest(JSON.stringify(signManifest(manifest({ boxId: 'box-8' }), signerKey, signerCert)), opts())), 'PKS_UPDATE_MANIFEST');
  assert.is(codeOf(() => verifyManifest(JSON.stringify(signManifest(manifest({ compatible: 'lab' }), signerKey, signerCert)), opts())), 'PKS_UPDATE_INCOMPATIBLE');
  assert.is(codeOf(() => verifyManifest(JSON.stringify(signManifest(manifest({ expiresAt: new Date(Date.now() - 1000).toISOString() }), signerKey, signerCert)), opts())), 'PKS_UPDATE_MANIFEST');
  assert.is(codeOf(() => verifyManifest(JSON.stringify(signManifest(manifest({ url: 'file:///etc/shadow' }), signerKey, signerCert)), opts())), 'PKS_UPDATE_MANIFEST');
  assert.is(codeOf(() => verifyManifest('{"v":1}', opts())), 'PKS_UPDATE_MANIFEST');
  assert.is(codeOf(() => verifyManifest('not json', opts())), 'PKS_UPDATE_MANIFEST');
});

test('power cut during the download: the next start resumes with a Range and the file matches', async () => {
  const body = randomBytes(3 << 20);
  const sha = createHash('sha256').update(body).digest('hex');
  const ranges: string[] = [];
  // serves slowly (64 KiB every 20 ms) so the cut lands mid-way
  const server = http.createServer((req, res) => {
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    ranges.push(req.headers.range ?? 'none');
    const from = m ? Number(m[1]) : 0;
    res.writeHead(m ? 206 : 200, { 'content-length': body.length - from });
    let off = from;
    const t = setInterval(() => {
      if (off >= body.length || res.destroyed) {
        clearInterval(t);
        res.end();
        return;
      }
      res.write(body.subarray(off, off + 65536));
      off += 65536;
    }, 20);
    res.on('close', () => clearInterval(t));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/b.raucb`;
  const file = path.join(dir, 'dl.raucb');
  try {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test/update/fetch-child.ts'), url, file, String(body.length), sha], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        const have = Number(d.toString().trim().split('\n').pop());
        if (have > 1.5 * (1 << 20) && child.exitCode === null) child.kill('SIGKILL');
      });
      child.once('exit', () => resolve());
    });
    const partial = statSync(`${file}.part`).size;
    assert.ok(partial > 1 << 20 && partial < body.length, `partial ${partial}`);
    assert.not.ok(existsSync(file));
    await fetchUrl(url, { file, size: body.length, sha256: sha }, () => undefined);
    assert.ok(readFileSync(file).equals(body));
    assert.is(ranges.length, 2);
    const resumedAt = Number(/bytes=(\d+)-/.exec(ranges[1]!)![1]);
    assert.ok(resumedAt > 1 << 20, `resumed at ${resumedAt}`);
    // a server that sends other bytes: refused, nothing installed later
    const bad = path.join(dir, 'bad.raucb');
    let code = '';
    try {
      await fetchUrl(url, { file: bad, size: body.length, sha256: 'cd'.repeat(32) }, () => undefined);
    } catch (e) {
      code = isPksError(e) ? e.code : String(e);
    }
    assert.is(code, 'PKS_UPDATE_CORRUPT');
    assert.not.ok(existsSync(bad) || existsSync(`${bad}.part`));
  } finally {
    server.close();
    server.closeAllConnections();
  }
});

test('chunks over MQTT: any order, duplicates, resumable; a wrong chunk size is refused', async () => {
  const body = randomBytes(100_000);
  const t = { file: path.join(dir, 'chunks.raucb'), size: body.length, sha256: createHash('sha256').update(body).digest('hex'), chunkSize: 16384, count: Math.ceil(body.length / 16384) };
  const chunk = (i: number) => body.subarray(i * t.chunkSize, (i + 1) * t.chunkSize);
  const order = [6, 0, 3, 3, 1, 5];
  for (const i of order) assert.is((await putChunk(t, i, chunk(i))).complete, false);
  assert.equal((await putChunk(t, 5, chunk(5))).missing, [2, 4]);
  let code = '';
  try {
    await putChunk(t, 2, chunk(2).subarray(1));
  } catch (e) {
    code = isPksError(e) ? e.code : '';
  }
  assert.is(code, 'PKS_UPDATE_CORRUPT');
  await putChunk(t, 2, chunk(2));
  const r = await putChunk(t, 4, chunk(4));
  assert.is(r.complete, true);
  assert.ok(readFileSync(t.file).equals(body));
});

test.run();
