// Issue 12, stock only for attested boxes: the box's AK enrolled against its EK certificate (swtpm's
// local CA, pinned by the KMS), quotes of PCRs 0-15 on KMS nonces with the event log, verified by
// scripts/kms/attest.ts, and the Keylime-advisory negative cases, all on real TPMs (swtpm +
// tpm2-tools).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isPksError } from '../../appliance/errors.js';
import { EV_NO_ACTION, parseEventLog, replayEventLog } from '../../services/attest/eventlog.js';
import { extendPcr } from '../../services/attest/measure.js';
import { sha256 } from '../../services/attest/pcr.js';
import { activateCredential, enrollAk, quote } from '../../services/attest/quote.js';
import { Attestor, referenceText, type Evidence, type ReferenceValues } from '../../scripts/kms/attest.js';
import { startSwtpm, type Swtpm } from '../attest/swtpm.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), '../attest/fixtures/ovmf-uki-eventlog.bin');
const build = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
const BOX = 'box-attest-1';
const WINDOW = 10 * 60_000;

let caDir = '';
let tpm: Swtpm;
let other: Swtpm;
let eventLog: Buffer;
let pcr15 = '';
let clock = Date.now();
const messages: string[] = [];
const secrets: string[] = [];

async function bootFirmware(t: Swtpm): Promise<void> {
  for (const e of parseEventLog(eventLog)) if (e.type !== EV_NO_ACTION) await extendPcr(e.pcr, e.sha256!, t.tcti);
  await extendPcr(15, sha256('pks-app'), t.tcti);
  await extendPcr(15, sha256('pks-config'), t.tcti);
}

function reference(): ReferenceValues {
  const fw = replayEventLog(parseEventLog(eventLog));
  const pcrs = { '4': [fw.get(4)!.toString('hex')], '7': [fw.get(7)!.toString('hex')] };
  return { version: 1, bank: 'sha256', pcrs, sig: sign('sha256', Buffer.from(referenceText(pcrs)), build.privateKey).toString('base64') };
}

const newAttestor = (o: Partial<ConstructorParameters<typeof Attestor>[0]> = {}) =>
  new Attestor({ ekCaPems: tpm.ekCaPems, reference: reference(), buildKeyPem: build.publicKey, windowMs: WINDOW, now: () => clock, ...o });

async function enroll(a: Attestor, t: Swtpm, boxId = BOX): Promise<void> {
  const e = await enrollAk(t.tcti);
  const cred = await a.beginEnroll(boxId, e.ekCert, e.akPublic, pcr15);
  const secret = await activateCredential(t.tcti, cred);
  secrets.push(secret.toString('hex'), secret.toString('base64'));
  await a.finishEnroll(boxId, secret);
}

async function evidence(a: Attestor, t: Swtpm, boxId = BOX): Promise<Evidence> {
  const nonce = a.challenge(boxId);
  const q = await quote(t.tcti, nonce);
  return { nonce, message: q.message, signature: q.signature, pcrs: q.pcrs, eventLog };
}

async function refused(p: Promise<unknown> | (() => unknown), code: string, why: string): Promise<void> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    assert.ok(isPksError(e), `${why}: ${String(e)}`);
    assert.is((e as { code: string }).code, code, `${why}: ${(e as Error).message}`);
    messages.push((e as Error).message);
    return;
  }
  assert.unreachable(`${why}: accepted`);
}

test.before(async () => {
  eventLog = await readFile(fixture);
  caDir = await mkdtemp(path.join(os.tmpdir(), 'pks-tpm-vendor-'));
  // two TPMs of the same vendor (same local CA): the second plays the attacker's
  tpm = await startSwtpm({ ekCert: true, caDir });
  other = await startSwtpm({ ekCert: true, caDir });
  await bootFirmware(tpm);
  await bootFirmware(other);
  pcr15 = sha256(sha256(Buffer.alloc(32), sha256('pks-app')), sha256('pks-config')).toString('hex');
  // the EK certificates were issued just now: the KMS's clock starts after them
  clock = Date.now() + 1000;
});
test.after(async () => {
  await tpm?.stop();
  await other?.stop();
  await rm(caDir, { recursive: true, force: true });
});

