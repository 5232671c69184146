// The KMS's attestation verifier (issue 12): a box gets stock only if it proved its boot state
// within the window. Enrollment: the box's EK certificate must chain to a pinned TPM vendor CA
// (swtpm_setup's local CA for the dev fleet), and its AK must be shown to live in that TPM by
// credential activation. Attestation: a quote of PCRs 0..15 on a single-use nonce from us,
// signed by the enrolled AK, whose PCRs match the reference values the build signed, whose
// firmware PCRs replay from the event log sent with it, and whose PCR 15 (application and
// configuration) replays from pks-measure's log sent with it, with the configuration event the
// one recorded at enrollment and the application event the enrolled one or one a build-signed
// measurement manifest names (a signed update), never of a release older than the last accepted.
//
// Fail closed, with Keylime's advisories as the cases to refuse:
// - CVE-2022-3500: a verifier that dies leaves no "attested" behind: trust is a timestamp of the
//   last good quote, release checks its age, and an exception in verification records a failure;
// - CVE-2023-3674: a bad signature makes the box untrusted at once, it is not a log line;
// - CVE-2023-38201: refusals carry a code and a fixed reason, never the activation secret, the
//   expected values or our internals;
// - an AK from another TPM for the same box id, a replayed quote or nonce: refused.
import { execFile } from 'node:child_process';
import { X509Certificate, createHash, createPublicKey, randomBytes, timingSafeEqual, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PksError, pksError, type ErrorCode } from '../../appliance/errors.js';
import { parseEventLog, replayEventLog } from '../../services/attest/eventlog.js';
import { compareVersions } from '../../appliance/contracts/update.js';
import { SITE_TREE_NAMES, measurementManifestText, parseMeasurementManifest, pcr15Replay, type LiveTree, type MeasurementManifest } from '../../appliance/contracts/measurement.js';

const TPM_ALG_RSA = 0x0001;
const TPM_ALG_SHA256 = 0x000b;
const TPM_ALG_NULL = 0x0010;
const TPM_GENERATED = 0xff544347;
const TPM_ST_ATTEST_QUOTE = 0x8018;
const ATTR = { fixedTPM: 1 << 1, fixedParent: 1 << 4, sensitiveDataOrigin: 1 << 5, restricted: 1 << 16, decrypt: 1 << 17, sign: 1 << 18 };
export const QUOTED_PCRS = Array.from({ length: 16 }, (_, i) => i);
const FIRMWARE_PCRS = [0, 1, 2, 3, 4, 5, 6, 7];

