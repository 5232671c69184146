import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sheCommand } from '../../appliance/pksctl/she.js';

const SPEC = [
  '--uid', '000000000000000000000000000001', '--id', '4', '--auth-id', '1',
  '--auth-key', '000102030405060708090a0b0c0d0e0f', '--key', '0f0e0d0c0b0a09080706050403020100',
  '--counter', '1', '--flags', '0',
];
const WANT = {
  m1: '00000000000000000000000000000141',
  m2: '2b111e2d93f486566bcbba1d7f7a9797c94643b050fc5d4d7de14cff682203c3',
  m3: 'b9d745e5ace7d41860bc63c2b9f5bb46',
  m4: '00000000000000000000000000000141b472e8d8727d70d57295e74849a27917',
  m5: '820d8d95dc11b4668878160cb2a4e23e',
};

async function run(argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await sheCommand(argv, (s) => out.push(s), (s) => err.push(s));
  return { code, out, err };
}

/** Replaces the value of one option in the spec argv. */
const withArg = (name: string, value: string): string[] => {
  const a = [...SPEC];
  a[a.indexOf(name) + 1] = value;
  return a;
};

test('readable output: one "Mi = hex" line per message', async () => {
  const r = await run(SPEC);
  assert.is(r.code, 0);
  assert.equal(r.err, []);
  assert.equal(r.out.join('\n').split('\n'), [
    `M1 = ${WANT.m1}`, `M2 = ${WANT.m2}`, `M3 = ${WANT.m3}`, `M4 = ${WANT.m4}`, `M5 = ${WANT.m5}`,
  ]);
});

test('--json: exactly one line of lowercase hex', async () => {
  const r = await run([...SPEC, '--json']);
  assert.is(r.code, 0);
  assert.is(r.out.length, 1);
  assert.not.match(r.out[0]!, /\n/);
  assert.is(r.out[0], JSON.stringify(WANT));
  assert.equal(JSON.parse(r.out[0]!), WANT);
});

test('uppercase hex and =-style options are accepted, output stays lowercase', async () => {
  const r = await run([
    '--uid=000000000000000000000000000001', '--id=4', '--auth-id=1',
    '--auth-key=000102030405060708090A0B0C0D0E0F', '--key=0F0E0D0C0B0A09080706050403020100',
    '--counter=1', '--flags=0', '--json',
  ]);
  assert.is(r.code, 0);
  assert.equal(JSON.parse(r.out[0]!), WANT);
});

test('numbers in 0x-hex give the same result as decimal', async () => {
  const dec = await run([...withArg('--flags', '31'), '--json']);
  const hx = await run([...withArg('--flags', '0x1F'), '--json']);
  assert.is(dec.code, 0);
  assert.is(hx.out[0], dec.out[0]);
  const c1 = await run([...withArg('--counter', '268435455'), '--json']);
  const c2 = await run([...withArg('--counter', '0xfffffff'), '--json']);
  assert.is(c1.code, 0);
  assert.is(c2.out[0], c1.out[0]);
  assert.is((await run(withArg('--id', '0x4'))).out.join('\n'), (await run(SPEC)).out.join('\n'));
});

test('wildcard UID with the WILDCARD flag is computed', async () => {
  const argv = withArg('--uid', '0'.repeat(30));
  argv[argv.indexOf('--flags') + 1] = '1';
  const r = await run([...argv, '--json']);
  assert.is(r.code, 0);
  assert.is(JSON.parse(r.out[0]!).m1, '00000000000000000000000000000041');
});

test('--help prints usage and exits 0', async () => {
  const r = await run(['--help']);
  assert.is(r.code, 0);
  assert.match(r.out.join('\n'), /usage: pksctl she/);
});

