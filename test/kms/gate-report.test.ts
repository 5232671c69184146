// Issue 12: the KMS counts a quote only with the vault's gate report, signed by the box's HSM
// identity key over the KMS nonce. What a compromised uplink could try instead: a report of its
// own ("open", any key), an old report for another nonce, a closed report flipped to open, the
// report of another box. (The vault's side, signing its verdict, runs in test/uplink/attest.test.ts.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { gateReportText, type GateReport } from '../../appliance/contracts/attestation.js';
import { checkGateReport } from '../../scripts/kms/attest-link.js';

const box = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const spki = box.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
const report = (boxId: string, nonce: Buffer, body: Omit<GateReport, 'sig'>, key = box.privateKey): GateReport => ({
  ...body,
  sig: sign('sha256', gateReportText(boxId, nonce, body), { key, dsaEncoding: 'ieee-p1363' }).toString('base64'),
});
const refusal = (f: () => void): string => {
  try {
    f();
  } catch (e) {
    return `${(e as { code: string }).code} ${(e as { detail: string }).detail}`;
  }
  return 'accepted';
};

test('only an open report of this box, over this nonce, signed by its identity key, counts', () => {
  const nonce = randomBytes(32);
  const at = new Date().toISOString();
  assert.is(refusal(() => checkGateReport('box-1', spki, nonce, report('box-1', nonce, { open: true, at }))), 'accepted');
  const notSigned = "PKS_ATTEST_UNTRUSTED the gate report is not signed by the box's vault";
  assert.is(refusal(() => checkGateReport('box-1', spki, nonce, report('box-1', nonce, { open: true, at }, other.privateKey))), notSigned, "the uplink's own key");
  assert.is(refusal(() => checkGateReport('box-1', spki, nonce, report('box-1', randomBytes(32), { open: true, at }))), notSigned, 'a report over another nonce');
  assert.is(refusal(() => checkGateReport('box-1', spki, nonce, report('box-2', nonce, { open: true, at }))), notSigned, "another box's report");
  const closed = report('box-1', nonce, { open: false, code: 'PKS_TAMPERED', reason: 'pks-app differs from the provisioned measurement', at });
  assert.is(refusal(() => checkGateReport('box-1', spki, nonce, { ...closed, open: true })), notSigned, 'closed flipped to open');
  assert.is(refusal(() => checkGateReport('box-1', spki, nonce, { ...closed, code: undefined as unknown as string })), notSigned, 'code dropped');
  assert.is(refusal(() => checkGateReport('box-1', spki, nonce, closed)), 'PKS_ATTEST_UNTRUSTED the box reports its application or configuration changed (vault closed, PKS_TAMPERED)');
});

test.run();