class Reader {
  off = 0;
  constructor(private readonly b: Buffer) {}
  private need(n: number): void {
    if (this.off + n > this.b.length) throw pksError('PKS_BAD_REQUEST', 'TPM structure truncated');
  }
  u8(): number {
    this.need(1);
    return this.b.readUInt8(this.off++);
  }
  u16(): number {
    this.need(2);
    const v = this.b.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.b.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  tpm2b(): Buffer {
    return this.bytes(this.u16());
  }
  get rest(): number {
    return this.b.length - this.off;
  }
}

export interface TpmPublicKey {
  readonly key: KeyObject;
  /** TPM name: nameAlg || SHA-256(TPMT_PUBLIC) */
  readonly name: Buffer;
  readonly attributes: number;
}

/** TPM2B_PUBLIC of an RSA key: its name and its public key, as the TPM defines them. */
export function parseTpmPublic(tpm2bPublic: Buffer): TpmPublicKey {
  const outer = new Reader(tpm2bPublic);
  const body = outer.tpm2b();
  if (outer.rest !== 0) throw pksError('PKS_BAD_REQUEST', 'TPM2B_PUBLIC has trailing bytes');
  const r = new Reader(body);
  const type = r.u16();
  const nameAlg = r.u16();
  const attributes = r.u32();
  r.tpm2b(); // authPolicy
  if (type !== TPM_ALG_RSA || nameAlg !== TPM_ALG_SHA256) throw pksError('PKS_BAD_REQUEST', 'AK is not an RSA key with a SHA-256 name');
  const sym = r.u16();
  if (sym !== TPM_ALG_NULL) r.bytes(4);
  const scheme = r.u16();
  if (scheme !== TPM_ALG_NULL) r.u16();
  const bits = r.u16();
  const exp = r.u32() || 65537;
  const n = r.tpm2b();
  if (bits < 2048 || n.length * 8 !== bits || r.rest !== 0) throw pksError('PKS_BAD_REQUEST', 'AK modulus is malformed');
  const e = Buffer.alloc(4);
  e.writeUInt32BE(exp);
  const key = createPublicKey({ key: { kty: 'RSA', n: n.toString('base64url'), e: e.subarray(e.findIndex((x) => x !== 0)).toString('base64url') }, format: 'jwk' });
  const name = Buffer.concat([Buffer.from([0x00, 0x0b]), createHash('sha256').update(body).digest()]);
  return { key, name, attributes };
}

export interface QuoteInfo {
  readonly extraData: Buffer;
  readonly pcrs: number[];
  readonly pcrDigest: Buffer;
  readonly resetCount: number;
  readonly restartCount: number;
}

/** TPMS_ATTEST of a quote (TPM 2.0 Part 2, 10.12). */
export function parseQuote(msg: Buffer): QuoteInfo {
  const r = new Reader(msg);
  if (r.u32() !== TPM_GENERATED || r.u16() !== TPM_ST_ATTEST_QUOTE) throw pksError('PKS_BAD_REQUEST', 'not a TPM-generated quote');
  r.tpm2b(); // qualifiedSigner
  const extraData = r.tpm2b();
  r.bytes(8); // clock
  const resetCount = r.u32();
  const restartCount = r.u32();
  r.u8(); // safe
  r.bytes(8); // firmwareVersion
  const count = r.u32();
  if (count !== 1) throw pksError('PKS_BAD_REQUEST', 'quote selects more than one bank');
  if (r.u16() !== TPM_ALG_SHA256) throw pksError('PKS_BAD_REQUEST', 'quote is not over the SHA-256 bank');
  const sel = r.bytes(r.u8());
  const pcrs: number[] = [];
  sel.forEach((byte, i) => {
    for (let bit = 0; bit < 8; bit++) if (byte & (1 << bit)) pcrs.push(i * 8 + bit);
  });
  const pcrDigest = r.tpm2b();
  if (r.rest !== 0) throw pksError('PKS_BAD_REQUEST', 'quote has trailing bytes');
  return { extraData, pcrs, pcrDigest, resetCount, restartCount };
}

// ---- reference values the build signs ----------------------------------------------------------

export interface ReferenceValues {
  readonly version: 1;
  readonly bank: 'sha256';
  /** PCR index -> acceptable values (hex) */
  readonly pcrs: Record<string, string[]>;
  /** base64 RSASSA/ECDSA SHA-256 signature by the image signing key over referenceText() */
  readonly sig: string;
}

export const referenceText = (pcrs: Record<string, string[]>): string =>
  `pks-reference-v1|${JSON.stringify(Object.keys(pcrs).sort((a, b) => Number(a) - Number(b)).map((k) => [Number(k), [...pcrs[k]!].map((v) => v.toLowerCase()).sort()]))}`;

export function checkReference(ref: ReferenceValues, buildKeyPem: string): Map<number, Set<string>> {
  if (ref?.version !== 1 || ref.bank !== 'sha256' || typeof ref.pcrs !== 'object' || typeof ref.sig !== 'string') throw pksError('PKS_CONFIG_INVALID', 'reference values malformed');
  if (!cryptoVerify('sha256', Buffer.from(referenceText(ref.pcrs)), createPublicKey(buildKeyPem), Buffer.from(ref.sig, 'base64')))
    throw pksError('PKS_CONFIG_INVALID', 'reference values are not signed by the build key');
  const out = new Map<number, Set<string>>();
  for (const [k, vs] of Object.entries(ref.pcrs)) {
    const i = Number(k);
    if (!QUOTED_PCRS.includes(i) || !Array.isArray(vs) || vs.some((v) => !/^[0-9a-fA-F]{64}$/.test(v))) throw pksError('PKS_CONFIG_INVALID', 'reference values malformed');
    out.set(i, new Set(vs.map((v) => v.toLowerCase())));
  }
  return out;
}

// ---- PCR 15: pks-measure's log and the build-signed measurement manifests --------------------

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * The events of pks-measure's log (/run/pks/measurements.json: {version, pcr, events[{name,
 * digest, ...}]}) as PCR 15 was extended with them. Only name and digest count; the KMS replays
 * them itself, so nothing else in the file is believed.
 */
