// Issue 9 item 11 (trust anchors): only a certificate with the KMS batch-signer EKU, issued by
// the pinned KMS CA, may sign batches, and the pinned CA's own validity is checked. Certificates
// are built here with real keys; chunks go through the box's verifyChunk.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { KeyObject } from 'node:crypto';
import { BATCH_SIGNER_EKU, verifyChunk } from '../../appliance/batch-format.js';
import { buildBatch, randomSheKeys } from '../../scripts/plant/batch.js';
import { DAY, makeKmsCa, makeSigner, pair, spkiOf, type CertSpec } from '../helpers/kms-pki.js';

const now = Date.now();
const transportSpki = spkiOf(pair().publicKey);
const set = { pool: 'oem1.bcm.key4', keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: Buffer.alloc(16, 7), keys: randomSheKeys('bs', 3) };

async function chunkSignedBy(caKey: KeyObject, leaf: Partial<Omit<CertSpec, 'spki' | 'caKey'>>): Promise<unknown> {
  const signer = await makeSigner(caKey, leaf);
  return buildBatch({ batchId: `b-${Math.random().toString(36).slice(2)}`, boxId: 'box-bs', transportSpki, signer, set })[0];
}

const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    return `${(e as { code?: string }).code}: ${(e as { detail?: string }).detail}`;
  }
  return 'accepted';
};

test('a batch signer needs the batch-signer EKU, an end-entity certificate, and the pinned CA', async () => {
  const ca = await makeKmsCa();
  const good = await chunkSignedBy(ca.key, {});
  assert.is(code(() => verifyChunk(good, ca.trust, 'box-bs')), 'accepted');
  // other certificates of the same CA: TLS client/server only, no EKU at all (any purpose)
  const tls = await chunkSignedBy(ca.key, { eku: ['1.3.6.1.5.5.7.3.2', '1.3.6.1.5.5.7.3.1'] });
  assert.match(code(() => verifyChunk(tls, ca.trust, 'box-bs')), /PKS_BATCH_SIGNATURE: .*EKU/);
  const noEku = await chunkSignedBy(ca.key, { eku: [] });
  assert.match(code(() => verifyChunk(noEku, ca.trust, 'box-bs')), /PKS_BATCH_SIGNATURE: .*EKU/);
  // a sub-CA carrying the EKU is still no batch signer
  const subCa = await chunkSignedBy(ca.key, { eku: [BATCH_SIGNER_EKU], ca: true });
  assert.match(code(() => verifyChunk(subCa, ca.trust, 'box-bs')), /PKS_BATCH_SIGNATURE: .*CA certificate/);
  const old = await chunkSignedBy(ca.key, { from: now - 10 * DAY, to: now - DAY });
  assert.match(code(() => verifyChunk(old, ca.trust, 'box-bs')), /not valid now/);
  // a good signer of another CA
  const foreign = await chunkSignedBy(pair().privateKey, {});
  assert.match(code(() => verifyChunk(foreign, ca.trust, 'box-bs')), /not issued by the pinned KMS CA/);
});

test('the pinned KMS CA itself must be valid now (expired or not yet valid: nothing verifies)', async () => {
  for (const [what, from, to] of [
    ['expired', now - 400 * DAY, now - DAY],
    ['not yet valid', now + DAY, now + 400 * DAY],
  ] as const) {
    const ca = await makeKmsCa(from, to);
    // the signer itself is valid now and carries the EKU
    const c = await chunkSignedBy(ca.key, {});
    assert.match(code(() => verifyChunk(c, ca.trust, 'box-bs')), /pinned KMS CA certificate is not valid now/, what);
  }
});

test.run();