test('a genuine box enrolls, attests, and gets stock within the window only', async () => {
  const a = newAttestor();
  await refused(() => a.mayRelease(BOX), 'PKS_ATTEST_REQUIRED', 'not enrolled');
  await enroll(a, tpm);
  await refused(() => a.mayRelease(BOX), 'PKS_ATTEST_REQUIRED', 'enrolled, never attested');
  await a.verify(BOX, await evidence(a, tpm));
  a.mayRelease(BOX);
  assert.is(a.status()[0]!.state, 'attested');
  // a verifier loop that died (CVE-2022-3500) renews nothing: the window runs out, no release
  clock += WINDOW + 1;
  await refused(() => a.mayRelease(BOX), 'PKS_ATTEST_REQUIRED', 'window expired');
  assert.is(a.status()[0]!.state, 'expired');
  await a.verify(BOX, await evidence(a, tpm));
  a.mayRelease(BOX);
});

test('replayed quote, reused nonce, nonce of another box or expired: refused', async () => {
  const a = newAttestor();
  await enroll(a, tpm);
  const ev = await evidence(a, tpm);
  await a.verify(BOX, ev);
  await refused(a.verify(BOX, ev), 'PKS_ATTEST_STALE', 'replayed quote');
  await refused(() => a.mayRelease(BOX), 'PKS_ATTEST_REQUIRED', 'a replay makes the box untrusted');
  // a quote over an old nonce, offered with a fresh one
  const fresh = a.challenge(BOX);
  await refused(a.verify(BOX, { ...ev, nonce: fresh }), 'PKS_ATTEST_STALE', 'quote over another nonce');
  const late = await evidence(a, tpm);
  clock += 61_000;
  await refused(a.verify(BOX, late), 'PKS_ATTEST_STALE', 'expired nonce');
});

test('bad quote signature, tampered PCRs, event log or PCR 15: the box becomes untrusted', async () => {
  const a = newAttestor();
  await enroll(a, tpm);
  await a.verify(BOX, await evidence(a, tpm));
  a.mayRelease(BOX);
  const ev = await evidence(a, tpm);
  const sig = Buffer.from(ev.signature);
  sig[10]! ^= 1;
  // CVE-2023-3674: not just a log line
  await refused(a.verify(BOX, { ...ev, signature: sig }), 'PKS_ATTEST_UNTRUSTED', 'bad signature');
  await refused(() => a.mayRelease(BOX), 'PKS_ATTEST_REQUIRED', 'untrusted after a bad signature');
  const st = a.status()[0]!;
  assert.is(st.state, 'untrusted');
  assert.match(st.lastFailure!.reason, /signature/);

  const ev2 = await evidence(a, tpm);
  const pcrs = Buffer.from(ev2.pcrs);
  pcrs[32 * 4]! ^= 1;
  await refused(a.verify(BOX, { ...ev2, pcrs }), 'PKS_ATTEST_UNTRUSTED', 'PCR values not the quoted ones');
  const ev3 = await evidence(a, tpm);
  // the event log of another boot chain: one PCR 4 event's digest changed
  const log = Buffer.from(ev3.eventLog);
  const e4 = parseEventLog(log).find((e) => e.pcr === 4 && e.sha256)!;
  log[log.indexOf(e4.sha256!) + 3]! ^= 1;
  await refused(a.verify(BOX, { ...ev3, eventLog: log }), 'PKS_ATTEST_UNTRUSTED', 'event log does not replay');
  await refused(a.verify(BOX, { ...(await evidence(a, tpm)), message: Buffer.from('garbage') }), 'PKS_ATTEST_UNTRUSTED', 'malformed quote');

  // a changed application: PCR 15 differs from the provisioned value
  await extendPcr(15, sha256('a changed service file'), tpm.tcti);
  await refused(a.verify(BOX, await evidence(a, tpm)), 'PKS_ATTEST_UNTRUSTED', 'PCR 15 changed');
  assert.match(a.status()[0]!.lastFailure!.reason, /PCR 15/);
  await refused(() => a.mayRelease(BOX), 'PKS_ATTEST_REQUIRED', 'no stock for a tampered box');
  await tpm.restart();
  await bootFirmware(tpm);
  await a.verify(BOX, await evidence(a, tpm));
  a.mayRelease(BOX);
});

