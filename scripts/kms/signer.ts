// The KMS batch signer: a P-256 key whose certificate, issued by the KMS CA the boxes pin,
// travels in every chunk. Two kinds:
//  - hsm (default in the plant and tests): the key is generated once in the KMS's own SoftHSM
//    token (services/vault/hsm.ts, key `identity`) and never leaves it; its certificate is
//    issued at start by the KMS CA key file when the one on disk does not fit the HSM key;
//  - key file (fallback): a PEM key and its certificate, both from scripts/pki.sh.
// Either way a chunk is signed ECDSA-P256-SHA256 with a DER signature, which is what
// appliance/batch-format.ts verifyChunk checks.
import { X509Certificate, createPrivateKey, createSign, createVerify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as x509 from '@peculiar/x509';
import { BATCH_SIGNER_EKU, type BatchPayload, type SignedChunk } from '../../appliance/batch-format.js';
import { readCredential } from '../../appliance/config.js';
import { isPksError, pksError } from '../../appliance/errors.js';
import type { Logger } from '../../appliance/log.js';
import { keyIdentifier, newSerial, signCertificate, type RawSigner } from '../../appliance/x509.js';
import { Hsm, rawToDer } from '../../services/vault/hsm.js';
import { writeFileDurably } from '../../appliance/durable-file.js';

export interface BatchSigner {
  certPem: string;
  /** ECDSA-P256-SHA256 over data, DER-encoded */
  sign(data: Buffer): Buffer;
  close?(): void;
}

export interface SignerConfig {
  /** the signer certificate; with `hsm`, (re)written at start when it does not fit the HSM key */
  certFile: string;
  /** key-file signer: PEM private key (or the credential `kms-batch-signer-key`) */
  keyFile?: string;
  /** HSM signer: the KMS's own token; the PIN is the credential `kms-hsm-pin` or pinFile */
  hsm?: { module: string; tokenLabel: string; pinFile?: string; softhsm2Conf?: string };
  /** KMS CA (certificate + key file) to issue the HSM signer's certificate with */
  ca?: { certFile: string; keyFile: string };
  /** validity of an issued signer certificate */
  days?: number;
}

/** One chunk signed by any BatchSigner (batch-format.ts signChunk wants a key object). */
export function signChunkWith(payload: BatchPayload, signer: BatchSigner): SignedChunk {
  const text = JSON.stringify(payload);
  return { v: 1, payload: text, sig: signer.sign(Buffer.from(text, 'utf8')).toString('base64'), cert: signer.certPem };
}

export function keySigner(key: KeyObject, certPem: string): BatchSigner {
  return { certPem, sign: (data) => createSign('sha256').update(data).sign(key) };
}

/** A raw r||s signer over SHA-256 with a key file (issuing certificates with signCertificate). */
export const rawKeySigner =
  (key: KeyObject): RawSigner =>
  async (tbs) =>
    createSign('sha256').update(tbs).sign({ key, dsaEncoding: 'ieee-p1363' });

function readFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    throw pksError('PKS_CONFIG_INVALID', `${what}: cannot read ${file}`);
  }
}

