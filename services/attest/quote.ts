// The box's side of remote attestation (issue 12): an attestation key (AK) made at setup under the
// TPM's endorsement key (EK), proven to sit in the same TPM as the EK by credential activation
// (the KMS encrypts a secret to the EK certificate's key and the AK's name; only that TPM can
// open it for that AK), and quotes of PCRs 0-15 over a nonce from the KMS, sent with the firmware
// event log. The AK is a restricted signing key, so the TPM signs only attestation structures it
// made itself: a quote cannot be forged with TPM2_Sign.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pksError } from '../../appliance/errors.js';
import { EVENT_LOG_PATH, tpm2 } from './measure.js';

/** TCG's NV index of the RSA 2048 EK certificate (swtpm_setup --create-ek-cert writes it there). */
export const EK_CERT_NV_RSA = '0x01c00002';
/** Where setup persists the AK (TCG provisioning guidance: 0x81010002 for an AK). */
export const AK_HANDLE = '0x81010002';
export const QUOTE_PCRS = Array.from({ length: 16 }, (_, i) => i);

export interface AkEnrollment {
  /** DER of the EK certificate from the TPM's NV */
  readonly ekCert: Buffer;
  /** TPM2B_PUBLIC of the AK: the KMS derives its name and key from it, never from our word */
  readonly akPublic: Buffer;
}

export interface Quote {
  /** TPMS_ATTEST as the TPM signed it */
  readonly message: Buffer;
  /** RSASSA-PKCS1-v1_5 SHA-256 signature by the AK */
  readonly signature: Buffer;
  /** PCRs 0..15 (SHA-256), 32 bytes each, in index order */
  readonly pcrs: Buffer;
}

async function inDir<T>(tcti: string, fn: (file: (n: string) => string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-quote-'));
  try {
    return await fn((n) => path.join(dir, n));
  } finally {
    await tpm2('tpm2_flushcontext', ['-t'], tcti).catch(() => undefined);
    await tpm2('tpm2_flushcontext', ['-s'], tcti).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

const exists = (tcti: string): Promise<boolean> =>
  tpm2('tpm2_readpublic', ['-c', AK_HANDLE], tcti).then(
    () => true,
    () => false,
  );

/**
 * A restricted RSA signing key, as tpm2_createak makes it, plus noda: the AK signs a quote in every
 * boot, and without noda each boot that then loses power counts as a failed authorisation (three
 * power cuts locked the TPM in the VM test).
 */
export const AK_ATTRIBUTES = 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign|noda';

/** Setup: the AK under the EK, persisted at AK_HANDLE (kept if already there: re-running setup changes nothing). */
export async function enrollAk(tcti: string): Promise<AkEnrollment> {
  return inDir(tcti, async (f) => {
    await tpm2('tpm2_nvread', [EK_CERT_NV_RSA, '-o', f('ek.der')], tcti).catch((e) => {
      throw pksError('PKS_SERVICE_UNAVAILABLE', 'TPM has no EK certificate (NV 0x01c00002)', e);
    });
    if (!(await exists(tcti))) {
      await tpm2('tpm2_createek', ['-c', f('ek.ctx'), '-G', 'rsa', '-u', f('ek.pub')], tcti);
      await tpm2('tpm2_flushcontext', ['-t'], tcti);
      // tpm2_createak's template without noda, so by hand: what createak does, plus noda
      await tpm2('tpm2_startauthsession', ['--policy-session', '-S', f('s1.ctx')], tcti);
      await tpm2('tpm2_policysecret', ['-S', f('s1.ctx'), '-c', 'e'], tcti);
      await tpm2('tpm2_create', ['-C', f('ek.ctx'), '-P', `session:${f('s1.ctx')}`, '-G', 'rsa2048:rsassa-sha256:null', '-g', 'sha256', '-a', AK_ATTRIBUTES, '-u', f('ak.pub'), '-r', f('ak.priv')], tcti);
      await tpm2('tpm2_flushcontext', [f('s1.ctx')], tcti);
      await tpm2('tpm2_startauthsession', ['--policy-session', '-S', f('s2.ctx')], tcti);
      await tpm2('tpm2_policysecret', ['-S', f('s2.ctx'), '-c', 'e'], tcti);
      await tpm2('tpm2_load', ['-C', f('ek.ctx'), '-P', `session:${f('s2.ctx')}`, '-u', f('ak.pub'), '-r', f('ak.priv'), '-c', f('ak.ctx'), '-n', f('ak.name')], tcti);
      await tpm2('tpm2_flushcontext', [f('s2.ctx')], tcti);
      await tpm2('tpm2_flushcontext', ['-t'], tcti);
      await tpm2('tpm2_flushcontext', ['-s'], tcti);
      await tpm2('tpm2_evictcontrol', ['-C', 'o', '-c', f('ak.ctx'), AK_HANDLE], tcti);
    }
    await tpm2('tpm2_readpublic', ['-c', AK_HANDLE, '-f', 'tss', '-o', f('ak.tss')], tcti);
    return { ekCert: await readFile(f('ek.der')), akPublic: await readFile(f('ak.tss')) };
  });
}

/** Opens the KMS's credential (TPM2_ActivateCredential with the EK, PolicySecret(endorsement)). */
export async function activateCredential(tcti: string, credential: Buffer): Promise<Buffer> {
  if (credential.length > 4096) throw pksError('PKS_TOO_LARGE', 'credential blob too large');
  return inDir(tcti, async (f) => {
    await writeFile(f('cred'), credential);
    await tpm2('tpm2_createek', ['-c', f('ek.ctx'), '-G', 'rsa'], tcti);
    await tpm2('tpm2_flushcontext', ['-t'], tcti);
    await tpm2('tpm2_startauthsession', ['--policy-session', '-S', f('s.ctx')], tcti);
    await tpm2('tpm2_policysecret', ['-S', f('s.ctx'), '-c', 'e'], tcti);
    await tpm2('tpm2_activatecredential', ['-c', AK_HANDLE, '-C', f('ek.ctx'), '-i', f('cred'), '-o', f('secret'), '-P', `session:${f('s.ctx')}`], tcti);
    return readFile(f('secret'));
  });
}

/** A quote of PCRs 0..15 over the KMS's nonce. */
export async function quote(tcti: string, nonce: Buffer): Promise<Quote> {
  if (nonce.length < 16 || nonce.length > 64) throw pksError('PKS_OUT_OF_RANGE', 'nonce is 16..64 bytes');
  return inDir(tcti, async (f) => {
    await tpm2(
      'tpm2_quote',
      ['-c', AK_HANDLE, '-l', `sha256:${QUOTE_PCRS.join(',')}`, '-q', nonce.toString('hex'), '-g', 'sha256', '-m', f('msg'), '-s', f('sig'), '-f', 'plain', '-o', f('pcrs'), '-F', 'values'],
      tcti,
    );
    return { message: await readFile(f('msg')), signature: await readFile(f('sig')), pcrs: await readFile(f('pcrs')) };
  });
}

/** The firmware's event log as the kernel exposes it (empty when there is none: the KMS then refuses). */
export const readEventLog = (file = EVENT_LOG_PATH): Promise<Buffer> => readFile(file).catch(() => Buffer.alloc(0));
