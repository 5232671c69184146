// Issue 12, stock only for attested boxes: the box's AK enrolled against its EK certificate (swtpm's
// local CA, pinned by the KMS), quotes of PCRs 0-15 on KMS nonces with the event log, verified by
// scripts/kms/attest.ts, and the Keylime-advisory negative cases, all on real TPMs (swtpm +
// tpm2-tools).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isPksError } from '../../appliance/errors.js';
import { EV_NO_ACTION, parseEventLog, replayEventLog } from '../../services/attest/eventlog.js';
import { extendPcr } from '../../services/attest/measure.js';
import { sha256 } from '../../services/attest/pcr.js';
import { activateCredential, enrollAk, quote } from '../../services/attest/quote.js';
import { signMeasurementManifest } from '../../services/attest/measurement-manifest.js';
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

/** The firmware's events, then pks-measure's two into PCR 15 (by default the enrolled application and configuration). */
async function bootFirmware(t: Swtpm, app = APP_V1, config = CONFIG): Promise<void> {
  for (const e of parseEventLog(eventLog)) if (e.type !== EV_NO_ACTION) await extendPcr(e.pcr, e.sha256!, t.tcti);
  await extendPcr(15, Buffer.from(app, 'hex'), t.tcti);
  await extendPcr(15, Buffer.from(config, 'hex'), t.tcti);
}

// the PCR 15 trees: the application of three releases, the site's configuration, and the build's default one
const APP_V1 = sha256('pks-app').toString('hex');
const APP_V2 = sha256('pks-app 2.0.0').toString('hex');
const APP_V3 = sha256('pks-app 3.0.0').toString('hex');
const CONFIG = sha256('pks-config').toString('hex');
const BUILD_CONFIG = sha256('pks-config as the build ships it').toString('hex');

/** pks-measure's /run/pks/measurements.json for these digests (what the box sends). */
const measurementLog = (app: string, config = CONFIG): Buffer =>
  Buffer.from(
    JSON.stringify({
      version: 1,
      pcr: 15,
      bank: 'sha256',
      measuredAt: new Date().toISOString(),
      events: [
        { name: 'pks-app', path: '/usr/lib/pks', digest: app, files: 3, bytes: 100 },
        { name: 'pks-config', path: '/etc/pks', digest: config, files: 1, bytes: 10 },
      ],
      pcrValue: sha256(sha256(Buffer.alloc(32), Buffer.from(app, 'hex')), Buffer.from(config, 'hex')).toString('hex'),
    }),
  );

/** A measurement manifest of a release, signed by `key` (the build's by default), in the KMS's directory. */
async function publish(dir: string, release: string, app: string, key = build.privateKey, config = BUILD_CONFIG): Promise<void> {
  const m = signMeasurementManifest({ release, compatible: 'pks-appliance', trees: [{ name: 'pks-app', digest: app }, { name: 'pks-config', digest: config }] }, key);
  await writeFile(path.join(dir, `${release}.json`), JSON.stringify(m));
}

function reference(): ReferenceValues {
  const fw = replayEventLog(parseEventLog(eventLog));
  const pcrs = { '4': [fw.get(4)!.toString('hex')], '7': [fw.get(7)!.toString('hex')] };
  return { version: 1, bank: 'sha256', pcrs, sig: sign('sha256', Buffer.from(referenceText(pcrs)), build.privateKey).toString('base64') };
}

const newAttestor = (o: Partial<ConstructorParameters<typeof Attestor>[0]> = {}) =>
  new Attestor({ ekCaPems: tpm.ekCaPems, reference: reference(), buildKeyPem: build.publicKey, windowMs: WINDOW, now: () => clock, ...o });

async function enroll(a: Attestor, t: Swtpm, boxId = BOX, log?: Buffer, pcr = pcr15): Promise<void> {
  const e = await enrollAk(t.tcti);
  const cred = await a.beginEnroll(boxId, e.ekCert, e.akPublic, pcr, log);
  const secret = await activateCredential(t.tcti, cred);
  secrets.push(secret.toString('hex'), secret.toString('base64'));
  await a.finishEnroll(boxId, secret);
}