const refusals: [string, string[], string, RegExp][] = [
  ['no arguments', [], 'PKS_BAD_REQUEST', /missing --uid, --id, --auth-id, --auth-key, --key, --counter, --flags/],
  ['missing --flags', SPEC.slice(0, -2), 'PKS_BAD_REQUEST', /missing --flags/],
  ['unknown option', [...SPEC, '--verbose'], 'PKS_BAD_REQUEST', /--verbose/],
  ['positional argument', [...SPEC, 'extra'], 'PKS_BAD_REQUEST', /positional/],
  ['option without value', [...SPEC.slice(0, -1)], 'PKS_BAD_REQUEST', /--flags/],
  ['repeated option', [...SPEC, '--counter', '2'], 'PKS_BAD_REQUEST', /--counter given more than once/],
  ['value to --json', [...SPEC, '--json=yes'], 'PKS_BAD_REQUEST', /json/],
  ['uid too short', withArg('--uid', '0001'), 'PKS_BAD_HEX', /--uid/],
  ['uid not hex', withArg('--uid', 'zz0000000000000000000000000001'), 'PKS_BAD_HEX', /--uid/],
  ['auth key too long', withArg('--auth-key', '00'.repeat(17)), 'PKS_BAD_HEX', /--auth-key/],
  ['key not hex', withArg('--key', 'g'.repeat(32)), 'PKS_BAD_HEX', /--key/],
  ['key with 0x prefix', withArg('--key', '0x' + '00'.repeat(15)), 'PKS_BAD_HEX', /--key/],
  ['id 0', withArg('--id', '0'), 'PKS_SHE_INVALID', /keyId/],
  ['id 16', withArg('--id', '16'), 'PKS_SHE_INVALID', /keyId/],
  ['auth-id 0x10', withArg('--auth-id', '0x10'), 'PKS_SHE_INVALID', /authKeyId/],
  ['counter 2^28', withArg('--counter', '268435456'), 'PKS_SHE_INVALID', /counter/],
  ['flags 32', withArg('--flags', '32'), 'PKS_SHE_INVALID', /flags/],
  ['zero uid without WILDCARD', withArg('--uid', '0'.repeat(30)), 'PKS_SHE_INVALID', /wildcard/],
  ['negative number', withArg('--counter', '-1'), 'PKS_BAD_REQUEST', /--counter/],
  ['negative number with =', [...SPEC.slice(0, -4), '--counter=-1', '--flags', '0'], 'PKS_BAD_REQUEST', /--counter: "-1" is not a decimal/],
  ['option as a value', ['--uid', '--id', '4'], 'PKS_BAD_REQUEST', /--uid' argument is ambiguous$/],
  ['leading zero', withArg('--id', '04'), 'PKS_BAD_REQUEST', /--id/],
  ['octal-looking', withArg('--id', '0o4'), 'PKS_BAD_REQUEST', /--id/],
  ['binary', withArg('--flags', '0b1'), 'PKS_BAD_REQUEST', /--flags/],
  ['float', withArg('--counter', '1.0'), 'PKS_BAD_REQUEST', /--counter/],
  ['exponent', withArg('--counter', '1e3'), 'PKS_BAD_REQUEST', /--counter/],
  ['empty number', withArg('--counter', ''), 'PKS_BAD_REQUEST', /--counter/],
  ['spaces', withArg('--counter', ' 1'), 'PKS_BAD_REQUEST', /--counter/],
  ['bare 0x', withArg('--flags', '0x'), 'PKS_BAD_REQUEST', /--flags/],
  ['huge number', withArg('--counter', '99999999999999999999'), 'PKS_BAD_REQUEST', /--counter/],
];
for (const [name, argv, code, detail] of refusals) {
  test(`refuses ${name} with ${code}, exit 2, nothing on stdout`, async () => {
    const r = await run(argv);
    assert.is(r.code, 2);
    assert.equal(r.out, []);
    assert.match(r.err[0]!, new RegExp(`^pksctl she: ${code}: `));
    assert.match(r.err[0]!, detail);
    assert.match(r.err.join('\n'), /--help/);
  });
}

test('error output never echoes key material', async () => {
  const secret = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
  for (const argv of [
    [...withArg('--key', secret), 'stray'],
    withArg('--key', secret + '00'),
    [...withArg('--auth-key', secret), '--id', '5'],
    withArg('--auth-key', secret.slice(0, 31) + 'x'),
    ['--json', secret],
  ]) {
    const r = await run(argv);
    assert.is(r.code, 2);
    assert.not.ok(r.err.join('\n').includes(secret.slice(0, 20)), argv.join(' '));
  }
});

test.run();
