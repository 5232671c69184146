// Issue 9 item 4: an outbox item the KMS rejected is a critical alert for as long as the
// keystore keeps it (the alert engine mails criticals on raise and reminds while open).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkRejections } from '../../services/sentinel/checks.js';

test('no rejected record: ok; any: one critical naming the codes and the latest record', () => {
  assert.is(checkRejections([]).severity, 'ok');
  const o = checkRejections([
    { id: '0000010000000007', kind: 'injection', code: 'PKS_CONFLICT', detail: 'key k-1 was already reported (VERIFIED for ECU 01)' },
    { id: '0000010000000009', kind: 'checkpoint', code: 'PKS_AUDIT_BROKEN', detail: 'checkpoint 4 differs\u0007 from the one reported before' },
  ]);
  assert.is(o.severity, 'critical');
  assert.is(o.key, 'kms-rejected:outbox');
  assert.match(o.message, 'rejected 2 record(s) (PKS_CONFLICT, PKS_AUDIT_BROKEN)');
  assert.match(o.message, 'checkpoint 0000010000000009');
  assert.not.match(o.message, '\u0007');
  assert.ok(o.action.length > 20);
});

test.run();