export function parseMeasurementLog(raw: Buffer): LiveTree[] {
  const bad = (): never => {
    throw untrusted('PKS_ATTEST_UNTRUSTED', 'the measurement log is malformed');
  };
  let o: { version?: unknown; pcr?: unknown; events?: unknown };
  try {
    o = JSON.parse(raw.toString('utf8')) as typeof o;
  } catch {
    return bad();
  }
  if (typeof o !== 'object' || o === null || o.version !== 1 || o.pcr !== 15 || !Array.isArray(o.events) || o.events.length < 1 || o.events.length > 8) return bad();
  const events = (o.events as { name?: unknown; digest?: unknown }[]).map((e) => {
    if (typeof e?.name !== 'string' || !/^[a-z0-9-]{1,32}$/.test(e.name) || typeof e.digest !== 'string' || !HEX64.test(e.digest)) bad();
    return { name: e.name as string, digest: e.digest as string };
  });
  if (new Set(events.map((e) => e.name)).size !== events.length) bad();
  return events;
}

/**
 * The manifests of a directory that verify with the build key (and are of `compatible`, when
 * given); `refused` names the files that do not, for the log: such a file names nothing.
 */
export async function loadManifests(dir: string, buildKeyPem: string, compatible?: string): Promise<{ manifests: MeasurementManifest[]; refused: string[] }> {
  const key = createPublicKey(buildKeyPem);
  const manifests: MeasurementManifest[] = [];
  const refused: string[] = [];
  for (const f of (await readdir(dir)).filter((n) => n.endsWith('.json')).sort()) {
    try {
      const m = parseMeasurementManifest(JSON.parse(await readFile(path.join(dir, f), 'utf8')));
      const { sig, ...body } = m;
      if (!cryptoVerify('sha256', measurementManifestText(body), key, Buffer.from(sig, 'base64'))) throw new Error('signature');
      if (compatible !== undefined && m.compatible !== compatible) throw new Error('compatible');
      manifests.push(m);
    } catch {
      refused.push(f);
    }
  }
  return { manifests, refused };
}

const isSite = (t: LiveTree) => SITE_TREE_NAMES.includes(t.name);
const treesKey = (ts: readonly LiveTree[]) => ts.map((t) => `${t.name}=${t.digest}`).join(',');
const namesKey = (ts: readonly LiveTree[]) => ts.map((t) => t.name).join(',');

/** What a good quote moves on the box's record (the release floor; the enrolled trees, once learned). */
interface Pcr15Outcome {
  readonly trees?: LiveTree[];
  readonly release?: string;
}

/**
 * PCR 15 of a quote against the box's record. Without a log, PCR 15 must be the enrolled value
 * (a box that never sent one; refused once a release floor exists, else omitting the log would
 * roll back past it). With one: the log replays to the quoted PCR 15, measures the enrolled
 * trees, the site trees (pks-config) are the enrolled ones, and the application trees (pks-app)
 * are the enrolled ones or those of a build-signed manifest, whose release is never older than
 * the last accepted for this box.
 */