async function evidence(a: Attestor, t: Swtpm, boxId = BOX, log?: Buffer): Promise<Evidence> {
  const nonce = a.challenge(boxId);
  const q = await quote(t.tcti, nonce);
  return { nonce, message: q.message, signature: q.signature, pcrs: q.pcrs, eventLog, ...(log ? { measurementLog: log } : {}) };
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
  pcr15 = sha256(sha256(Buffer.alloc(32), Buffer.from(APP_V1, 'hex')), Buffer.from(CONFIG, 'hex')).toString('hex');
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

// ---- PCR 15 after a signed update (issue 12 §3 with 13): the log, the manifests, the floor ----
// The first test is the capability: on the code before the measurement log it fails (PCR 15 is
// compared as a whole with the enrolled value, so every update stops the line). The refusals
// after it guard that capability: each names what an implementation that believed the log, took
// any manifest, or let a manifest speak for the configuration or an older release would accept.

const APP_EVIL = sha256('pks-app with a changed service file').toString('hex');
const pcr15For = (app: string, config = CONFIG) => sha256(sha256(Buffer.alloc(32), Buffer.from(app, 'hex')), Buffer.from(config, 'hex')).toString('hex');
const reboot = async (app: string, config = CONFIG) => {
  await tpm.restart();
  await bootFirmware(tpm, app, config);
};

async function withManifests(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-manifests-'));
  try {
    await fn(dir);
  } finally {
    await reboot(APP_V1);
    await rm(dir, { recursive: true, force: true });
  }
}

test('a signed update: pks-app of a build-signed manifest keeps the box attested and getting stock', () =>
  withManifests(async (dir) => {
    const a = newAttestor({ manifestsDir: dir });
    await enroll(a, tpm, BOX, measurementLog(APP_V1));
    await a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(APP_V1)));
    a.mayRelease(BOX);
    // the release's manifest reaches the KMS's directory; the box boots the new slot
    await publish(dir, '2.0.0', APP_V2);
    await reboot(APP_V2);
    await a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(APP_V2)));
    a.mayRelease(BOX);
    assert.is(a.stateOf(BOX), 'attested');
    // a box that moved to a signed release must send its log: without it PCR 15 alone cannot tell
    await refused(a.verify(BOX, await evidence(a, tpm)), 'PKS_ATTEST_UNTRUSTED', 'no log after an update');
    assert.match(a.status()[0]!.lastFailure!.reason, /no PCR 15 measurement log/);
  }),
);

test('pks-app named by no manifest, or by one not signed by the build key: refused', () =>
  withManifests(async (dir) => {
    const attacker = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
    await publish(dir, '9.0.0', APP_EVIL, attacker.privateKey);
    // a genuine manifest whose application digest was changed afterwards (PCR 15 recomputed, same signature)
    await publish(dir, '2.0.0', APP_V2);
    const good = JSON.parse(await readFile(path.join(dir, '2.0.0.json'), 'utf8')) as { trees: { name: string; digest: string }[]; pcr15: string; release: string };
    good.trees[0]!.digest = APP_V3;
    good.pcr15 = pcr15For(APP_V3, BUILD_CONFIG);
    good.release = '3.0.0';
    await writeFile(path.join(dir, '3.0.0.json'), JSON.stringify(good));
    await writeFile(path.join(dir, 'junk.json'), '{');
    const a = newAttestor({ manifestsDir: dir });
    const loaded = await a.load();
    assert.equal({ n: loaded.manifests, refused: loaded.refused }, { n: 1, refused: ['3.0.0.json', '9.0.0.json', 'junk.json'] });
    await enroll(a, tpm, BOX, measurementLog(APP_V1));
    for (const app of [APP_EVIL, APP_V3, sha256('an application nobody signed').toString('hex')]) {
      await reboot(app);
      await refused(a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(app))), 'PKS_ATTEST_UNTRUSTED', 'pks-app of no build-signed manifest');
      assert.match(a.status()[0]!.lastFailure!.reason, /neither the enrolled application nor named by a build-signed measurement manifest/);
      await refused(() => a.mayRelease(BOX), 'PKS_ATTEST_REQUIRED', 'no stock');
    }
    // the genuine release still passes beside them
    await reboot(APP_V2);
    await a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(APP_V2)));
    a.mayRelease(BOX);
  }),
);

test('a changed pks-config is refused, even the configuration a build-signed manifest names', () =>
  withManifests(async (dir) => {
    await publish(dir, '2.0.0', APP_V2);
    const a = newAttestor({ manifestsDir: dir });
    await enroll(a, tpm, BOX, measurementLog(APP_V1));
    for (const config of [sha256('pks-config, one line changed').toString('hex'), BUILD_CONFIG]) {
      for (const app of [APP_V1, APP_V2]) {
        await reboot(app, config);
        await refused(a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(app, config))), 'PKS_ATTEST_UNTRUSTED', 'pks-config changed');
        assert.match(a.status()[0]!.lastFailure!.reason, /pks-config \(the configuration\) differs/);
      }
    }
    await refused(() => a.mayRelease(BOX), 'PKS_ATTEST_REQUIRED', 'no stock');
  }),
);

