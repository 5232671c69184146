// The plant-in-a-box end to end, small: broker, reference KMS, SMTP, and the box's five
// services as processes. Stock arrives over MQTT, the line runs over mTLS, the KMS goes
// offline and back, the sentinel mails, and at the end the KMS has verified every injection.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runPlant } from '../../scripts/plant/plant.js';

test('the plant: every ECU injected once, verified at the KMS, low stock mailed and resolved', async () => {
  const base = await mkdtemp(path.join(os.tmpdir(), 'pks-e2e-plant-'));
  const plant = await runPlant({ base, testers: 4, ecus: 120 });
  try {
    const s = plant.summary;
    assert.is(s.injected, 120);
    assert.is(s.verified, 120);
    assert.is(s.duplicates, 0);
    assert.is(s.kms_verified, s.injected);
    assert.ok(s.reorders >= 3, `re-orders: ${s.reorders}`);
    assert.ok(s.burned >= 1, 'the failed injections burned their keys');
    const subjects = plant.smtp.mails.map((m) => m.subject);
    assert.ok(subjects.some((x) => /raised: stock low on oem1\.bcm\.key4/.test(x)), subjects.join('\n'));
    assert.ok(subjects.some((x) => /RESOLVED: stock low on oem1\.bcm\.key4/.test(x)), subjects.join('\n'));
    // the KMS's fleet view knows the box and its last status
    const box = await plant.kms.fleet.call<{ counters: { verified: number; burned: number } }>('box', { boxId: plant.box.boxId });
    assert.is(box.counters.verified, 120);
  } finally {
    await plant.stop();
    await rm(base, { recursive: true, force: true });
  }
});

test.run();
