// ECU certificates: a CSR from the ECU in, a certificate signed by the issuing CA key out. The
// CA key lives in the HSM (vault key `ecu-ca`), so the TBSCertificate is built here and only its
// bytes go to the vault, which answers a raw P-256 r||s signature. Everything the ECU sent is
// checked first (self-signature, P-256 key on the curve, CN = its UID); the issued subject and
// extensions come from our profile, never from the request.
import { createHash, randomBytes, webcrypto, X509Certificate as NodeX509, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { pksError } from '../../appliance/errors.js';
import { p256PointFromSpki } from '../vault/ec-der.js';

/** Signs `tbs` with the CA key: raw r||s (64 bytes), ECDSA P-256 over SHA-256(tbs). */
export type RawSigner = (tbs: Buffer) => Promise<Buffer>;

export interface CertificateSpec {
  /** hex, positive (top bit clear) */
  serial: string;
  subject: x509.Name | string;
  issuer: x509.Name | string;
  /** DER SubjectPublicKeyInfo of the subject */
  spki: Buffer;
  notBefore: Date;
  notAfter: Date;
  extensions: x509.Extension[];
}

const toBuffer = (d: BufferSource): Buffer =>
  d instanceof ArrayBuffer ? Buffer.from(d) : Buffer.from(d.buffer, d.byteOffset, d.byteLength);

const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/**
 * Builds and signs an X.509 v3 certificate (ecdsa-with-SHA256) with an external signer. The
 * generator gets a one-call WebCrypto whose sign() is the signer, so no global crypto provider
 * is touched and the private key never has to exist in this process.
 */
export async function signCertificate(spec: CertificateSpec, sign: RawSigner): Promise<x509.X509Certificate> {
  const signerCrypto = {
    subtle: {
      sign: async (_alg: unknown, _key: unknown, data: BufferSource): Promise<ArrayBuffer> => {
        const sig = await sign(toBuffer(data));
        if (sig.length !== 64) throw pksError('PKS_HSM_FAILURE', 'issuing CA signature has the wrong length');
        return new Uint8Array(sig).buffer;
      },
    },
    getRandomValues: <T extends ArrayBufferView | null>(a: T): T => webcrypto.getRandomValues(a as never) as T,
  } as unknown as Crypto;
  const signingKey = { algorithm: { name: 'ECDSA', namedCurve: 'P-256' }, type: 'private', extractable: false, usages: ['sign'] } as unknown as CryptoKey;
  return await x509.X509CertificateGenerator.create(
    {
      serialNumber: spec.serial,
      subject: spec.subject,
      issuer: spec.issuer,
      notBefore: spec.notBefore,
      notAfter: spec.notAfter,
      publicKey: new x509.PublicKey(new Uint8Array(spec.spki).buffer),
      signingKey,
      signingAlgorithm: ECDSA_P256,
      extensions: spec.extensions,
    },
    signerCrypto,
  );
}

/** 128 random bits, top bit clear and first byte non-zero: a positive 16-byte DER INTEGER. */
export function newSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x40;
  return b.toString('hex');
}

/** RFC 5280 method 1 key identifier: SHA-1 of the subjectPublicKey BIT STRING contents. */
export function keyIdentifier(spkiDer: Buffer): string {
  // for EC keys the BIT STRING contents are the uncompressed point
  return createHash('sha1').update(p256PointFromSpki(spkiDer)).digest('hex');
}

export interface EcuProfile {
  validityDays: number;
  /** RFC 4514 subject with `{uid}` for the ECU UID in uppercase hex */
  subjectTemplate: string;
}

export interface IssuedCertificate {
  certificate: string;
  serial: string;
  subject: string;
  notAfter: string;
}

const MAX_CSR_PEM = 16 * 1024;

/** The issuing side: CA certificate + profile + the vault as signer. */
export class EcuIssuer {
  readonly ca: x509.X509Certificate;
  readonly #caSpki: Buffer;
  readonly #aki: string;
  readonly #caNotAfter: Date;
  readonly #caKey: KeyObject;

