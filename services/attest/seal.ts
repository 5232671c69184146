// Secrets sealed to the boot state (issue 12): the HSM PIN and the TLS/MQTT keys are TPM sealed
// objects that open only when PCR 7 (Secure Boot state) has the value it had at setup and PCR 11
// (the UKI: kernel, initrd, command line, os-release, and systemd's boot phases) has a value
// that the image signing key approved. The build signs one PolicyPCR(11) digest per phase value
// of the UKI it ships (signPcr11Policies), the box seals with PolicyAuthorize(signing key) then
// PolicyPCR(7) (sealSecret), and an update only ships a new UKI with new signatures: no
// re-provisioning.
//
// Why tpm2-tools and not `systemd-creds encrypt --tpm2-public-key=`: systemd 252 on Debian 12
// accepts --tpm2-public-key/--tpm2-public-key-pcrs but seals to the hash PCRs only (its debug
// log shows no signed policy, and the credential opens under a tampered PCR 11; seen with
// swtpm on this host). PolicyAuthorize through tpm2-tools is the same TPM construction that
// systemd 253+ builds, so the signed records stay valid if the image moves to it.
import { createCipheriv, createDecipheriv, createHash, createPrivateKey, randomBytes, sign as rsaSign } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pksError, isPksError } from '../../appliance/errors.js';
import { readPcrs, tpm2 } from './measure.js';
import { ZERO_PCR, parseDigestHex } from './pcr.js';

export const BOOT_STATE_PCR = 7;
export const UKI_PCR = 11;
const TPM_CC_POLICY_PCR = 0x17f;
const TPM_ALG_SHA256 = 0x000b;

export interface SignedPcrPolicy {
  /** the PCR 11 value this entry approves (hex) */
  readonly pcr11: string;
  /** PolicyPCR(sha256:11 = pcr11) from an empty policy: what the TPM's session holds (hex) */
  readonly policy: string;
  /** RSASSA-PKCS1-v1_5 SHA-256 signature of `policy` by the image signing key (base64) */
  readonly sig: string;
}

export interface SignedPolicyFile {
  readonly version: 1;
  readonly bank: 'sha256';
  readonly pcr: 11;
  readonly policies: SignedPcrPolicy[];
}

/** TPML_PCR_SELECTION with one SHA-256 bank and the given PCRs. */
export function pcrSelection(pcrs: readonly number[]): Buffer {
  const sel = Buffer.alloc(3);
  for (const p of pcrs) sel[p >> 3]! |= 1 << (p & 7);
  const b = Buffer.alloc(4 + 2 + 1 + 3);
  b.writeUInt32BE(1, 0);
  b.writeUInt16BE(TPM_ALG_SHA256, 4);
  b.writeUInt8(3, 6);
  sel.copy(b, 7);
  return b;
}

/** TPM2_PolicyPCR's new policy digest: H(old || CC || selection || H(PCR values in index order)). */
export function policyPcrDigest(values: ReadonlyMap<number, Buffer>, old: Buffer = ZERO_PCR): Buffer {
  const pcrs = [...values.keys()].sort((a, b) => a - b);
  const pcrDigest = createHash('sha256');
  for (const p of pcrs) pcrDigest.update(values.get(p)!);
  const cc = Buffer.alloc(4);
  cc.writeUInt32BE(TPM_CC_POLICY_PCR);
  return createHash('sha256').update(old).update(cc).update(pcrSelection(pcrs)).update(pcrDigest.digest()).digest();
}

/** The build's signatures: one per PCR 11 value the UKI can show while the services run. */
export function signPcr11Policies(pcr11Values: readonly Buffer[], privateKeyPem: string): SignedPolicyFile {
  const key = createPrivateKey(privateKeyPem);
  if (key.asymmetricKeyType !== 'rsa') throw pksError('PKS_CONFIG_INVALID', 'the PCR policy signing key must be RSA (TPM2_VerifySignature RSASSA)');
  return {
    version: 1,
    bank: 'sha256',
    pcr: UKI_PCR,
    policies: pcr11Values.map((v) => {
      const policy = policyPcrDigest(new Map([[UKI_PCR, v]]));
      return { pcr11: v.toString('hex'), policy: policy.toString('hex'), sig: rsaSign('sha256', policy, key).toString('base64') };
    }),
  };
}

export function parseSignedPolicyFile(raw: unknown): SignedPolicyFile {
  const o = raw as Partial<SignedPolicyFile>;
  const bad = (what: string): never => {
    throw pksError('PKS_CONFIG_INVALID', `signed PCR policy: ${what}`);
  };
  if (typeof o !== 'object' || o === null || o.version !== 1 || o.bank !== 'sha256' || o.pcr !== UKI_PCR || !Array.isArray(o.policies) || o.policies.length > 64) bad('wrong version, bank or PCR');
  for (const p of o.policies!) {
    if (typeof p?.pcr11 !== 'string' || typeof p.policy !== 'string' || typeof p.sig !== 'string' || !/^[A-Za-z0-9+/=]{1,1024}$/.test(p.sig)) bad('malformed entry');
    parseDigestHex(p.pcr11);
    parseDigestHex(p.policy);
  }
  return o as SignedPolicyFile;
}

