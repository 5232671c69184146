// The unlock service end to end with the real parts: vault on SoftHSM (token keys and user CA
// in the HSM), keystore on LMDB (users, tokens and the audit), the unlock service over mTLS,
// and the simulated ECU doing the 0x29 exchange. Onboarding with four eyes, certificates from
// the HSM CA, tokens for exactly the role's permissions, every refusal coded and logged,
// revocation at once, the audit chain verifying over all of it.
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { ipcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { signCommand, verifyCommand } from '../../appliance/contracts/commands.js';
import { runUnlockCommand } from '../../services/uplink/unlock-commands.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openDbs } from '../../services/keystore/db.js';
import { verifyAudit } from '../../services/keystore/audit.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { startUnlock, unlockCall, type UnlockHandle, type UnlockUserCred } from '../../scripts/plant/unlock.js';
import { UnlockEcu, NRC, challengeOf, challengeRequest, nrcOf, proofRequest } from '../../scripts/plant/ecu-unlock.js';
import { decodeToken, tokenSignatureValid } from '../../appliance/unlock-token.js';
import { PERMISSION_BITS, maskOf } from '../../appliance/unlock-permissions.js';
import type { UnlockRequest, UnlockUser } from '../../appliance/contracts/unlock.js';
import type { Client } from 'undici';

let box: Box;
let svc: UnlockHandle;
let eng: UnlockUserCred;
let engClient: Client;
let csrf: string;
let tokenSpki: Buffer;

const code = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return 'no error';
};
const UID = 'a1b2c3d4e5f60718293a4b5c6d7e8f';
const ecuFor = (uid = UID, type = 'bcm') => new UnlockEcu(type, Buffer.from(uid, 'hex'), [tokenSpki]);
const challengeFrom = (ecu: UnlockEcu): string => challengeOf(ecu.handle(challengeRequest())).toString('hex');
const askToken = (c: Client, body: Record<string, unknown>, proof = csrf) => unlockCall<Record<string, any>>(c, 'POST', '/v1/tokens', body, proof);

test.before(async () => {
  box = await startBox({ pools: [] });
  svc = await startUnlock({ dir: `${box.base}/unlock`, runDir: box.runDir, logDir: box.logDir, boxId: box.boxId, limits: { tokensPerMinute: 60, tokenBurst: 20 } });
  eng = await svc.user('eng-anna', 'AFTER_SALES');
  engClient = svc.client(eng);
  const me = await unlockCall<{ csrf: string; role: string }>(engClient, 'GET', '/v1/me');
  assert.is(me.status, 200, JSON.stringify(me.body));
  csrf = me.body.csrf;
  const keys = await svc.admin.call<{ items: { spki: string }[] }>('public-keys');
  tokenSpki = Buffer.from(keys.items[0]!.spki, 'base64');
});

test.after(async () => {
  await svc?.stop();
  await box?.stop();
});

// looked at from outside the vault, in a child process on the same SoftHSM token
const P11_PROBE = `
const p = require('pkcs11js'); const x = new p.PKCS11(); x.load(process.argv[1]); x.C_Initialize();
const slot = x.C_GetSlotList(true).find((s) => x.C_GetTokenInfo(s).label.trim() === process.argv[2]);
const h = x.C_OpenSession(slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION); x.C_Login(h, p.CKU_USER, process.argv[3]);
const out = {};
for (const label of ['pks-unlock-user-ca', 'pks-unlock-token-oem1']) {
  x.C_FindObjectsInit(h, [{ type: p.CKA_CLASS, value: p.CKO_PRIVATE_KEY }, { type: p.CKA_LABEL, value: label }]);
  const [k] = x.C_FindObjects(h, 2); x.C_FindObjectsFinal(h);
  const a = x.C_GetAttributeValue(h, k, [{ type: p.CKA_SENSITIVE }, { type: p.CKA_EXTRACTABLE }, { type: p.CKA_COPYABLE }, { type: p.CKA_NEVER_EXTRACTABLE }, { type: p.CKA_SIGN }, { type: p.CKA_DERIVE }]).map((v) => v.value[0] === 1);
  let value = 'readable'; try { x.C_GetAttributeValue(h, k, [{ type: p.CKA_VALUE }]); } catch (e) { value = /CKR_[A-Z_]+/.exec(e.message)[0]; }
  let copy = 'copied'; try { x.C_CopyObject(h, k, [{ type: p.CKA_TOKEN, value: false }]); } catch (e) { copy = /CKR_[A-Z_]+/.exec(e.message)[0]; }
  out[label] = { sensitive: a[0], extractable: a[1], copyable: a[2], neverExtractable: a[3], sign: a[4], derive: a[5], value, copy };
}
console.log(JSON.stringify(out));`;

