// X.509 with an external signer: certificates built here, signed by a key that never has to
// be in this process (the vault's HSM key, a KMS key), and the checks every CSR we accept must
// pass. Shared by the tester API (ECU certificates) and the reference KMS (box certificates).
import { createHash, randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { pksError } from './errors.js';
import { p256PointFromSpki } from './ec-der.js';

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

export const MAX_CSR_PEM = 16 * 1024;

/**
 * Parses and checks a PKCS#10 request: one PEM block, a P-256 key on the curve, a valid
 * self-signature, exactly one CN. Every failure is PKS_CSR_INVALID. The caller decides
 * whether the CN is acceptable; the issued subject never comes from the request.
 */
export async function checkP256Csr(pem: unknown): Promise<{ csr: x509.Pkcs10CertificateRequest; spki: Buffer; cn: string }> {
  if (typeof pem !== 'string' || pem.length > MAX_CSR_PEM || !pem.trimStart().startsWith('-----BEGIN CERTIFICATE REQUEST-----')) {
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
  if (cn.length !== 1) throw pksError('PKS_CSR_INVALID', 'csr subject must have exactly one CN');
  return { csr, spki, cn: cn[0]! };
}

/** Extensions of an end-entity certificate for TLS client authentication (ECUs, boxes). */
export function clientLeafExtensions(spki: Buffer, authorityKeyId: string): x509.Extension[] {
  return [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
    new x509.SubjectKeyIdentifierExtension(keyIdentifier(spki)),
    new x509.AuthorityKeyIdentifierExtension(authorityKeyId),
  ];
}