export function checkPcr15(box: Pick<BoxAttestation, 'pcr15' | 'trees' | 'release'>, pcr15: string, log: Buffer | undefined, manifests: readonly MeasurementManifest[]): Pcr15Outcome {
  if (!log) {
    if (box.release !== undefined) throw untrusted('PKS_ATTEST_UNTRUSTED', 'the quote carries no PCR 15 measurement log');
    if (pcr15 !== box.pcr15) throw untrusted('PKS_ATTEST_UNTRUSTED', 'PCR 15 (application and configuration) differs from the provisioned value');
    return {};
  }
  const events = parseMeasurementLog(log);
  if (pcr15Replay(events) !== pcr15) throw untrusted('PKS_ATTEST_UNTRUSTED', 'the measurement log does not replay to PCR 15');
  // a box enrolled without a log: the first log that replays to the enrolled PCR 15 is its events
  const learned = !box.trees && pcr15 === box.pcr15 ? events : undefined;
  const enrolled = box.trees ?? learned;
  if (!enrolled) throw untrusted('PKS_ATTEST_UNTRUSTED', 'PCR 15 (application and configuration) differs from the provisioned value');
  if (namesKey(events) !== namesKey(enrolled)) throw untrusted('PKS_ATTEST_UNTRUSTED', 'the measurement log measures other trees than at enrollment');
  if (treesKey(events.filter(isSite)) !== treesKey(enrolled.filter(isSite))) throw untrusted('PKS_ATTEST_UNTRUSTED', 'pks-config (the configuration) differs from the provisioned value');
  const app = treesKey(events.filter((t) => !isSite(t)));
  const named = manifests
    .filter((m) => namesKey(m.trees) === namesKey(events) && treesKey(m.trees.filter((t) => !isSite(t))) === app)
    .sort((a, b) => compareVersions(b.release, a.release))[0];
  const more = learned ? { trees: learned } : {};
  if (named) {
    if (box.release !== undefined && compareVersions(named.release, box.release) < 0) throw untrusted('PKS_ATTEST_UNTRUSTED', 'pks-app is of a release older than the one last accepted for this box');
    return { ...more, release: named.release };
  }
  if (app === treesKey(enrolled.filter((t) => !isSite(t)))) {
    // the enrolled application, of no manifest we hold: fine until the box moved to a signed release
    if (box.release !== undefined) throw untrusted('PKS_ATTEST_UNTRUSTED', 'pks-app is of a release older than the one last accepted for this box');
    return more;
  }
  throw untrusted('PKS_ATTEST_UNTRUSTED', 'pks-app is neither the enrolled application nor named by a build-signed measurement manifest');
}

// ---- the verifier ------------------------------------------------------------------------------

export interface BoxAttestation {
  readonly boxId: string;
  readonly ekFingerprint: string;
  readonly akName: string;
  readonly akPublic: string;
  /** PCR 15 (application + configuration) as provisioned */
  readonly pcr15: string;
  /**
   * The events of that PCR 15 (pks-app, pks-config: tree name and digest), from the log sent at
   * enrollment or, for a box enrolled without one, from the first log that replays to `pcr15`.
   * Like `pcr15`, never moved afterwards.
   */
  trees?: LiveTree[];
  /** the newest release whose measurement manifest this box was accepted with: the rollback floor */
  release?: string;
  enrolledAt: string;
  trusted: boolean;
  lastGoodAt?: string;
  lastFailure?: { code: ErrorCode; reason: string; at: string };
}

export interface Evidence {
  readonly nonce: Buffer;
  readonly message: Buffer;
  readonly signature: Buffer;
  readonly pcrs: Buffer;
  readonly eventLog: Buffer;
  /** pks-measure's PCR 15 log (/run/pks/measurements.json as the box has it); absent: PCR 15 must be the enrolled value */
  readonly measurementLog?: Buffer;
}

export interface AttestorOptions {
  /** pinned TPM vendor CAs (PEM): the EK certificate must chain to one of them */
  readonly ekCaPems: readonly string[];
  readonly reference: ReferenceValues;
  readonly buildKeyPem: string;
  /** a box may get stock this long after its last good quote */
  readonly windowMs: number;
  readonly nonceTtlMs?: number;
  readonly stateFile?: string;
  /**
   * Build-signed measurement manifests (`*.json`, appliance/contracts/measurement.ts), read at
   * every quote: the application measurements of the releases a box may run after an update.
   * A file that does not verify with `buildKeyPem` names nothing.
   */
  readonly manifestsDir?: string;
  /** when set, only manifests of this compatible count */
  readonly compatible?: string;
  readonly now?: () => number;
  /** TPM2_MakeCredential, offline (tpm2-tools -T none by default) */
  readonly makeCredential?: (ekPem: string, akName: Buffer, secret: Buffer) => Promise<Buffer>;
}

function untrusted(code: ErrorCode, reason: string): PksError {
  return pksError(code, reason);
}