test('the HSM holds the user CA and the token key sensitive, never extractable, not copyable, sign only', async () => {
  const { execFileSync } = await import('node:child_process');
  const tok = box.vault.token;
  const out = JSON.parse(execFileSync(process.execPath, ['-e', P11_PROBE, tok.module, tok.label, tok.pin], { env: { ...process.env, SOFTHSM2_CONF: tok.conf }, cwd: process.cwd() }).toString()) as Record<string, Record<string, unknown>>;
  for (const [label, a] of Object.entries(out)) {
    assert.equal(a, { sensitive: true, extractable: false, copyable: false, neverExtractable: true, sign: true, derive: false, value: 'CKR_ATTRIBUTE_SENSITIVE', copy: a.copy }, label);
    assert.is.not(a.copy, 'copied', `${label} could be copied`);
  }
});

test('an onboarded engineer gets a token for the challenge; the ECU opens a session with exactly the granted permissions, once', async () => {
  const ecu = ecuFor();
  const r = await askToken(engClient, { ecuType: 'bcm', uid: UID, challenge: challengeFrom(ecu) });
  assert.is(r.status, 200, JSON.stringify(r.body));
  const raw = Buffer.from(r.body.token, 'base64');
  const t = decodeToken(raw);
  assert.ok(tokenSignatureValid(t, tokenSpki));
  assert.is(t.permissions, maskOf(['FIELD_RETURN_ANALYSIS', 'EXTENDED_LOGGING', 'DEBUG_READ']));
  assert.equal(r.body.permissionNames.sort(), ['DEBUG_READ', 'EXTENDED_LOGGING', 'FIELD_RETURN_ANALYSIS']);
  assert.ok(t.notAfter - t.notBefore <= 8 * 3600, 'AFTER_SALES tokens live at most 8 h');
  assert.is(nrcOf(ecu.handle(proofRequest(raw))), null, JSON.stringify(ecu.lastRefusal));
  assert.ok(ecu.can(PERMISSION_BITS.FIELD_RETURN_ANALYSIS));
  assert.not.ok(ecu.can(PERMISSION_BITS.DEBUG_INTERFACE), 'nothing the role does not give');
  // the same token again, on a fresh challenge: used once, never again
  ecu.handle(Buffer.from([0x29, 0x00]));
  challengeFrom(ecu);
  assert.is(nrcOf(ecu.handle(proofRequest(raw))), NRC.ownershipVerificationFailed);
  assert.match(ecu.lastRefusal!.reason, /already used/);
  assert.not.ok(ecu.session);
});

test('the ECU refuses another ECU\'s token (0x56), a token for another challenge (0x58), a tampered one (0x58), an expired one (0x50), a revoked signer (0x57)', async () => {
  const mine = ecuFor();
  const other = ecuFor('0f0e0d0c0b0a09080706050403020100'.slice(0, 30));
  const r = await askToken(engClient, { ecuType: 'bcm', uid: UID, challenge: challengeFrom(mine) });
  const raw = Buffer.from(r.body.token, 'base64');
  challengeFrom(other);
  assert.is(nrcOf(other.handle(proofRequest(raw))), NRC.certificateVerificationFailedInvalidScope);
  // a fresh challenge on the right ECU: the token answers the old one
  challengeFrom(mine);
  assert.is(nrcOf(mine.handle(proofRequest(raw))), NRC.ownershipVerificationFailed);
  const r2 = await askToken(engClient, { ecuType: 'bcm', uid: UID, challenge: challengeFrom(mine) });
  const tampered = Buffer.from(r2.body.token, 'base64');
  tampered[114 + 15] ^= 0x04; // one more permission bit
  assert.is(nrcOf(mine.handle(proofRequest(tampered))), NRC.ownershipVerificationFailed);
  // a token's lifetime is what was asked (within the role's maximum)
  const r3 = await askToken(engClient, { ecuType: 'bcm', uid: UID, challenge: challengeFrom(ecuFor()), lifetimeSeconds: 60 });
  const t3 = decodeToken(Buffer.from(r3.body.token, 'base64'));
  assert.is(t3.notAfter - t3.notBefore, 60);
  const expiredEcu = new UnlockEcu('bcm', Buffer.from(UID, 'hex'), [tokenSpki], undefined, () => Date.now());
  const r4 = await askToken(engClient, { ecuType: 'bcm', uid: UID, challenge: challengeFrom(expiredEcu), lifetimeSeconds: 1 });
  await new Promise((res) => setTimeout(res, 2100));
  assert.is(nrcOf(expiredEcu.handle(proofRequest(Buffer.from(r4.body.token, 'base64')))), NRC.certificateVerificationFailedInvalidTimePeriod);
  const revokedEcu = ecuFor();
  revokedEcu.revokeKey(r.body.keyId);
  const r5 = await askToken(engClient, { ecuType: 'bcm', uid: UID, challenge: challengeFrom(revokedEcu) });
  assert.is(nrcOf(revokedEcu.handle(proofRequest(Buffer.from(r5.body.token, 'base64')))), NRC.certificateVerificationFailedInvalidCertificate);
});