export interface SealedBlob {
  /** TPM2B_PUBLIC and TPM2B_PRIVATE of the sealed object under the owner SRK (not secret) */
  readonly pub: Buffer;
  readonly priv: Buffer;
  /** for a secret longer than a sealed object holds (a TLS or MQTT private key): the file under
   * AES-256-GCM with the sealed 32-byte key, iv || ciphertext || tag */
  readonly wrapped?: Buffer;
}

const WRAP_AAD = Buffer.from('pks-sealed-file-v1');
/** TPM2B_SENSITIVE_DATA holds at most 128 bytes (MAX_SYM_DATA) */
const MAX_SEALED = 128;

/** Seals a secret of any size: in the TPM object itself, or as a sealed AES key wrapping it. */
export async function sealFile(o: { tcti: string; data: Buffer; publicKeyPem: string }): Promise<SealedBlob> {
  if (o.data.length <= MAX_SEALED) return sealSecret({ tcti: o.tcti, secret: o.data, publicKeyPem: o.publicKeyPem });
  if (o.data.length > 1 << 20) throw pksError('PKS_TOO_LARGE', 'a sealed file is at most 1 MiB');
  const key = randomBytes(32);
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(WRAP_AAD);
  const wrapped = Buffer.concat([iv, c.update(o.data), c.final(), c.getAuthTag()]);
  const blob = await sealSecret({ tcti: o.tcti, secret: key, publicKeyPem: o.publicKeyPem });
  key.fill(0);
  return { ...blob, wrapped };
}

/** Opens what sealFile made (PKS_TPM_UNSEAL when the TPM refuses or the wrapped file was changed). */
export async function unsealFile(o: { tcti: string; blob: SealedBlob; publicKeyPem: string; signed: SignedPolicyFile }): Promise<Buffer> {
  const inner = await unsealSecret(o);
  if (!o.blob.wrapped) return inner;
  const w = o.blob.wrapped;
  if (inner.length !== 32 || w.length < 12 + 16) throw pksError('PKS_TPM_UNSEAL', 'sealed file is malformed');
  try {
    const d = createDecipheriv('aes-256-gcm', inner, w.subarray(0, 12));
    d.setAAD(WRAP_AAD);
    d.setAuthTag(w.subarray(w.length - 16));
    return Buffer.concat([d.update(w.subarray(12, w.length - 16)), d.final()]);
  } catch {
    throw pksError('PKS_TPM_UNSEAL', 'sealed file was changed');
  } finally {
    inner.fill(0);
  }
}

interface Ctx {
  readonly tcti: string;
  readonly dir: string;
}

