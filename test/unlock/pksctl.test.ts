// pksctl unlock against a running box: onboarding with four eyes from two people at the box,
// a PKCS#12 for the user, the token verification key for ECU makers, the log with filters and
// --json, `show` of a token file, and coded errors for bad command lines.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { ROOT } from '../../scripts/plant/process.js';
import { startUnlock, unlockCall, type UnlockHandle } from '../../scripts/plant/unlock.js';

const run = promisify(execFile);
let box: Box;
let svc: UnlockHandle;

async function pksctl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await run(process.execPath, [path.join(ROOT, 'bin', 'pksctl.mjs'), 'unlock', ...args], { env: { ...process.env, PKS_RUN_DIR: box.runDir }, timeout: 60_000 });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: x.stdout, err: x.stderr };
  }
}

test.before(async () => {
  box = await startBox({ pools: [] });
  svc = await startUnlock({ dir: `${box.base}/unlock`, runDir: box.runDir, logDir: box.logDir, boxId: box.boxId });
});
test.after(async () => {
  await svc?.stop();
  await box?.stop();
});

test('pksctl unlock: onboard (four eyes), cert as PKCS#12, public-key, log, show', async () => {
  const on = await pksctl(['onboard', 'dev-ed', '--role', 'DEVELOPMENT', '--days', '7', '--as', 'it-anna', '--json']);
  assert.is(on.code, 0, on.err);
  const req = JSON.parse(on.out) as { id: string; approvalsNeeded: number };
  assert.is(req.approvalsNeeded, 2);
  assert.match((await pksctl(['approve', req.id, '--as', 'it-ben'])).out, 'a second admin must approve');
  const same = await pksctl(['approve', req.id, '--as', 'it-ben']);
  assert.is(same.code, 2);
  assert.match(same.err, 'PKS_UNLOCK_APPROVAL');
  assert.match((await pksctl(['approve', req.id, '--as', 'it-cleo'])).out, 'dev-ed is ACTIVE as DEVELOPMENT');

  const pass = path.join(box.base, 'p12-pass');
  await writeFile(pass, 'correct horse battery\n');
  const p12 = path.join(box.base, 'dev-ed.p12');
  const cert = await pksctl(['cert', 'dev-ed', '--p12', p12, '--passphrase-file', pass]);
  assert.is(cert.code, 0, cert.err);
  const { stdout: keyPem } = await run('openssl', ['pkcs12', '-in', p12, '-nocerts', '-nodes', '-passin', 'pass:correct horse battery']);
  const { stdout: certPem } = await run('openssl', ['pkcs12', '-in', p12, '-clcerts', '-nokeys', '-passin', 'pass:correct horse battery']);
  // the PKCS#12 logs in: the console knows her
  const c = svc.client({ cn: 'dev-ed', key: keyPem, cert: certPem, keyFile: '', certFile: '', serial: '' });
  const me = await unlockCall<{ role: string; csrf: string }>(c, 'GET', '/v1/me');
  assert.is(me.body.role, 'DEVELOPMENT');
  const t = await unlockCall<{ token: string; tokenHex: string }>(c, 'POST', '/v1/tokens', { ecuType: 'gateway', uid: '00112233445566778899aabbccddee', challenge: 'ab'.repeat(32) }, me.body.csrf);
  assert.is(t.status, 200, JSON.stringify(t.body));
  const file = path.join(box.base, 'token.bin');
  await writeFile(file, Buffer.from(t.body.token, 'base64'));
  const show = await pksctl(['show', file, '--json']);
  assert.is(show.code, 0, show.err);
  const d = JSON.parse(show.out) as { ecuType: string; permissionNames: string[]; signer: string };
  assert.is(d.ecuType, 'gateway');
  // DEVELOPMENT on the gateway is narrower than on other ECU types
  assert.equal(d.permissionNames, ['EXTENDED_LOGGING', 'DEBUG_READ']);
  assert.match(d.signer, 'signature VALID');

  const pk = await pksctl(['public-key']);
  assert.is(pk.code, 0, pk.err);
  assert.match(pk.out, /# token key oem1, key id [0-9a-f]{16}, ECU types bcm, gateway\n-----BEGIN PUBLIC KEY-----/);

  const log = await pksctl(['log', '--user', 'dev-ed', '--json']);
  const evs = (JSON.parse(log.out) as { items: { ev: string }[] }).items.map((e) => e.ev);
  for (const ev of ['request', 'approve', 'deny', 'activate', 'certificate', 'grant']) assert.ok(evs.includes(ev), `${ev} in ${evs.join(',')}`);
  const byEcu = await pksctl(['log', '--ecu', '00112233445566778899AABBCCDDEE', '--since', new Date(Date.now() - 60_000).toISOString()]);
  assert.match(byEcu.out, /grant\s+dev-ed/);
  assert.match((await pksctl(['tokens', '--user', 'dev-ed'])).out, /gateway\/00112233445566778899aabbccddee EXTENDED_LOGGING,DEBUG_READ/);
});

test('pksctl unlock: bad input is a coded error and changes nothing', async () => {
  for (const bad of [
    ['onboard', 'x', '--role', 'DEVELOPMENT'],
    ['onboard', 'x', '--role', 'NOPE', '--days', '1'],
    ['onboard', 'x y', '--role', 'TESTING', '--days', '1'],
    ['onboard', 'x', '--role', 'TESTING', '--days', '9999'],
    ['log', '--since', 'yesterday'],
    ['frobnicate'],
  ]) {
    const r = await pksctl(bad);
    assert.is(r.code, 2, `${bad.join(' ')}: ${r.err}`);
    assert.match(r.err, /PKS_(BAD_REQUEST|NOT_FOUND|OUT_OF_RANGE)/);
  }
  const reqs = JSON.parse((await pksctl(['requests', '--json'])).out) as { items: { cn: string }[] };
  assert.not.ok(reqs.items.some((r) => r.cn === 'x'));
});

test.run();