export async function makeCredentialTool(ekPem: string, akName: Buffer, secret: Buffer): Promise<Buffer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-mkcred-'));
  try {
    await writeFile(path.join(dir, 'ek.pem'), ekPem);
    await writeFile(path.join(dir, 'secret'), secret, { mode: 0o600 });
    await new Promise<void>((res, rej) =>
      execFile('tpm2_makecredential', ['-T', 'none', '-G', 'rsa', '-u', path.join(dir, 'ek.pem'), '-s', path.join(dir, 'secret'), '-n', akName.toString('hex'), '-o', path.join(dir, 'cred')], { timeout: 20_000 }, (e) =>
        e ? rej(pksError('PKS_INTERNAL', 'makecredential failed')) : res(),
      ),
    );
    return await readFile(path.join(dir, 'cred'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export class Attestor {
  private readonly boxes = new Map<string, BoxAttestation>();
  private readonly nonces = new Map<string, { boxId: string; exp: number }>();
  private readonly pending = new Map<string, { secret: Buffer; ekFingerprint: string; akName: string; akPublic: string; pcr15: string; trees?: LiveTree[]; exp: number }>();
  private readonly ref: Map<number, Set<string>>;
  private readonly now: () => number;

  constructor(private readonly o: AttestorOptions) {
    this.ref = checkReference(o.reference, o.buildKeyPem);
    this.now = o.now ?? Date.now;
  }

  /** Reads the state; returns the manifest files that do not verify (named for the log). */
  async load(): Promise<{ manifests: number; refused: string[] }> {
    if (this.o.stateFile) {
      const raw = await readFile(this.o.stateFile, 'utf8').catch(() => '[]');
      for (const b of JSON.parse(raw) as BoxAttestation[]) this.boxes.set(b.boxId, b);
    }
    if (!this.o.manifestsDir) return { manifests: 0, refused: [] };
    const m = await loadManifests(this.o.manifestsDir, this.o.buildKeyPem, this.o.compatible).catch((e: unknown) => {
      throw pksError('PKS_CONFIG_INVALID', 'attest.manifestsDir is not a readable directory', e);
    });
    return { manifests: m.manifests.length, refused: m.refused };
  }

  private async save(): Promise<void> {
    if (!this.o.stateFile) return;
    await writeFile(`${this.o.stateFile}.tmp`, JSON.stringify([...this.boxes.values()], null, 1));
    const { rename } = await import('node:fs/promises');
    await rename(`${this.o.stateFile}.tmp`, this.o.stateFile);
  }

  private chainsToPinnedCa(ek: X509Certificate): boolean {
    const cas = this.o.ekCaPems.map((p) => new X509Certificate(p));
    const at = new Date(this.now());
    const valid = (c: X509Certificate) => new Date(c.validFrom) <= at && at <= new Date(c.validTo);
    // EK -> issuer (intermediate or root) -> ... -> a self-signed pinned root, all pinned
    let cur = ek;
    for (let depth = 0; depth < 4; depth++) {
      if (!valid(cur)) return false;
      const issuer = cas.find((c) => cur.checkIssued(c) && cur.verify(c.publicKey));
      if (!issuer) return false;
      if (issuer.checkIssued(issuer) && issuer.verify(issuer.publicKey)) return valid(issuer);
      cur = issuer;
    }
    return false;
  }

  /**
   * Enrollment, step 1: checks the EK certificate and the AK, binds the box id to both on first
   * enrollment (another TPM later is refused), and returns a credential only that TPM can open.
   */
  async beginEnroll(boxId: string, ekCertDer: Buffer, akPublic: Buffer, pcr15: string, measurementLog?: Buffer): Promise<Buffer> {
    let ek: X509Certificate;
    try {
      ek = new X509Certificate(ekCertDer);
    } catch {
      throw untrusted('PKS_ATTEST_UNTRUSTED', 'EK certificate is malformed');
    }
    if (!this.chainsToPinnedCa(ek)) throw untrusted('PKS_ATTEST_UNTRUSTED', 'EK certificate does not chain to a pinned TPM CA');
    const ak = parseTpmPublic(akPublic);
    const need = ATTR.fixedTPM | ATTR.fixedParent | ATTR.sensitiveDataOrigin | ATTR.restricted | ATTR.sign;
    if ((ak.attributes & need) !== need || ak.attributes & ATTR.decrypt) throw untrusted('PKS_ATTEST_UNTRUSTED', 'AK is not a restricted signing key of the TPM');
    if (!/^[0-9a-f]{64}$/.test(pcr15)) throw pksError('PKS_BAD_HEX', 'PCR 15 is a SHA-256 digest in hex');
    const trees = measurementLog ? parseMeasurementLog(measurementLog) : undefined;
    if (trees && pcr15Replay(trees) !== pcr15) throw untrusted('PKS_ATTEST_UNTRUSTED', 'the measurement log does not replay to PCR 15');
    const ekFingerprint = ek.fingerprint256;
    const known = this.boxes.get(boxId);
    if (known && (known.ekFingerprint !== ekFingerprint || known.akName !== ak.name.toString('hex')))
      throw untrusted('PKS_ATTEST_UNTRUSTED', 'box id is enrolled with another TPM or AK');
    const secret = randomBytes(32);
    const ekPem = ek.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const cred = await (this.o.makeCredential ?? makeCredentialTool)(ekPem, ak.name, secret);
    this.pending.set(boxId, { secret, ekFingerprint, akName: ak.name.toString('hex'), akPublic: akPublic.toString('base64'), pcr15, ...(trees ? { trees } : {}), exp: this.now() + (this.o.nonceTtlMs ?? 60_000) });
    return cred;
  }

  /** Enrollment, step 2: the box shows the secret its TPM opened. One try per credential. */
  async finishEnroll(boxId: string, secret: Buffer): Promise<void> {
    const p = this.pending.get(boxId);
    this.pending.delete(boxId);
    if (!p || p.exp < this.now()) throw untrusted('PKS_ATTEST_STALE', 'no enrollment in progress');
    if (secret.length !== p.secret.length || !timingSafeEqual(secret, p.secret)) throw untrusted('PKS_ATTEST_UNTRUSTED', 'credential activation failed');
    const prev = this.boxes.get(boxId);
    // the same for its events: a re-enrollment only fills them in for a box enrolled without a
    // log, and only with events that replay to the PCR 15 recorded then
    const trees = prev ? (prev.trees ?? (p.trees && pcr15Replay(p.trees) === prev.pcr15 ? p.trees : undefined)) : p.trees;
    this.boxes.set(boxId, {
      boxId,
      ekFingerprint: p.ekFingerprint,
      akName: p.akName,
      akPublic: p.akPublic,
      // enrolling again (same TPM, same AK) never moves the provisioned PCR 15: a box booted
      // with a changed application would otherwise re-enroll its way back to trust
      pcr15: prev?.pcr15 ?? p.pcr15,
      ...(trees ? { trees } : {}),
      ...(prev?.release ? { release: prev.release } : {}),
      enrolledAt: prev?.enrolledAt ?? new Date(this.now()).toISOString(),
      trusted: false,
      ...(prev?.lastFailure ? { lastFailure: prev.lastFailure } : {}),
    });
    await this.save();
  }

  /** A fresh single-use nonce for one box. */
  challenge(boxId: string): Buffer {
    if (!this.boxes.has(boxId)) throw untrusted('PKS_ATTEST_REQUIRED', 'box is not enrolled');
    const now = this.now();
    for (const [k, v] of this.nonces) if (v.exp < now) this.nonces.delete(k);
    if (this.nonces.size > 10_000) throw pksError('PKS_RATE_LIMITED', 'too many open challenges');
    const nonce = randomBytes(32);
    this.nonces.set(nonce.toString('hex'), { boxId, exp: now + (this.o.nonceTtlMs ?? 60_000) });
    return nonce;
  }

  /**
   * Verifies one quote. The nonce is spent whatever the outcome. Any failure, including one we
   * did not foresee, marks the box untrusted with a coded reason, and is thrown.
   */
  async verify(boxId: string, ev: Evidence, more: () => void = () => undefined): Promise<void> {
    const box = this.boxes.get(boxId);
    if (!box) throw untrusted('PKS_ATTEST_REQUIRED', 'box is not enrolled');
    let moved: Pcr15Outcome;
    try {
      // read at every quote: a release's manifest put in the directory counts from the next quote
      const manifests = this.o.manifestsDir ? (await loadManifests(this.o.manifestsDir, this.o.buildKeyPem, this.o.compatible).catch(() => {
        throw untrusted('PKS_ATTEST_UNTRUSTED', 'the KMS cannot read its measurement manifests');
      })).manifests : [];
      moved = this.check(box, ev, manifests);
      // checks beyond the quote (the KMS link: the vault's gate report) fail the same way
      more();
    } catch (err) {
      const e = err instanceof PksError && (err.code === 'PKS_ATTEST_UNTRUSTED' || err.code === 'PKS_ATTEST_STALE') ? err : untrusted('PKS_ATTEST_UNTRUSTED', 'evidence does not verify');
      box.trusted = false;
      box.lastFailure = { code: e.code, reason: e.detail ?? e.code, at: new Date(this.now()).toISOString() };
      await this.save().catch(() => undefined);
      throw e;
    }
    if (moved.trees && !box.trees) box.trees = moved.trees;
    if (moved.release) box.release = moved.release;
    box.trusted = true;
    box.lastGoodAt = new Date(this.now()).toISOString();
    await this.save();
  }

  private check(box: BoxAttestation, ev: Evidence, manifests: readonly MeasurementManifest[]): Pcr15Outcome {
    const key = ev.nonce.toString('hex');
    const n = this.nonces.get(key);
    this.nonces.delete(key);
    if (!n || n.boxId !== box.boxId || n.exp < this.now()) throw untrusted('PKS_ATTEST_STALE', 'nonce is unknown, used or expired');
    const ak = parseTpmPublic(Buffer.from(box.akPublic, 'base64'));
    if (!cryptoVerify('sha256', ev.message, ak.key, ev.signature)) throw untrusted('PKS_ATTEST_UNTRUSTED', 'quote signature does not verify with the enrolled AK');
    const q = parseQuote(ev.message);
    if (!q.extraData.equals(ev.nonce)) throw untrusted('PKS_ATTEST_STALE', 'quote is not over this nonce');
    if (q.pcrs.join(',') !== QUOTED_PCRS.join(',')) throw untrusted('PKS_ATTEST_UNTRUSTED', 'quote does not cover PCRs 0-15');
    if (ev.pcrs.length !== 32 * QUOTED_PCRS.length || !createHash('sha256').update(ev.pcrs).digest().equals(q.pcrDigest))
      throw untrusted('PKS_ATTEST_UNTRUSTED', 'PCR values do not match the quoted digest');
    const pcr = (i: number) => ev.pcrs.subarray(32 * i, 32 * i + 32);
    for (const [i, ok] of this.ref) if (!ok.has(pcr(i).toString('hex'))) throw untrusted('PKS_ATTEST_UNTRUSTED', `PCR ${i} is not a reference value of the build`);
    const moved = checkPcr15(box, pcr(15).toString('hex'), ev.measurementLog, manifests);
    let replayed: Map<number, Buffer>;
    try {
      replayed = replayEventLog(parseEventLog(ev.eventLog));
    } catch {
      throw untrusted('PKS_ATTEST_UNTRUSTED', 'event log is malformed');
    }
    for (const i of FIRMWARE_PCRS) {
      const r = replayed.get(i);
      if (!r || !r.equals(pcr(i))) throw untrusted('PKS_ATTEST_UNTRUSTED', `event log does not replay to PCR ${i}`);
    }
    return moved;
  }

  /** The release gate: throws unless the box's last good quote is within the window and nothing failed since. */
  mayRelease(boxId: string): void {
    const b = this.boxes.get(boxId);
    if (!b) throw untrusted('PKS_ATTEST_REQUIRED', 'box is not enrolled for attestation');
    if (!b.trusted || !b.lastGoodAt) throw untrusted('PKS_ATTEST_REQUIRED', `box is untrusted: ${b.lastFailure?.reason ?? 'never attested'}`);
    if (this.now() - Date.parse(b.lastGoodAt) > this.o.windowMs) throw untrusted('PKS_ATTEST_REQUIRED', 'box has not attested within the window');
  }

  /** One box's state as status() names it ('unknown': not enrolled here). */
  stateOf(boxId: string): string {
    return this.status().find((b) => b.boxId === boxId)?.state ?? 'unknown';
  }

  /** What pks-fleet shows. */
  status(): { boxId: string; state: 'attested' | 'expired' | 'untrusted' | 'enrolled'; lastGoodAt?: string; lastFailure?: BoxAttestation['lastFailure'] }[] {
    const now = this.now();
    return [...this.boxes.values()].map((b) => ({
      boxId: b.boxId,
      state: !b.lastGoodAt && b.trusted === false && !b.lastFailure ? 'enrolled' : !b.trusted ? 'untrusted' : now - Date.parse(b.lastGoodAt!) > this.o.windowMs ? 'expired' : 'attested',
      ...(b.lastGoodAt ? { lastGoodAt: b.lastGoodAt } : {}),
      ...(b.lastFailure ? { lastFailure: b.lastFailure } : {}),
    }));
  }
}
