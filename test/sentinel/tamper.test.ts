// Issue 12: a file of a service changed while the box runs. Real parts: swtpm + tpm2-tools
// (pks-measure's boot measurement and re-measurement of a temporary application tree), the
// vault on SoftHSM with its application gate, the keystore on LMDB, the sentinel as its own
// process and a real SMTP server. The change closes the vault (no package leaves: a tester's
// reservation is refused with PKS_TAMPERED), the sentinel mails one critical alert; the file
// restored, the vault opens by itself, the same reservation is served and the resolution is mailed.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { startService, waitFor, type Proc } from '../../scripts/plant/process.js';
import { writePlantSentinelConfig } from '../../services/sentinel/plant-config.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp.js';
import { makeAppTree } from '../attest/app-tree.js';
import { startSwtpm, type Swtpm } from '../attest/swtpm.js';

const POOL = 'oem1.ecuT.4';
let tmp = '';
let tpm: Swtpm;
let box: Box | undefined;
let smtp: TestSmtp | undefined;
let sentinel: Proc | undefined;

test.after(async () => {
  await sentinel?.stop();
  await box?.stop();
  await smtp?.stop();
  await tpm?.stop();
  await rm(tmp, { recursive: true, force: true });
});

test('a changed service file: vault closed, no package, one critical mail; restored: serves again, resolution mailed', async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pks-tamper-'));
  tpm = await startSwtpm();
  const { file, original, liveFile, remeasure } = await makeAppTree(tmp, tpm);

  smtp = await startSmtp();
  box = await startBox({ pools: [{ pool: POOL, minimum: 1, reorder: 5 }], gate: { liveFile, everySeconds: 0.3 } });
  await box.importChunks(box.batch('tamper-b1', { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: randomBytes(16), keys: randomSheKeys('t1', 5) }));
  const config = await writePlantSentinelConfig({ dir: path.join(box.base, 'sentinel'), boxId: box.boxId, smtpPort: smtp.port, keystoreDataDir: box.keystore.dataDir, everySeconds: 1 });
  sentinel = startService('sentinel', { PKS_CONFIG: config, PKS_RUN_DIR: box.runDir }, box.logDir);
  const admin = box.keystore.client('pksctl');
  await admin.call('tester-put', { cn: 'line-1', station: 'st-1', pools: [POOL], expiresAt: '2099-01-01T00:00:00.000Z', revoked: false });
  const tester = box.keystore.client('tester-api');
  const reserve = (uid: number) => tester.call<{ packageId: string }>('reserve', { pool: POOL, uid: uid.toString(16).padStart(30, '0'), tester: 'line-1', station: 'st-1' });
  await reserve(0x100);

  await writeFile(file, 'serve(); exfiltrate()\n');
  await remeasure();
  const tampered = /CRITICAL raised: application tampered, vault closed on vault$/;
  const [mail] = await waitFor('critical mail', async () => smtp!.mails.filter((m) => tampered.test(m.subject)).length ? smtp!.mails.filter((m) => tampered.test(m.subject)) : undefined, 30_000, 100);
  assert.match(mail!.text, /pks-app differs from the provisioned measurement/);
  const refused = await reserve(0x101).then(() => 'served', (e: { code?: string }) => e.code);
  assert.is(refused, 'PKS_TAMPERED', 'no package leaves a tampered box');

  await writeFile(file, original);
  await remeasure();
  await waitFor('resolution mail', async () => smtp!.mails.some((m) => /RESOLVED: application tampered, vault closed on vault$/.test(m.subject)), 30_000, 100);
  const p = await reserve(0x101);
  assert.ok(p.packageId, 'served again once the file is restored');
  assert.is(smtp.mails.filter((m) => tampered.test(m.subject)).length, 1, 'one critical mail, no flood');
});

test.run();
