// Ops commands as the box checks them: only a command signed by the pinned ops key, for this
// box, unexpired and with a seq above the last accepted one passes; everything else gets the
// coded refusal ops can match on.
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isPksError } from '../../appliance/errors.js';
import { peekSeq, signCommand, verifyCommand, type CommandPayload } from '../../appliance/contracts/commands.js';

const ops = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const now = new Date('2030-01-01T00:00:00Z');
const base = (o: Partial<CommandPayload> = {}): CommandPayload => ({
  v: 1,
  seq: 10,
  expiresAt: '2030-01-01T01:00:00Z',
  boxId: 'box-1',
  command: 'set-quota',
  args: { pool: 'oemA.bcm.k4', minimum: 10, reorder: 50 },
  ...o,
});
const verify = (raw: string | Buffer, lastSeq = 5) => verifyCommand(raw, { opsKey: ops.publicKey, boxId: 'box-1', lastSeq, now });
const refused = (raw: string | Buffer, code: string, lastSeq = 5): void => {
  try {
    verify(raw, lastSeq);
  } catch (e) {
    assert.ok(isPksError(e), String(e));
    assert.is((e as { code: string }).code, code, (e as Error).message);
    return;
  }
  assert.unreachable(`accepted, expected ${code}`);
};

test('a good command passes and comes back as signed', () => {
  const c = verify(JSON.stringify(signCommand(base(), ops.privateKey)));
  assert.is(c.seq, 10);
  assert.equal(c.args, { pool: 'oemA.bcm.k4', minimum: 10, reorder: 50 });
});

test('unsigned and badly signed commands are refused', () => {
  refused(JSON.stringify({ payload: JSON.stringify(base()) }), 'PKS_COMMAND_SIGNATURE');
  refused(JSON.stringify(signCommand(base(), other.privateKey)), 'PKS_COMMAND_SIGNATURE');
  const good = signCommand(base(), ops.privateKey);
  refused(JSON.stringify({ ...good, payload: good.payload.replace('"minimum":10', '"minimum":0') }), 'PKS_COMMAND_SIGNATURE');
});

test('expired and replayed commands are stale', () => {
  refused(JSON.stringify(signCommand(base({ expiresAt: '2029-12-31T23:59:59Z' }), ops.privateKey)), 'PKS_COMMAND_STALE');
  refused(JSON.stringify(signCommand(base({ seq: 5 }), ops.privateKey)), 'PKS_COMMAND_STALE');
  refused(JSON.stringify(signCommand(base(), ops.privateKey)), 'PKS_COMMAND_STALE', 10);
});

test('another box, malformed payloads and arguments are invalid', () => {
  refused(JSON.stringify(signCommand(base({ boxId: 'box-2' }), ops.privateKey)), 'PKS_COMMAND_INVALID');
  refused('not json', 'PKS_COMMAND_INVALID');
  refused(JSON.stringify({ payload: 'x', sig: 'AAAA', extra: 1 }), 'PKS_COMMAND_INVALID');
  refused(JSON.stringify(signCommand(base({ command: 'format-disk' as never }), ops.privateKey)), 'PKS_COMMAND_INVALID');
  refused(JSON.stringify(signCommand(base({ args: { pool: 'nope', minimum: -1, reorder: 1 } }), ops.privateKey)), 'PKS_COMMAND_INVALID');
  refused(JSON.stringify(signCommand(base({ expiresAt: '2031-01-01T00:00:00Z' }), ops.privateKey)), 'PKS_COMMAND_INVALID');
  refused(JSON.stringify(signCommand(base({ command: 'set-schedule', args: { mode: 'sometimes' } }), ops.privateKey)), 'PKS_COMMAND_INVALID');
  refused(JSON.stringify(signCommand(base({ command: 'set-schedule', args: { mode: 'windows', windowSeconds: 0 } }), ops.privateKey)), 'PKS_COMMAND_INVALID');
  // the box makes its own key: a rotate-cert carrying key or certificate material is malformed
  refused(JSON.stringify(signCommand(base({ command: 'rotate-cert', args: { cert: 'x'.repeat(200) } }), ops.privateKey)), 'PKS_COMMAND_INVALID');
  assert.is(verify(JSON.stringify(signCommand(base({ command: 'rotate-cert', args: {} }), ops.privateKey))).command, 'rotate-cert');
});

test('the seq of a refused command is reported when it can be read', () => {
  assert.is(peekSeq(JSON.stringify(signCommand(base({ seq: 77 }), other.privateKey))), 77);
  assert.is(peekSeq('junk'), undefined);
});

test.run();
