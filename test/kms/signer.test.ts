// The KMS batch signer: a P-256 key generated once in the KMS's own SoftHSM token, its
// certificate issued by the KMS CA key file, chunks that a box's verifyChunk accepts; the
// key-file fallback; and the configurations that must refuse to start.
import { X509Certificate, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadTrustAnchor, verifyChunk, type BatchPayload } from '../../appliance/batch-format.js';
import { isPksError } from '../../appliance/errors.js';
import { loadSigner, signChunkWith, type SignerConfig } from '../../scripts/kms/signer.js';
import { issue, makeCa } from '../helpers/pki.js';
import { makeToken, type SoftHsmToken } from '../helpers/softhsm.js';

let dir: string;
let token: SoftHsmToken;
let ca: { cert: string; key: string };
let hsmCfg: SignerConfig;

const payload = (): BatchPayload => ({
  type: 'pks-batch',
  v: 1,
  batchId: 'b-1',
  boxId: 'box-1',
  pool: 'oemA.bcm.k4',
  chunk: 0,
  chunks: 1,
  total: 1,
  createdAt: new Date().toISOString(),
  epk: randomBytes(91).toString('base64'),
  she: { keyId: 4, authKeyId: 1, counter: 1, flags: 0, auth: randomBytes(44).toString('base64') },
  records: [['oemA.bcm.k4:0', randomBytes(44).toString('base64')]],
});

const refused = async (p: Promise<unknown>, code: string, why: RegExp): Promise<void> => {
  try {
    await p;
  } catch (e) {
    assert.ok(isPksError(e), String(e));
    assert.is((e as { code: string }).code, code);
    assert.match((e as Error).message, why);
    return;
  }
  assert.unreachable(`accepted, expected ${code}`);
};

test.before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pks-kms-signer-'));
  token = await makeToken('pks-kms-test');
  ca = await makeCa(dir, 'kms-ca');
  const pinFile = path.join(dir, 'pin');
  writeFileSync(pinFile, token.pin + '\n', { mode: 0o600 });
  hsmCfg = { certFile: path.join(dir, 'signer-hsm.crt'), hsm: { module: token.module, tokenLabel: token.label, pinFile, softhsm2Conf: token.conf }, ca: { certFile: ca.cert, keyFile: ca.key } };
});

test.after(async () => {
  await token?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

test('HSM signer: key made once in the token, certificate issued by the KMS CA, chunks a box accepts', async () => {
  const s = await loadSigner(hsmCfg);
  let serial: string;
  let spki: Buffer;
  try {
    const cert = new X509Certificate(s.certPem);
    assert.ok(cert.checkIssued(new X509Certificate(readFileSync(ca.cert))));
    assert.is(readFileSync(hsmCfg.certFile, 'utf8'), s.certPem, 'written where the config says');
    serial = cert.serialNumber;
    spki = cert.publicKey.export({ type: 'spki', format: 'der' });
    const chunk = signChunkWith(payload(), s);
    const p = verifyChunk(chunk, loadTrustAnchor(readFileSync(ca.cert, 'utf8')), 'box-1');
    assert.is(p.batchId, 'b-1');
    // a signature over other bytes does not pass
    assert.throws(() => verifyChunk({ ...chunk, payload: chunk.payload.replace('"b-1"', '"b-2"') }, loadTrustAnchor(readFileSync(ca.cert, 'utf8')), 'box-1'), /signature/);
  } finally {
    s.close?.();
  }
  // a restart finds the same key and keeps the certificate that fits it
  const again = await loadSigner(hsmCfg);
  try {
    const cert = new X509Certificate(again.certPem);
    assert.is(cert.serialNumber, serial);
    assert.ok(cert.publicKey.export({ type: 'spki', format: 'der' }).equals(spki));
  } finally {
    again.close?.();
  }
});

test('HSM signer: a certificate that does not fit is re-issued, or refused without a CA key', async () => {
  const other = await issue(dir, 'kms-ca', 'not-the-hsm-key', { cn: 'kms-batch-signer' });
  writeFileSync(hsmCfg.certFile, readFileSync(other.cert));
  const s = await loadSigner(hsmCfg);
  const reissued = s.certPem;
  s.close?.();
  assert.is.not(reissued, readFileSync(other.cert, 'utf8'));
  writeFileSync(hsmCfg.certFile, readFileSync(other.cert));
  const { ca: _ca, ...noCa } = hsmCfg;
  await refused(loadSigner(noCa), 'PKS_CONFIG_INVALID', /does not fit the HSM key/);
  writeFileSync(hsmCfg.certFile, reissued);
  const s2 = await loadSigner(noCa);
  assert.is(s2.certPem, reissued, 'a fitting certificate needs no CA key');
  s2.close?.();
});

test('key-file signer: the fallback works; a key that is not its certificate\'s is refused', async () => {
  const a = await issue(dir, 'kms-ca', 'file-signer', { cn: 'kms-batch-signer', batchSigner: true });
  const b = await issue(dir, 'kms-ca', 'file-signer-b', { cn: 'kms-batch-signer', batchSigner: true });
  const s = await loadSigner({ certFile: a.cert, keyFile: a.key });
  verifyChunk(signChunkWith(payload(), s), loadTrustAnchor(readFileSync(ca.cert, 'utf8')), 'box-1');
  await refused(loadSigner({ certFile: a.cert, keyFile: b.key }), 'PKS_CONFIG_INVALID', /does not match its certificate/);
  await refused(loadSigner({ ...hsmCfg, keyFile: a.key }), 'PKS_CONFIG_INVALID', /not both/);
});

test.run();
