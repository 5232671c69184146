// parseJsonOr: the one parse of outside JSON. Whatever arrives, the caller gets a value or the
// coded error it named, never a SyntaxError, a coerced non-string, a quoted secret or a
// polluted prototype.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileChecker } from '../../appliance/config.js';
import { PksError, type ErrorCode } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import type { TrustAnchor } from '../../appliance/batch-format.js';
import { verifyKmsMessage } from '../../appliance/kms-message.js';
import { verifyFile } from '../../appliance/verification-file.js';
import { checkQuoteRequest } from '../../services/attest/quote-socket.js';
import { MAX_MANIFEST_BYTES, verifyManifest } from '../../services/updater/manifest.js';
import { MAX_COMMAND_BYTES, verifyCommand } from '../../appliance/contracts/commands.js';
import { verificationFileToSign } from '../../services/vault/signed-structures.js';

const refusal = (fn: () => unknown): PksError => {
  try {
    fn();
  } catch (e) {
    assert.instance(e, PksError, `not a coded error: ${String(e)}`);
    return e as PksError;
  }
  throw new Error('did not throw');
};
const refused = (fn: () => unknown, code: ErrorCode, detail: string): void => {
  const e = refusal(fn);
  assert.is(e.code, code);
  assert.is(e.detail, detail);
};

test('JSON text as a string or a UTF-8 Buffer parses to its value', () => {
  assert.equal(parseJsonOr('PKS_BAD_REQUEST', 'x', '{"a":[1,"é",null]}'), { a: [1, 'é', null] });
  assert.equal(parseJsonOr('PKS_BAD_REQUEST', 'x', Buffer.from('{"a":[1,"é",null]}')), { a: [1, 'é', null] });
  assert.is(parseJsonOr('PKS_BAD_REQUEST', 'x', ' 7 '), 7);
  assert.is(parseJsonOr('PKS_BAD_REQUEST', 'x', 'null'), null);
});

test('anything that is not JSON is the caller\'s code with "<what> is not JSON"', () => {
  for (const bad of ['', ' ', '{', '{"a":1', "{'a':1}", '{"a":1,}', 'undefined', 'NaN', '\uFEFF{}', '{"a":1}x', '1 2'])
    refused(() => parseJsonOr('PKS_COMMAND_INVALID', 'command', bad), 'PKS_COMMAND_INVALID', 'command is not JSON');
  refused(() => parseJsonOr('PKS_KMS_MESSAGE_INVALID', 'KMS message', Buffer.from([0xff, 0xfe, 0x7b])), 'PKS_KMS_MESSAGE_INVALID', 'KMS message is not JSON');
  refused(() => parseJsonOr('PKS_BATCH_INVALID', 'payload', Buffer.alloc(0)), 'PKS_BATCH_INVALID', 'payload is not JSON');
});

test('a non-string is refused, not coerced (JSON.parse would read 123 as 123 and ["1"] as 1)', () => {
  for (const v of [123, ['1'], { toString: () => '{}' }, undefined, null, true, new Uint8Array([0x31]), Symbol('s')])
    refused(() => parseJsonOr('PKS_BAD_REQUEST', 'request', v as unknown as string), 'PKS_BAD_REQUEST', 'request is not JSON');
});

test('the refusal quotes nothing of the input and keeps no cause (V8 quotes the text in its message)', () => {
  const e = refusal(() => parseJsonOr('PKS_BATCH_INVALID', 'payload', '{"key":SECRET-0123456789abcdef}'));
  assert.not.match(e.message, 'SECRET');
  assert.not.match(JSON.stringify(e.toJSON()), 'SECRET');
  assert.is(e.cause, undefined);
});

test('maxLength refuses a longer input before it is decoded or parsed; the limit itself passes', () => {
  const huge = 'x'.repeat(64 << 20); // 64 MiB of junk: refused by length, not parsed
  refused(() => parseJsonOr('PKS_UPDATE_MANIFEST', 'manifest', huge, 32 * 1024), 'PKS_UPDATE_MANIFEST', 'manifest is too large');
  refused(() => parseJsonOr('PKS_UPDATE_MANIFEST', 'manifest', Buffer.from(huge), 32 * 1024), 'PKS_UPDATE_MANIFEST', 'manifest is too large');
  const text = JSON.stringify({ s: 'a'.repeat(100) });
  assert.equal(parseJsonOr('PKS_COMMAND_INVALID', 'command', text, text.length), { s: 'a'.repeat(100) });
  refused(() => parseJsonOr('PKS_COMMAND_INVALID', 'command', text, text.length - 1), 'PKS_COMMAND_INVALID', 'command is too large');
  // a Buffer counts bytes: "é" is two
  assert.equal(parseJsonOr('PKS_COMMAND_INVALID', 'command', Buffer.from('"é"'), 4), 'é');
  refused(() => parseJsonOr('PKS_COMMAND_INVALID', 'command', Buffer.from('"é"'), 3), 'PKS_COMMAND_INVALID', 'command is too large');
});