async function withDir<T>(tcti: string, fn: (c: Ctx) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(process.env.PKS_SEAL_TMP ?? os.tmpdir(), 'pks-seal-'));
  try {
    return await fn({ tcti, dir });
  } finally {
    // no resource manager on swtpm or under the stub: leave no transient object or session behind
    await tpm2('tpm2_flushcontext', ['-t'], tcti).catch(() => undefined);
    await tpm2('tpm2_flushcontext', ['-s'], tcti).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

const f = (c: Ctx, name: string): string => path.join(c.dir, name);

/**
 * The owner-hierarchy SRK: the default template plus noda. Loading the sealed blob authorises
 * the SRK; without noda every boot that unseals and then loses power counts as a failed
 * authorisation, and the third power cut locked the TPM (and so the vault) for 1000 s per try.
 */
export const SRK_ATTRIBUTES = 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda';

/** The SRK (deterministic from the TPM's seed and the template) and the signing key's public part. */
async function primaryAndSigner(c: Ctx, publicKeyPem: string): Promise<void> {
  await writeFile(f(c, 'signer.pem'), publicKeyPem);
  await tpm2('tpm2_createprimary', ['-Q', '-C', 'o', '-g', 'sha256', '-G', 'ecc', '-a', SRK_ATTRIBUTES, '-c', f(c, 'prim.ctx')], c.tcti);
  await tpm2('tpm2_loadexternal', ['-Q', '-C', 'o', '-G', 'rsa', '-u', f(c, 'signer.pem'), '-c', f(c, 'signer.ctx'), '-n', f(c, 'signer.name')], c.tcti);
  await flushTransient(c);
}

/** swtpm has three transient slots and no resource manager: the saved contexts stay usable */
const flushTransient = (c: Ctx): Promise<string> => tpm2('tpm2_flushcontext', ['-t'], c.tcti);

/**
 * Seals `secret` (at most 128 bytes: a PIN, or the AES key that wraps a longer file) to
 * PolicyAuthorize(signing key) + PolicyPCR(7 as it is now). noda: power cuts are normal on a
 * plant floor and must not walk the TPM into dictionary-attack lockout.
 */
export async function sealSecret(o: { tcti: string; secret: Buffer; publicKeyPem: string }): Promise<SealedBlob> {
  if (o.secret.length < 1 || o.secret.length > 128) throw pksError('PKS_OUT_OF_RANGE', 'a sealed secret is 1..128 bytes');
  return withDir(o.tcti, async (c) => {
    await primaryAndSigner(c, o.publicKeyPem);
    await tpm2('tpm2_startauthsession', ['-S', f(c, 'trial.ctx')], c.tcti);
    await tpm2('tpm2_policyauthorize', ['-Q', '-S', f(c, 'trial.ctx'), '-n', f(c, 'signer.name'), '-L', f(c, 'pa.dat')], c.tcti);
    await tpm2('tpm2_policypcr', ['-Q', '-S', f(c, 'trial.ctx'), '-l', `sha256:${BOOT_STATE_PCR}`, '-L', f(c, 'policy.dat')], c.tcti);
    await tpm2('tpm2_flushcontext', [f(c, 'trial.ctx')], c.tcti);
    await writeFile(f(c, 'secret'), o.secret, { mode: 0o600 });
    await tpm2('tpm2_create', ['-Q', '-C', f(c, 'prim.ctx'), '-L', f(c, 'policy.dat'), '-a', 'fixedtpm|fixedparent|noda', '-i', f(c, 'secret'), '-u', f(c, 'seal.pub'), '-r', f(c, 'seal.priv')], c.tcti);
    return { pub: await readFile(f(c, 'seal.pub')), priv: await readFile(f(c, 'seal.priv')) };
  });
}

/**
 * Opens a sealed blob in this boot. Picks the signed entry for the live PCR 11; without one (a
 * UKI the image key did not sign) or with PCR 7 changed, the TPM refuses and so do we, with
 * PKS_TPM_UNSEAL and no detail that would help a guess.
 */
export async function unsealSecret(o: { tcti: string; blob: SealedBlob; publicKeyPem: string; signed: SignedPolicyFile }, retry: UnsealRetry = UNSEAL_RETRY): Promise<Buffer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await unsealOnce(o);
    } catch (e) {
      // only a TPM that was busy or a tool that did not finish is asked again, from the start (a
      // fresh primary, signer and policy session); a refusal is final and fails closed at once
      if (attempt >= retry.attempts || !isTransientTpmFailure(e)) throw e;
      await new Promise((r) => setTimeout(r, retry.delayMs * attempt));
    }
  }
}

export interface UnsealRetry {
  attempts: number;
  delayMs: number;
}
const UNSEAL_RETRY: UnsealRetry = { attempts: 4, delayMs: 2000 };

/**
 * TPM 2.0 codes that mean "not now" (Part 2, 6.6.3): TPM_RC_PCR_CHANGED (a PCR moved under the
 * session: the next attempt reads it again), TPM_RC_TESTING (self-test after a power
 * cycle), RETRY, YIELDED, CANCELED, CONTEXT_GAP, NV_UNAVAILABLE, the memory warnings; and a
 * tpm2 tool that timed out. Never a policy or authorisation failure: those are the TPM's verdict
 * on the boot state.
 */
const TRANSIENT_TPM_RC = new Set([0x128, 0x90a, 0x922, 0x923, 0x908, 0x909, 0x901, 0x902, 0x903, 0x904]);
export function isTransientTpmFailure(e: unknown): boolean {
  const texts: string[] = [];
  for (let x: unknown = e, depth = 0; x && depth < 4; x = (x as { cause?: unknown }).cause, depth++)
    texts.push(String((x as { detail?: unknown }).detail ?? ''), String((x as Error).message ?? ''));
  const text = texts.join('\n');
  if (/\(timed out\)/.test(text)) return true;
  // TPM-layer codes only (tpm2-tools prints them as 0x90A or 0x0000090a); other layers are larger
  return [...text.matchAll(/\b0x([0-9a-f]{1,8})\b/gi)].some((m) => TRANSIENT_TPM_RC.has(parseInt(m[1]!, 16)));
}

