// Issue 12, the application gate: the vault's verdict from the signed provisioning record, the
// boot's PCR 15 and the live re-measurement of the real trees (services/attest/measure.ts on a
// temporary rootfs). The HSM identity key is stood in for by a P-256 key here: the logic above
// the signature is what this tests; the vault's HSM signing has its own tests.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { measureTrees, pcr15Of } from '../../services/attest/measure.js';
import { Gate, checkGate, signGateRecord, type GateInputs, type GateVerdict } from '../../services/vault/gate.js';

const hsm = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const attacker = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const hsmSign = (d: Buffer) => sign('sha256', d, hsm.privateKey);
const hsmVerify = (d: Buffer, s: Buffer) => verify('sha256', d, hsm.publicKey, s);
let root = '';

test.before.each(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'pks-gate-'));
  await mkdir(path.join(root, 'usr/lib/pks/dist/services/vault'), { recursive: true });
  await writeFile(path.join(root, 'usr/lib/pks/dist/services/vault/main.js'), 'serve()\n');
  await mkdir(path.join(root, 'etc/pks/credentials'), { recursive: true });
  await writeFile(path.join(root, 'etc/pks/vault.json'), '{"slot":0}\n');
});
test.after.each(() => rm(root, { recursive: true, force: true }));

async function provisioned(): Promise<{ record: unknown; pcr15: string }> {
  const m = await measureTrees(root);
  const pcr15 = pcr15Of(m).toString('hex');
  return { record: signGateRecord(pcr15, m.map((t) => ({ name: t.name, digest: t.digest })), new Date(), hsmSign), pcr15 };
}
const live = async () => (await measureTrees(root)).map((t) => ({ name: t.name, digest: t.digest }));
const reason = (v: GateVerdict) => (v.open ? 'open' : `${v.error.code} ${v.error.detail}`);

test('open as provisioned; a changed file closes it with PKS_TAMPERED, restoring it opens it again by itself', async () => {
  const p = await provisioned();
  const seen: string[] = [];
  let inputs: GateInputs = { record: p.record, bootPcr15: p.pcr15, live: await live() };
  const gate = new Gate(async () => inputs, hsmVerify, 1000, (v) => seen.push(reason(v)));
  assert.throws(() => gate.assertOpen(), /PKS_TAMPERED/, 'closed until evaluated');
  assert.ok((await gate.evaluate()).open);
  gate.assertOpen();

  const file = path.join(root, 'usr/lib/pks/dist/services/vault/main.js');
  await writeFile(file, 'serve(); leak()\n');
  inputs = { ...inputs, live: await live() };
  const v = await gate.evaluate();
  assert.not.ok(v.open);
  assert.is(reason(v), 'PKS_TAMPERED pks-app differs from the provisioned measurement');
  assert.throws(() => gate.assertOpen(), /PKS_TAMPERED/);
  assert.is(gate.status.code, 'PKS_TAMPERED');

  await writeFile(file, 'serve()\n');
  inputs = { ...inputs, live: await live() };
  assert.ok((await gate.evaluate()).open, 'restored: open again');
  assert.equal(seen, ['open', 'PKS_TAMPERED pks-app differs from the provisioned measurement', 'open']);
});

test('configuration change, boot PCR 15, missing / forged / malformed record, no live measurement: closed', async () => {
  const p = await provisioned();
  await writeFile(path.join(root, 'etc/pks/vault.json'), '{"slot":1}\n');
  assert.is(reason(checkGate({ record: p.record, bootPcr15: p.pcr15, live: await live() }, hsmVerify)), 'PKS_TAMPERED pks-config differs from the provisioned measurement');
  await writeFile(path.join(root, 'etc/pks/vault.json'), '{"slot":0}\n');
  const l = await live();
  assert.ok(checkGate({ record: p.record, bootPcr15: p.pcr15, live: l }, hsmVerify).open);
  // credentials are not measured (their digest would be a PIN oracle), so a sealed blob may change
  await writeFile(path.join(root, 'etc/pks/credentials/hsm-pin.sealed'), 'x');
  assert.ok(checkGate({ record: p.record, bootPcr15: p.pcr15, live: await live() }, hsmVerify).open);

  assert.is(reason(checkGate({ record: p.record, bootPcr15: 'ab'.repeat(32), live: l }, hsmVerify)), 'PKS_TAMPERED PCR 15 of this boot differs from the provisioned value');
  assert.is(reason(checkGate({ record: undefined, bootPcr15: p.pcr15, live: l }, hsmVerify)), 'PKS_TAMPERED no provisioned gate record');
  assert.is(reason(checkGate({ record: p.record, bootPcr15: p.pcr15, live: undefined }, hsmVerify)), 'PKS_TAMPERED no live measurement of the application');
  // whoever holds the disk re-records the tampered state with a key of his own
  await writeFile(path.join(root, 'usr/lib/pks/dist/services/vault/main.js'), 'evil()\n');
  const m = await measureTrees(root);
  const forged = signGateRecord(pcr15Of(m).toString('hex'), m, new Date(), (d) => sign('sha256', d, attacker.privateKey));
  assert.is(reason(checkGate({ record: forged, bootPcr15: pcr15Of(m).toString('hex'), live: await live() }, hsmVerify)), 'PKS_TAMPERED gate record is not signed by this vault');
  for (const bad of [null, 'x', { version: 2 }, { ...(p.record as object), pcr15: 'zz' }, { ...(p.record as object), trees: [] }])
    assert.is(reason(checkGate({ record: bad, bootPcr15: p.pcr15, live: l }, hsmVerify)), 'PKS_TAMPERED gate record is malformed');
  // an input that cannot be read fails closed too
  const g = new Gate(async () => Promise.reject(new Error('EIO')), hsmVerify, 1000);
  assert.is(reason(await g.evaluate()), 'PKS_TAMPERED gate inputs cannot be read');
});

test.run();