  constructor(
    caPem: string,
    readonly profile: EcuProfile,
    readonly sign: RawSigner,
    readonly now: () => number = Date.now,
  ) {
    try {
      this.ca = new x509.X509Certificate(caPem);
    } catch {
      throw pksError('PKS_CONFIG_INVALID', 'ecuCa.cert is not an X.509 certificate');
    }
    this.#caSpki = Buffer.from(this.ca.publicKey.rawData);
    try {
      p256PointFromSpki(this.#caSpki);
    } catch {
      throw pksError('PKS_CONFIG_INVALID', 'ecuCa.cert does not hold a P-256 key');
    }
    const bc = this.ca.getExtension(x509.BasicConstraintsExtension);
    if (!bc?.ca) throw pksError('PKS_CONFIG_INVALID', 'ecuCa.cert is not a CA certificate');
    const ski = this.ca.getExtension(x509.SubjectKeyIdentifierExtension);
    this.#aki = ski?.keyId ?? keyIdentifier(this.#caSpki);
    this.#caNotAfter = this.ca.notAfter;
    this.#caKey = new NodeX509(caPem).publicKey;
    // a template that does not make a valid name must fail at start, not at the first ECU
    this.subjectFor('00'.repeat(15));
  }

  /** DER SPKI of the CA certificate: must equal the vault's `ecu-ca` public key. */
  get caSpki(): Buffer {
    return Buffer.from(this.#caSpki);
  }

  subjectFor(uid: string): x509.Name {
    const text = this.profile.subjectTemplate.split('{uid}').join(uid.toUpperCase());
    let name: x509.Name;
    try {
      name = new x509.Name(text);
    } catch {
      throw pksError('PKS_CONFIG_INVALID', 'ecuCa.subjectTemplate is not an RFC 4514 name');
    }
    if (name.getField('CN').length !== 1) throw pksError('PKS_CONFIG_INVALID', 'ecuCa.subjectTemplate needs exactly one CN');
    return name;
  }

  /** Checks an ECU's CSR and answers the subject's SPKI; every failure is PKS_CSR_INVALID. */
  async checkCsr(pem: string, uid: string): Promise<Buffer> {
    if (typeof pem !== 'string' || pem.length > MAX_CSR_PEM || !/^-----BEGIN CERTIFICATE REQUEST-----/.test(pem.trimStart())) {
      throw pksError('PKS_CSR_INVALID', 'csr must be one PEM CERTIFICATE REQUEST');
    }
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(pem);
    } catch {
      throw pksError('PKS_CSR_INVALID', 'csr does not parse');
    }
    const spki = Buffer.from(csr.publicKey.rawData);
    try {
      p256PointFromSpki(spki);
    } catch {
      throw pksError('PKS_CSR_INVALID', 'csr key must be EC P-256');
    }
    let ok = false;
    try {
      ok = await csr.verify(webcrypto as unknown as Crypto);
    } catch {
      ok = false;
    }
    if (!ok) throw pksError('PKS_CSR_INVALID', 'csr self-signature does not verify');
    const cn = csr.subjectName.getField('CN');
    if (cn.length !== 1 || cn[0]!.toLowerCase() !== uid.toLowerCase()) {
      throw pksError('PKS_CSR_INVALID', 'csr subject CN must be the ECU UID in hex');
    }
    return spki;
  }

  /** Checks the CSR, builds the certificate from our profile, has the vault sign it, checks it. */
  async issue(uid: string, csrPem: string): Promise<IssuedCertificate> {
    const spki = await this.checkCsr(csrPem, uid);
    const nowMs = Math.floor(this.now() / 1000) * 1000;
    const notBefore = new Date(nowMs);
    let notAfter = new Date(nowMs + this.profile.validityDays * 86_400_000);
    // a certificate never outlives its issuer
    if (notAfter > this.#caNotAfter) notAfter = new Date(this.#caNotAfter.getTime());
    if (notAfter <= notBefore) throw pksError('PKS_SERVICE_UNAVAILABLE', 'issuing CA certificate has expired');
    const subject = this.subjectFor(uid);
    const serial = newSerial();
    const cert = await signCertificate(
      {
        serial,
        subject,
        issuer: this.ca.subjectName,
        spki,
        notBefore,
        notAfter,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
          new x509.SubjectKeyIdentifierExtension(keyIdentifier(spki)),
          new x509.AuthorityKeyIdentifierExtension(this.#aki),
        ],
      },
      this.sign,
    );
    const pem = cert.toString('pem');
    // a certificate that does not verify under the CA certificate never leaves the box
    if (!new NodeX509(pem).verify(this.#caKey)) {
      throw pksError('PKS_CONFIG_INVALID', 'issuing CA certificate does not match the HSM ecu-ca key');
    }
    return { certificate: pem + '\n', serial, subject: subject.toString(), notAfter: notAfter.toISOString() };
  }
}
