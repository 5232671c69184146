// Issue 9 item 11 (trust anchors): only a certificate with the KMS batch-signer EKU, issued by
// the pinned KMS CA, may sign batches, and the pinned CA's own validity is checked. Certificates
// are built here with real keys; chunks go through the box's verifyChunk.
import { X509Certificate, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BATCH_SIGNER_EKU, verifyChunk, type TrustAnchor } from '../../appliance/batch-format.js';
import { keyIdentifier, newSerial, signCertificate } from '../../appliance/x509.js';
import { buildBatch, randomSheKeys } from '../../scripts/plant/batch.js';

const DAY = 86_400_000;
const now = Date.now();
const pair = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
const spkiOf = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });

async function cert(o: { subject: string; issuer: string; spki: Buffer; caKey: KeyObject; ca?: boolean; eku?: string[]; from?: number; to?: number }): Promise<string> {
  const ext: x509.Extension[] = [
    new x509.BasicConstraintsExtension(o.ca ?? false, o.ca ? 0 : undefined, true),
    new x509.KeyUsagesExtension(o.ca ? x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature, true),
    new x509.SubjectKeyIdentifierExtension(keyIdentifier(o.spki)),
  ];
  if (o.eku) ext.push(new x509.ExtendedKeyUsageExtension(o.eku, false));
  const c = await signCertificate(
    { serial: newSerial(), subject: o.subject, issuer: o.issuer, spki: o.spki, notBefore: new Date(o.from ?? now - DAY), notAfter: new Date(o.to ?? now + 30 * DAY), extensions: ext },
    async (tbs) => sign('sha256', tbs, { key: o.caKey, dsaEncoding: 'ieee-p1363' }),
  );
  return c.toString('pem');
}

const box = pair();
const transportSpki = spkiOf(box.publicKey);
const set = { pool: 'oem1.bcm.key4', keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: Buffer.alloc(16, 7), keys: randomSheKeys('bs', 3) };

async function chunkSignedBy(caKey: KeyObject, caName: string, leaf: { eku?: string[]; ca?: boolean; from?: number; to?: number }): Promise<unknown> {
  const k = pair();
  const certPem = await cert({ subject: 'CN=kms-batch-signer', issuer: caName, spki: spkiOf(k.publicKey), caKey, ...leaf });
  return buildBatch({ batchId: `b-${Math.random().toString(36).slice(2)}`, boxId: 'box-bs', transportSpki, signer: { key: k.privateKey, certPem }, set })[0];
}

const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    return `${(e as { code?: string }).code}: ${(e as { detail?: string }).detail}`;
  }
  return 'accepted';
};

test('a batch signer needs the batch-signer EKU, an end-entity certificate, and the pinned CA valid now', async () => {
  const ca = pair();
  const caPem = await cert({ subject: 'CN=KMS CA', issuer: 'CN=KMS CA', spki: spkiOf(ca.publicKey), caKey: ca.privateKey, ca: true });
  const trust: TrustAnchor = { ca: new X509Certificate(caPem) };
  const good = await chunkSignedBy(ca.privateKey, 'CN=KMS CA', { eku: [BATCH_SIGNER_EKU] });
  assert.is(code(() => verifyChunk(good, trust, 'box-bs')), 'accepted');

  // any other certificate of the same CA: no EKU (any purpose), TLS client/server only
  const tls = await chunkSignedBy(ca.privateKey, 'CN=KMS CA', { eku: ['1.3.6.1.5.5.7.3.2', '1.3.6.1.5.5.7.3.1'] });
  assert.match(code(() => verifyChunk(tls, trust, 'box-bs')), /PKS_BATCH_SIGNATURE: .*EKU/);
  const noEku = await chunkSignedBy(ca.privateKey, 'CN=KMS CA', {});
  assert.match(code(() => verifyChunk(noEku, trust, 'box-bs')), /PKS_BATCH_SIGNATURE: .*EKU/);
  // a sub-CA carrying the EKU is still no batch signer
  const subCa = await chunkSignedBy(ca.privateKey, 'CN=KMS CA', { eku: [BATCH_SIGNER_EKU], ca: true });
  assert.match(code(() => verifyChunk(subCa, trust, 'box-bs')), /PKS_BATCH_SIGNATURE: .*CA certificate/);
  // an expired signer
  const old = await chunkSignedBy(ca.privateKey, 'CN=KMS CA', { eku: [BATCH_SIGNER_EKU], from: now - 10 * DAY, to: now - DAY });
  assert.match(code(() => verifyChunk(old, trust, 'box-bs')), /not valid now/);
  // a good signer of another CA
  const other = pair();
  const foreign = await chunkSignedBy(other.privateKey, 'CN=KMS CA', { eku: [BATCH_SIGNER_EKU] });
  assert.match(code(() => verifyChunk(foreign, trust, 'box-bs')), /not issued by the pinned KMS CA/);
});

test('the pinned KMS CA itself must be valid now (expired or not yet valid: nothing verifies)', async () => {
  for (const [what, from, to] of [
    ['expired', now - 400 * DAY, now - DAY],
    ['not yet valid', now + DAY, now + 400 * DAY],
  ] as const) {
    const ca = pair();
    const caPem = await cert({ subject: 'CN=KMS CA', issuer: 'CN=KMS CA', spki: spkiOf(ca.publicKey), caKey: ca.privateKey, ca: true, from, to });
    const trust: TrustAnchor = { ca: new X509Certificate(caPem) };
    // the signer itself is valid now and carries the EKU
    const c = await chunkSignedBy(ca.privateKey, 'CN=KMS CA', { eku: [BATCH_SIGNER_EKU] });
    assert.match(code(() => verifyChunk(c, trust, 'box-bs')), /pinned KMS CA certificate is not valid now/, what);
  }
});

test.run();