test('an AK from another TPM for the same box id, and an EK not from the pinned CA, are refused', async () => {
  const a = newAttestor();
  await enroll(a, tpm);
  const theirs = await enrollAk(other.tcti);
  await refused(a.beginEnroll(BOX, theirs.ekCert, theirs.akPublic, pcr15), 'PKS_ATTEST_UNTRUSTED', 'other TPM, same box id');
  // our EK certificate with the other TPM's AK: that TPM cannot open the credential
  const ours = await enrollAk(tpm.tcti);
  const b = newAttestor();
  const cred = await b.beginEnroll('box-2', ours.ekCert, theirs.akPublic, pcr15);
  const wrong = await activateCredential(other.tcti, cred).catch(() => Buffer.alloc(32));
  await refused(b.finishEnroll('box-2', wrong), 'PKS_ATTEST_UNTRUSTED', 'AK not in the EK certificate\'s TPM');
  // quotes signed by another TPM's AK for an enrolled box
  await a.verify(BOX, await evidence(a, tpm));
  const nonce = a.challenge(BOX);
  const q = await quote(other.tcti, nonce);
  await refused(a.verify(BOX, { nonce, message: q.message, signature: q.signature, pcrs: q.pcrs, eventLog }), 'PKS_ATTEST_UNTRUSTED', 'quote by another TPM');
  // a KMS that pins another vendor CA refuses the EK certificate outright
  const stranger = await mkdtemp(path.join(os.tmpdir(), 'pks-tpm-vendor2-'));
  const t3 = await startSwtpm({ ekCert: true, caDir: stranger });
  try {
    const e3 = await enrollAk(t3.tcti);
    await refused(newAttestor().beginEnroll('box-3', e3.ekCert, e3.akPublic, pcr15), 'PKS_ATTEST_UNTRUSTED', 'EK from an unpinned CA');
  } finally {
    await t3.stop();
    await rm(stranger, { recursive: true, force: true });
  }
});

test('reference values not signed by the build are refused at start', () => {
  const ref = reference();
  const forged = { ...ref, pcrs: { ...ref.pcrs, '4': ['00'.repeat(32)] } };
  assert.throws(() => newAttestor({ reference: forged }), /not signed by the build key/);
});

test('no refusal carries a secret (CVE-2023-38201)', () => {
  assert.ok(messages.length > 10 && secrets.length > 0);
  const ref = reference();
  const forbidden = [...secrets, ...Object.values(ref.pcrs).flat(), pcr15];
  for (const m of messages) for (const s of forbidden) assert.not.ok(m.includes(s), `"${m}" leaks a secret or reference value`);
});


// The AK is used in every boot (quote, credential activation); without noda each boot that then
// loses power counts as a failed authorisation, and the third power cut locks the TPM.
test('quotes across power cuts do not walk the TPM into dictionary-attack lockout (AK is noda)', async () => {
  const t = await startSwtpm({ ekCert: true, caDir });
  try {
    await enrollAk(t.tcti);
    for (let cut = 1; cut <= 4; cut++) {
      await quote(t.tcti, Buffer.alloc(32, cut));
      await t.powerCut();
    }
    await quote(t.tcti, Buffer.alloc(32, 9));
    const props = await new Promise<string>((res, rej) => execFile('tpm2_getcap', ['-T', t.tcti, 'properties-variable'], (e, out) => (e ? rej(e) : res(out))));
    assert.match(props, /TPM2_PT_LOCKOUT_COUNTER: 0x0\b/, 'no failed authorisation counted');
  } finally {
    await t.stop();
  }
});
test.run();