function privateKey(pem: string, what: string): KeyObject {
  try {
    const k = createPrivateKey(pem);
    if (k.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error('curve');
    return k;
  } catch {
    throw pksError('PKS_CONFIG_INVALID', `${what} is not a P-256 PEM private key`);
  }
}


/** True when `pem` is a certificate for `spki`, issued by `ca` (if given), valid a while longer. */
function fits(pem: string | null, spki: Buffer, ca: X509Certificate | null): boolean {
  if (!pem) return false;
  try {
    const c = new X509Certificate(pem);
    if (!c.publicKey.export({ type: 'spki', format: 'der' }).equals(spki)) return false;
    if (ca && (!c.checkIssued(ca) || !c.verify(ca.publicKey))) return false;
    if (!c.keyUsage?.includes(BATCH_SIGNER_EKU)) return false;
    const now = Date.now();
    return Date.parse(c.validFrom) <= now && Date.parse(c.validTo) > now + 86_400_000;
  } catch {
    return false;
  }
}

/** Issues a batch-signer certificate for `spki` with a CA key file. */
export async function issueSignerCert(spki: Buffer, ca: { certPem: string; key: KeyObject }, days = 365): Promise<string> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caSpki = Buffer.from(caCert.publicKey.rawData);
  const now = Math.floor(Date.now() / 1000) * 1000;
  let notAfter = new Date(now + days * 86_400_000);
  if (notAfter > caCert.notAfter) notAfter = caCert.notAfter;
  const cert = await signCertificate(
    {
      serial: newSerial(),
      subject: new x509.Name([{ CN: ['kms-batch-signer'] }]),
      issuer: caCert.subjectName,
      spki,
      notBefore: new Date(now - 60_000),
      notAfter,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        // the boxes take batches only from a certificate with this EKU (issue 9)
        new x509.ExtendedKeyUsageExtension([BATCH_SIGNER_EKU], false),
        new x509.SubjectKeyIdentifierExtension(keyIdentifier(spki)),
        new x509.AuthorityKeyIdentifierExtension(caCert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? keyIdentifier(caSpki)),
      ],
    },
    rawKeySigner(ca.key),
  );
  return cert.toString('pem') + '\n';
}

/** The signer the config asks for, checked by one signature round trip before use. */
export async function loadSigner(cfg: SignerConfig, log?: Logger): Promise<BatchSigner> {
  let signer: BatchSigner;
  if (cfg.hsm && cfg.keyFile) throw pksError('PKS_CONFIG_INVALID', 'signer: either hsm or keyFile, not both');
  if (cfg.hsm) {
    const pin = readCredential('kms-hsm-pin', cfg.hsm.pinFile);
    const hsm = Hsm.open({ module: cfg.hsm.module, tokenLabel: cfg.hsm.tokenLabel, pin, ...(cfg.hsm.softhsm2Conf ? { softhsm2Conf: cfg.hsm.softhsm2Conf } : {}) });
    try {
      const { created } = hsm.ensureHierarchy();
      if (created.length > 0) log?.info('batch signer key generated in the HSM', { created });
      const spki = hsm.publicKey('identity');
      let certPem: string | null = null;
      try {
        certPem = readFileSync(cfg.certFile, 'utf8');
      } catch {
        certPem = null;
      }
      const ca = cfg.ca ? { certPem: readFile(cfg.ca.certFile, 'KMS CA certificate'), key: privateKey(readFile(cfg.ca.keyFile, 'KMS CA key'), 'KMS CA key') } : null;
      if (!fits(certPem, spki, ca ? new X509Certificate(ca.certPem) : null)) {
        if (!ca) throw pksError('PKS_CONFIG_INVALID', 'batch signer certificate does not fit the HSM key and no KMS CA is configured to issue one');
        certPem = await issueSignerCert(spki, ca, cfg.days);
        writeFileDurably(cfg.certFile, certPem);
        log?.info('batch signer certificate issued for the HSM key', { serial: new X509Certificate(certPem).serialNumber });
      }
      signer = { certPem: certPem!, sign: (data) => rawToDer(hsm.sign('identity', data)), close: () => hsm.close() };
    } catch (e) {
      hsm.close();
      throw e;
    }
  } else {
    const pem = readCredential('kms-batch-signer-key', cfg.keyFile);
    signer = keySigner(privateKey(pem, 'batch signer key'), readFile(cfg.certFile, 'signer certificate'));
  }
  // a key that does not match its certificate would make every batch fail at the boxes
  try {
    const probe = Buffer.from('pks-kms-signer-probe');
    const pub = new X509Certificate(signer.certPem).publicKey;
    if (!createVerify('sha256').update(probe).verify(pub, signer.sign(probe))) throw pksError('PKS_CONFIG_INVALID', 'batch signer key does not match its certificate');
  } catch (e) {
    signer.close?.();
    if (isPksError(e)) throw e;
    throw pksError('PKS_CONFIG_INVALID', 'batch signer certificate is not usable');
  }
  return signer;
}