test('the service refuses, coded and logged, what the role does not allow; a denied request changes nothing but the log', async () => {
  const before = (await svc.admin.call<{ items: unknown[] }>('tokens', { user: 'eng-anna' })).items.length;
  const cases: [Record<string, unknown>, string][] = [
    [{ ecuType: 'bcm', uid: UID, challenge: '00'.repeat(32), permissions: ['DEBUG_INTERFACE'] }, 'PKS_UNLOCK_FORBIDDEN'],
    [{ ecuType: 'bcm', uid: UID, challenge: '00'.repeat(32), lifetimeSeconds: 9 * 3600 }, 'PKS_UNLOCK_LIFETIME'],
    [{ ecuType: 'toaster', uid: UID, challenge: '00'.repeat(32) }, 'PKS_NOT_FOUND'],
    [{ ecuType: 'bcm', uid: 'zz', challenge: '00'.repeat(32) }, 'PKS_BAD_HEX'],
    [{ ecuType: 'bcm', uid: UID, challenge: '00'.repeat(8) }, 'PKS_BAD_HEX'],
    [{ ecuType: 'bcm', uid: UID, challenge: '00'.repeat(32), permissions: ['MAKE_COFFEE'] }, 'PKS_BAD_REQUEST'],
  ];
  for (const [body, want] of cases) {
    const r = await askToken(engClient, body);
    assert.is(r.body.code, want, `${JSON.stringify(body)} → ${JSON.stringify(r.body)}`);
  }
  // schema-level junk: coded too
  const junk = await askToken(engClient, { ecuType: 'bcm', uid: UID, challenge: '00'.repeat(32), extra: 1 });
  assert.is(junk.body.code, 'PKS_BAD_REQUEST');
  // no anti-forgery proof: refused before anything is looked at
  const forged = await askToken(engClient, { ecuType: 'bcm', uid: UID, challenge: '00'.repeat(32) }, 'nope');
  assert.is(forged.body.code, 'PKS_UNLOCK_CSRF');
  const after = (await svc.admin.call<{ items: unknown[] }>('tokens', { user: 'eng-anna' })).items.length;
  assert.is(after, before, 'no token recorded for a refusal');
  const log = (await svc.admin.call<{ items: { ev: string; reason?: string }[] }>('log', { user: 'eng-anna', limit: 50 })).items;
  for (const want of ['PKS_UNLOCK_FORBIDDEN', 'PKS_UNLOCK_LIFETIME', 'PKS_NOT_FOUND', 'PKS_BAD_HEX']) assert.ok(log.some((e) => e.ev === 'deny' && e.reason === want), `denial ${want} logged`);
});

