// Setup's token initialisation through PKCS#11 on a real SoftHSM: PINs from files only (the VM
// test found them in the journal when softhsm2-util took them on its command line), idempotent,
// bad input refused before anything is created.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pkcs11js from 'pkcs11js';

const MODULE = '/usr/lib/softhsm/libsofthsm2.so';
const CLI = path.resolve('services/vault/token-init-cli.ts');
let dir = '';
let conf = '';

const cli = (args: string[]): Promise<{ code: number; out: string; err: string }> =>
  new Promise((resolve) =>
    execFile(process.execPath, ['--import', 'tsx', CLI, ...args], { env: { ...process.env, SOFTHSM2_CONF: conf }, timeout: 60_000 }, (e, out, err) =>
      resolve({ code: e ? Number((e as { code?: number }).code ?? 1) : 0, out, err }),
    ),
  );

test.before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pks-token-init-'));
  await mkdir(path.join(dir, 'tokens'));
  conf = path.join(dir, 'softhsm2.conf');
  await writeFile(conf, `directories.tokendir = ${dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  await writeFile(path.join(dir, 'so'), 'a1b2c3d4e5f60718\n', { mode: 0o600 });
  await writeFile(path.join(dir, 'pin'), '0f1e2d3c4b5a6978\n', { mode: 0o600 });
  await writeFile(path.join(dir, 'short'), '12\n', { mode: 0o600 });
});
test.after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('bad label, short PIN, a PIN on the command line: coded refusal, no token made', async () => {
  const base = ['--module', MODULE, '--so-pin-file', path.join(dir, 'so')];
  let r = await cli([...base, '--label', ' padded', '--pin-file', path.join(dir, 'pin')]);
  assert.is(r.code, 1);
  assert.match(r.err, /PKS_CONFIG_INVALID: token label/);
  r = await cli([...base, '--label', 'pks-t1', '--pin-file', path.join(dir, 'short')]);
  assert.match(r.err, /PKS_CONFIG_INVALID: user PIN/);
  r = await cli([...base, '--label', 'pks-t1', '--pin', '0f1e2d3c4b5a6978']);
  assert.is(r.code, 1, 'no --pin option: a PIN never goes on a command line');
  assert.not.match(r.err, /0f1e2d3c4b5a6978/);
  assert.equal(await readdir(path.join(dir, 'tokens')), [], 'nothing created');
});

test('initialises once, keeps it on a re-run, and the user PIN from the file logs in', async () => {
  const args = ['--module', MODULE, '--label', 'pks-t1', '--so-pin-file', path.join(dir, 'so'), '--pin-file', path.join(dir, 'pin')];
  let r = await cli(args);
  assert.is(r.code, 0, r.err);
  assert.is(r.out.trim(), "token 'pks-t1' initialised");
  r = await cli(args);
  assert.is(r.out.trim(), "token 'pks-t1' kept", 'idempotent: a resumed setup changes nothing');

  process.env.SOFTHSM2_CONF = conf;
  const p11 = new pkcs11js.PKCS11();
  p11.load(MODULE);
  p11.C_Initialize();
  try {
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === 'pks-t1');
    assert.ok(slot !== undefined, 'token found by label');
    const s = p11.C_OpenSession(slot!, pkcs11js.CKF_SERIAL_SESSION);
    p11.C_Login(s, pkcs11js.CKU_USER, '0f1e2d3c4b5a6978');
    p11.C_Logout(s);
    assert.throws(() => p11.C_Login(s, pkcs11js.CKU_USER, '0f1e2d3c4b5a6978\n'), /CKR_PIN_INCORRECT/, 'the newline is not part of the PIN');
    p11.C_CloseSession(s);
  } finally {
    p11.C_Finalize();
  }
});

test.run();