test('a measurement log that does not replay to the quoted PCR 15 is refused', () =>
  withManifests(async (dir) => {
    await publish(dir, '2.0.0', APP_V2);
    const a = newAttestor({ manifestsDir: dir });
    await enroll(a, tpm, BOX, measurementLog(APP_V1));
    // the box runs a changed application and sends the log of the enrolled one, or of the signed release
    await reboot(APP_EVIL);
    for (const log of [measurementLog(APP_V1), measurementLog(APP_V2), measurementLog(APP_EVIL, sha256('x').toString('hex'))]) {
      await refused(a.verify(BOX, await evidence(a, tpm, BOX, log)), 'PKS_ATTEST_UNTRUSTED', 'log does not replay');
      assert.match(a.status()[0]!.lastFailure!.reason, /measurement log does not replay to PCR 15/);
    }
    for (const log of [Buffer.from('{'), Buffer.from(JSON.stringify({ version: 1, pcr: 15, events: [{ name: 'pks-app', digest: APP_V1 }, { name: 'pks-app', digest: APP_V1 }] }))])
      await refused(a.verify(BOX, await evidence(a, tpm, BOX, log)), 'PKS_ATTEST_UNTRUSTED', 'malformed log');
    // at enrollment too: the log must replay to the PCR 15 the box claims
    const e = await enrollAk(tpm.tcti);
    await refused(newAttestor().beginEnroll('box-log', e.ekCert, e.akPublic, pcr15, measurementLog(APP_EVIL)), 'PKS_ATTEST_UNTRUSTED', 'enrollment log does not replay');
    await refused(() => a.mayRelease(BOX), 'PKS_ATTEST_REQUIRED', 'no stock');
  }),
);

test('a release older than the last accepted for this box is refused, across a KMS restart', () =>
  withManifests(async (dir) => {
    const stateFile = path.join(dir, '..', `${path.basename(dir)}.state.json`);
    const manifests = path.join(dir, 'm');
    await mkdir(manifests);
    try {
      await publish(manifests, '1.0.0', APP_V1);
      await publish(manifests, '2.0.0', APP_V2);
      await publish(manifests, '3.0.0', APP_V3);
      const a = newAttestor({ manifestsDir: manifests, stateFile });
      await enroll(a, tpm, BOX, measurementLog(APP_V1));
      await a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(APP_V1)));
      await reboot(APP_V3);
      await a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(APP_V3)));
      a.mayRelease(BOX);
      // the KMS restarts: the floor is in its state
      const b = newAttestor({ manifestsDir: manifests, stateFile });
      await b.load();
      for (const app of [APP_V2, APP_V1]) {
        await reboot(app);
        await refused(b.verify(BOX, await evidence(b, tpm, BOX, measurementLog(app))), 'PKS_ATTEST_UNTRUSTED', `rollback to ${app === APP_V1 ? '1.0.0' : '2.0.0'}`);
        assert.match(b.status()[0]!.lastFailure!.reason, /older than the one last accepted/);
      }
      // the enrolled application once its manifest is gone, or with the log left out: still a rollback
      await rm(path.join(manifests, '1.0.0.json'));
      await refused(b.verify(BOX, await evidence(b, tpm, BOX, measurementLog(APP_V1))), 'PKS_ATTEST_UNTRUSTED', 'enrolled application after an update');
      assert.match(b.status()[0]!.lastFailure!.reason, /older than the one last accepted/);
      await refused(b.verify(BOX, await evidence(b, tpm)), 'PKS_ATTEST_UNTRUSTED', 'log left out to dodge the floor');
      await refused(() => b.mayRelease(BOX), 'PKS_ATTEST_REQUIRED', 'no stock after a rollback');
      await reboot(APP_V3);
      await b.verify(BOX, await evidence(b, tpm, BOX, measurementLog(APP_V3)));
      b.mayRelease(BOX);
    } finally {
      await rm(stateFile, { force: true });
    }
  }),
);

test('the enrolled trees: learned from the first log that replays to the enrolled PCR 15, never moved by re-enrollment', () =>
  withManifests(async (dir) => {
    await publish(dir, '2.0.0', APP_V2);
    const a = newAttestor({ manifestsDir: dir });
    // enrolled without a log (a box from before it), then booted changed and re-enrolled with the changed log
    await enroll(a, tpm, BOX);
    await reboot(APP_EVIL);
    await enroll(a, tpm, BOX, measurementLog(APP_EVIL), pcr15For(APP_EVIL));
    await refused(a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(APP_EVIL))), 'PKS_ATTEST_UNTRUSTED', 'changed box re-enrolled');
    assert.match(a.status()[0]!.lastFailure!.reason, /PCR 15 \(application and configuration\) differs from the provisioned value/);
    await reboot(APP_V1);
    await a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(APP_V1)));
    await reboot(APP_V2);
    await a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(APP_V2)));
    // re-enrolling with another configuration in the log moves nothing
    const other = sha256('pks-config of another site').toString('hex');
    await reboot(APP_V2, other);
    await enroll(a, tpm, BOX, measurementLog(APP_V2, other), pcr15For(APP_V2, other));
    await refused(a.verify(BOX, await evidence(a, tpm, BOX, measurementLog(APP_V2, other))), 'PKS_ATTEST_UNTRUSTED', 'configuration moved by re-enrollment');
    assert.match(a.status()[0]!.lastFailure!.reason, /pks-config/);
  }),
);

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