test('four eyes: a high-privilege role needs two different admins; the same one twice is refused', async () => {
  const req = await svc.admin.call<UnlockRequest>('onboard', { cn: 'dev-dora', role: 'DEVELOPMENT', accessSeconds: 3600, as: 'alice' });
  assert.is(req.approvalsNeeded, 2);
  assert.is(await code(svc.admin.call('approve', { id: req.id, as: 'alice' })), 'PKS_UNLOCK_APPROVAL', 'the requester is not one of the four eyes');
  const a1 = await svc.admin.call<{ request: UnlockRequest; user?: UnlockUser }>('approve', { id: req.id, as: 'bob' });
  assert.is(a1.request.state, 'PENDING');
  assert.not.ok(a1.user);
  assert.is(await code(svc.admin.call('approve', { id: req.id, as: 'bob' })), 'PKS_UNLOCK_APPROVAL');
  // not yet a user: no certificate
  assert.is(await code(svc.admin.call('certificate', { cn: 'dev-dora', passphrase: 'long-enough-1' })), 'PKS_UNLOCK_USER_UNKNOWN');
  const a2 = await svc.admin.call<{ request: UnlockRequest; user?: UnlockUser }>('approve', { id: req.id, as: 'carol' });
  assert.is(a2.request.state, 'APPROVED');
  assert.is(a2.user?.state, 'ACTIVE');
  // a PKCS#12 made for her opens with the passphrase and holds her certificate
  const p = await svc.admin.call<{ pkcs12: string; serial: string }>('certificate', { cn: 'dev-dora', passphrase: 'long-enough-1' });
  const { execFileSync } = await import('node:child_process');
  const pem = execFileSync('openssl', ['pkcs12', '-nokeys', '-passin', 'pass:long-enough-1'], { input: Buffer.from(p.pkcs12, 'base64') }).toString();
  assert.match(pem, /subject=CN = dev-dora, OU = DEVELOPMENT/);
});

test('access ends by itself, and revocation takes effect on the next request, keep-alive or not', async () => {
  const brief = await svc.user('eng-brief', 'TESTING', 2);
  const c = svc.client(brief);
  const me = await unlockCall<{ csrf: string }>(c, 'GET', '/v1/me');
  assert.is(me.status, 200);
  await new Promise((res) => setTimeout(res, 2200));
  const r = await askToken(c, { ecuType: 'bcm', uid: UID, challenge: '11'.repeat(32) }, me.body.csrf);
  assert.is(r.body.code, 'PKS_UNLOCK_EXPIRED');

  const rev = await svc.user('eng-rolf', 'TESTING');
  const rc = svc.client(rev);
  const m2 = await unlockCall<{ csrf: string }>(rc, 'GET', '/v1/me');
  assert.is((await askToken(rc, { ecuType: 'bcm', uid: UID, challenge: '22'.repeat(32) }, m2.body.csrf)).status, 200);
  await svc.admin.call('revoke', { cn: 'eng-rolf', as: 'alice', reason: 'left the project' });
  const after = await askToken(rc, { ecuType: 'bcm', uid: UID, challenge: '22'.repeat(32) }, m2.body.csrf);
  assert.is(after.body.code, 'PKS_UNLOCK_REVOKED');
  const log = (await svc.admin.call<{ items: { ev: string; reason?: string }[] }>('log', { user: 'eng-rolf' })).items.map((e) => `${e.ev}${e.reason ? ':' + e.reason : ''}`);
  assert.ok(log.includes('revoke') && log.includes('grant') && log.includes('deny:PKS_UNLOCK_REVOKED'), log.join(' '));
  // a console login of the revoked user is a logged denial too
  assert.is((await unlockCall<{ code: string }>(rc, 'GET', '/v1/me')).body.code, 'PKS_UNLOCK_REVOKED');
  const last = (await svc.admin.call<{ items: { ev: string; action?: string }[] }>('log', { user: 'eng-rolf', limit: 1 })).items[0]!;
  assert.equal([last.ev, last.action], ['deny', 'login']);
  // and an engineer on an admin route
  const adminTry = await unlockCall<{ code: string }>(engClient, 'GET', '/v1/admin/users');
  assert.is(adminTry.body.code, 'PKS_UNLOCK_FORBIDDEN');
});

test('central ops: signed unlock commands verify, bad ones are refused, and the uplink\'s relay onboards and revokes', async () => {
  const ops = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const cmd = (command: string, args: Record<string, unknown>, seq = 10) =>
    JSON.stringify(signCommand({ v: 1, seq, expiresAt: new Date(Date.now() + 60_000).toISOString(), boxId: box.boxId, command: command as never, args }, ops.privateKey));
  const verify = (raw: string) => verifyCommand(raw, { opsKey: ops.publicKey, boxId: box.boxId, lastSeq: 1 });
  const ok = verify(cmd('unlock-onboard', { cn: 'eng-ops', role: 'TESTING', accessSeconds: 3600 }));
  assert.is(ok.command, 'unlock-onboard');
  for (const bad of [cmd('unlock-onboard', { cn: 'eng ops', role: 'TESTING', accessSeconds: 3600 }), cmd('unlock-revoke', {}), cmd('unlock-approve', { id: 'x' })])
    assert.is(await code(Promise.resolve().then(() => verify(bad))), 'PKS_COMMAND_INVALID');
  const relay = ipcClient(socketPath('unlock', 'uplink', box.runDir));
  try {
    const req = (await runUnlockCommand('unlock-onboard', ok.args, relay)) as unknown as UnlockRequest;
    assert.is(req.requestedBy, 'ops');
    const done = (await runUnlockCommand('unlock-approve', { id: req.id }, relay)) as { user?: UnlockUser };
    assert.is(done.user?.state, 'ACTIVE');
    const gone = (await runUnlockCommand('unlock-revoke', { cn: 'eng-ops', reason: 'ops' }, relay)) as unknown as UnlockUser;
    assert.is(gone.state, 'REVOKED');
    // the uplink's socket allows only these: no certificates, no logs
    assert.is(await code(relay.call('certificate', { cn: 'eng-ops', passphrase: 'long-enough-1' })), 'PKS_IPC_FORBIDDEN');
  } finally {
    await relay.close();
  }
});