test('deep nesting and a long unterminated text give a value or the coded error, never a RangeError', () => {
  const n = 100_000;
  const deep = '['.repeat(n) + ']'.repeat(n);
  let v = parseJsonOr('PKS_BAD_REQUEST', 'x', deep);
  for (let i = 0; i < n; i++) v = (v as unknown[])[0];
  assert.is(v, undefined);
  refused(() => parseJsonOr('PKS_BAD_REQUEST', 'x', '['.repeat(n)), 'PKS_BAD_REQUEST', 'x is not JSON');
  refused(() => parseJsonOr('PKS_BAD_REQUEST', 'x', '"' + 'a'.repeat(8 << 20)), 'PKS_BAD_REQUEST', 'x is not JSON');
});

test('"__proto__" keys stay inert: own data properties, no prototype set, nothing polluted', () => {
  const o = parseJsonOr('PKS_BAD_REQUEST', 'x', '{"__proto__":{"polluted":1,"isAdmin":true},"a":{"__proto__":{"polluted":2}},"constructor":{"prototype":{"polluted":3}}}') as Record<string, any>;
  assert.is(Object.getPrototypeOf(o), Object.prototype);
  assert.is(Object.getPrototypeOf(o.a), Object.prototype);
  assert.ok(Object.prototype.hasOwnProperty.call(o, '__proto__'), 'an own key, as JSON.parse defines it');
  assert.is(o.polluted, undefined);
  assert.is(o.isAdmin, undefined);
  assert.is(o.a.polluted, undefined);
  assert.is(({} as Record<string, unknown>).polluted, undefined);
  assert.is(({} as Record<string, unknown>).isAdmin, undefined);
  // what callers do with the value next keeps it inert too: spread and structuredClone define, not set
  assert.is(Object.getPrototypeOf({ ...o }), Object.prototype);
  assert.is(Object.getPrototypeOf(structuredClone(o)), Object.prototype);
  assert.is(({ ...o } as Record<string, unknown>).isAdmin, undefined);
});

test('a closed schema (as the callers\' envelopes and payloads are) refuses a "__proto__" key', () => {
  const check = compileChecker<{ a: number }>({ type: 'object', additionalProperties: false, required: ['a'], properties: { a: { type: 'integer' } } }, 'command', 'PKS_COMMAND_INVALID');
  assert.equal(check(parseJsonOr('PKS_COMMAND_INVALID', 'command', '{"a":1}')), { a: 1 });
  const e = refusal(() => check(parseJsonOr('PKS_COMMAND_INVALID', 'command', '{"a":1,"__proto__":{"a":2}}')));
  assert.is(e.code, 'PKS_COMMAND_INVALID');
});

test('the parsers of outside messages keep their codes and wording for junk and for a flood', () => {
  // nothing past the parse is reached, so no key or anchor is needed
  const none = undefined as never;
  const cases: [() => unknown, ErrorCode, string][] = [
    [() => verifyKmsMessage('{"v":1,', 'ack', none as TrustAnchor, 'box-1'), 'PKS_KMS_MESSAGE_INVALID', 'KMS message is not JSON'],
    [() => verifyKmsMessage(Buffer.alloc(300 * 1024, 0x20), 'ack', none, 'box-1'), 'PKS_KMS_MESSAGE_INVALID', 'KMS message is too large'],
    [() => verifyCommand('{"payload":', { opsKey: none, boxId: 'box-1', lastSeq: 0 }), 'PKS_COMMAND_INVALID', 'command is not JSON'],
    [() => verifyCommand(' '.repeat(MAX_COMMAND_BYTES * 2 + 1), { opsKey: none, boxId: 'box-1', lastSeq: 0 }), 'PKS_COMMAND_INVALID', 'command is too large'],
    [() => verifyManifest(Buffer.from('<xml/>'), { kmsCa: none, boxId: 'box-1', compatible: 'pks', maxBytes: 1 }), 'PKS_UPDATE_MANIFEST', 'manifest is not JSON'],
    [() => verifyManifest(' '.repeat(MAX_MANIFEST_BYTES * 2 + 1), { kmsCa: none, boxId: 'box-1', compatible: 'pks', maxBytes: 1 }), 'PKS_UPDATE_MANIFEST', 'manifest is too large'],
    [() => verifyFile('}', none), 'PKS_BAD_REQUEST', 'verification file is not JSON'],
    [() => verificationFileToSign('{"type":', 'box-1'), 'PKS_BAD_REQUEST', 'verification payload is not JSON'],
    [() => checkQuoteRequest('args'), 'PKS_BAD_REQUEST', 'quote request is not JSON'],
  ];
  for (const [fn, code, detail] of cases) refused(fn, code, detail);
});

test.run();