async function unsealOnce(o: { tcti: string; blob: SealedBlob; publicKeyPem: string; signed: SignedPolicyFile }): Promise<Buffer> {
  const signed = parseSignedPolicyFile(o.signed);
  let live: string;
  try {
    live = (await readPcrs([UKI_PCR], o.tcti)).get(UKI_PCR)!.toString('hex');
  } catch (e) {
    throw isTransientTpmFailure(e) ? tpmBusy(e) : e;
  }
  const entry = signed.policies.find((p) => p.pcr11 === live);
  if (!entry) throw pksError('PKS_TPM_UNSEAL', `PCR ${UKI_PCR} has no signed policy: this UKI is not signed by the image key`);
  // the entry must say what its PCR value means: a policy that does not match its value is forged
  if (!policyPcrDigest(new Map([[UKI_PCR, Buffer.from(entry.pcr11, 'hex')]])).equals(Buffer.from(entry.policy, 'hex')))
    throw pksError('PKS_TPM_UNSEAL', 'signed policy entry is inconsistent');
  return withDir(o.tcti, async (c) => {
    try {
      await primaryAndSigner(c, o.publicKeyPem);
      await writeFile(f(c, 'seal.pub'), o.blob.pub);
      await writeFile(f(c, 'seal.priv'), o.blob.priv);
      await tpm2('tpm2_load', ['-Q', '-C', f(c, 'prim.ctx'), '-u', f(c, 'seal.pub'), '-r', f(c, 'seal.priv'), '-c', f(c, 'seal.ctx')], c.tcti);
      await flushTransient(c);
      await writeFile(f(c, 'approved'), Buffer.from(entry.policy, 'hex'));
      await writeFile(f(c, 'approved.sig'), Buffer.from(entry.sig, 'base64'));
      await tpm2('tpm2_verifysignature', ['-Q', '-c', f(c, 'signer.ctx'), '-g', 'sha256', '-m', f(c, 'approved'), '-s', f(c, 'approved.sig'), '-f', 'rsassa', '-t', f(c, 'ticket')], c.tcti);
      await flushTransient(c);
      await tpm2('tpm2_startauthsession', ['--policy-session', '-S', f(c, 's.ctx')], c.tcti);
      await tpm2('tpm2_policypcr', ['-Q', '-S', f(c, 's.ctx'), '-l', `sha256:${UKI_PCR}`], c.tcti);
      await tpm2('tpm2_policyauthorize', ['-Q', '-S', f(c, 's.ctx'), '-i', f(c, 'approved'), '-n', f(c, 'signer.name'), '-t', f(c, 'ticket')], c.tcti);
      await tpm2('tpm2_policypcr', ['-Q', '-S', f(c, 's.ctx'), '-l', `sha256:${BOOT_STATE_PCR}`], c.tcti);
      await tpm2('tpm2_unseal', ['-c', f(c, 'seal.ctx'), '-p', `session:${f(c, 's.ctx')}`, '-o', f(c, 'out')], c.tcti);
      return await readFile(f(c, 'out'));
    } catch (e) {
      if (isPksError(e) && e.code === 'PKS_TPM_UNSEAL') throw e;
      // lockout is the one refusal an operator must tell apart: it is not a tampered boot
      if (/0x921|DA lockout/.test(String((e as Error).message) + String((e as { cause?: unknown }).cause ?? '')))
        throw pksError('PKS_TPM_UNSEAL', 'the TPM is in dictionary-attack lockout: clear it with the lockout authorisation (tpm2_dictionarylockout -c)', e);
      if (isTransientTpmFailure(e)) throw tpmBusy(e);
      throw pksError('PKS_TPM_UNSEAL', 'the TPM refused: boot state (PCR 7) or signature does not match', e);
    }
  });
}

/** The blob as one file: "pks-sealed-v1\n<base64 public>\n<base64 private>\n[<base64 wrapped>\n]" (nothing in it is secret without this TPM). */
export const encodeBlob = (b: SealedBlob): string =>
  `pks-sealed-v1\n${b.pub.toString('base64')}\n${b.priv.toString('base64')}\n${b.wrapped ? `${b.wrapped.toString('base64')}\n` : ''}`;
export function decodeBlob(text: string): SealedBlob {
  const [magic, pub, priv, wrapped] = text.split('\n');
  if (magic !== 'pks-sealed-v1' || !pub || !priv || !/^[A-Za-z0-9+/=]+$/.test(pub + priv + (wrapped ?? ''))) throw pksError('PKS_CONFIG_INVALID', 'not a pks-sealed-v1 blob');
  return { pub: Buffer.from(pub, 'base64'), priv: Buffer.from(priv, 'base64'), ...(wrapped ? { wrapped: Buffer.from(wrapped, 'base64') } : {}) };
}

/** Busy or slow, not a verdict: said as such, and asked again by unsealSecret. */
const tpmBusy = (e: unknown) =>
  pksError('PKS_TPM_UNSEAL', `the TPM did not answer in time or was busy: ${String((e as { detail?: unknown }).detail ?? (e as Error).message ?? e).slice(0, 200)}`, e);