test('per-user rate limit: a burst over the limit is refused with PKS_RATE_LIMITED', async () => {
  const u = await svc.user('eng-fast', 'TESTING');
  const c = svc.client(u);
  const m = await unlockCall<{ csrf: string }>(c, 'GET', '/v1/me');
  let limited = 0;
  for (let i = 0; i < 45; i++) {
    const r = await askToken(c, { ecuType: 'gateway', uid: UID, challenge: '33'.repeat(32) }, m.body.csrf);
    if (r.body.code === 'PKS_RATE_LIMITED') limited++;
  }
  assert.ok(limited >= 4, `limited ${limited}`);
});

test('setting a role: a new request for the user, approved like any other; the certificate stays, the permissions follow the role', async () => {
  const u = await svc.user('eng-rita', 'TESTING');
  const c = svc.client(u);
  const m = await unlockCall<{ csrf: string }>(c, 'GET', '/v1/me');
  const before = await askToken(c, { ecuType: 'bcm', uid: UID, challenge: '44'.repeat(32) }, m.body.csrf);
  assert.equal(before.body.permissionNames, ['EXTENDED_LOGGING']);
  const req = await svc.admin.call<UnlockRequest>('onboard', { cn: 'eng-rita', role: 'AFTER_SALES', accessSeconds: 86_400, as: 'alice' });
  // pending: nothing changes yet
  assert.equal((await askToken(c, { ecuType: 'bcm', uid: UID, challenge: '44'.repeat(32) }, m.body.csrf)).body.permissionNames, ['EXTENDED_LOGGING']);
  await svc.admin.call('approve', { id: req.id, as: 'bob' });
  const after = await askToken(c, { ecuType: 'bcm', uid: UID, challenge: '44'.repeat(32) }, m.body.csrf);
  assert.equal(after.body.permissionNames.sort(), ['DEBUG_READ', 'EXTENDED_LOGGING', 'FIELD_RETURN_ANALYSIS']);
});

test('every grant is in the hash-chained audit with its user, role, ECU and permissions, and the chain verifies', async () => {
  await box.keystore.client('pksctl').call('checkpoint', {});
  const spki = Buffer.from((await box.vault.client('pksctl').call<{ spki: string }>('public-key', { name: 'audit' })).spki, 'base64');
  const dbs = openDbs(box.keystore.dataDir, { readOnly: true });
  try {
    const rep = verifyAudit(dbs, createPublicKey({ key: spki, format: 'der', type: 'spki' }));
    assert.ok(rep.ok, rep.problems.join('; '));
    const lines = [...dbs.audit.getRange({})].map((e) => JSON.parse(e.value.line) as Record<string, unknown>);
    const grant = lines.find((l) => l.ev === 'unlock-grant' && l.cn === 'eng-anna')!;
    assert.ok(grant, 'a grant entry');
    for (const k of ['serial', 'role', 'ecuType', 'uid', 'permissions', 'tokenId', 'notAfter', 'at']) assert.ok(grant[k], `grant has ${k}`);
    assert.ok(lines.some((l) => l.ev === 'unlock-deny' && l.reason === 'PKS_UNLOCK_REVOKED'));
    const outbox = [...dbs.outbox.getRange({})].map((e) => e.value).filter((v) => v.kind === 'unlock');
    assert.ok(outbox.length >= lines.filter((l) => String(l.ev).startsWith('unlock-')).length, 'every unlock entry waits in the outbox for the KMS');
  } finally {
    await dbs.root.close();
  }
});

test.run();
