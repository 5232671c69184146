// A KMS CA and signer certificates built in-process with real P-256 keys, for tests of what
// the box accepts from the KMS (batch signers, audit anchors): any EKU, CA flag or validity.
import { X509Certificate, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { BATCH_SIGNER_EKU, type TrustAnchor } from '../../appliance/batch-format.js';
import { keyIdentifier, newSerial, signCertificate } from '../../appliance/x509.js';

export const DAY = 86_400_000;
export const pair = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
export const spkiOf = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });

export interface CertSpec {
  subject: string;
  issuer: string;
  spki: Buffer;
  caKey: KeyObject;
  ca?: boolean;
  eku?: string[];
  from?: number;
  to?: number;
}

export async function makeCert(o: CertSpec): Promise<string> {
  const now = Date.now();
  const ext: x509.Extension[] = [
    new x509.BasicConstraintsExtension(o.ca ?? false, o.ca ? 0 : undefined, true),
    new x509.KeyUsagesExtension(o.ca ? x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature, true),
    new x509.SubjectKeyIdentifierExtension(keyIdentifier(o.spki)),
  ];
  if (o.eku && o.eku.length) ext.push(new x509.ExtendedKeyUsageExtension(o.eku, false));
  const c = await signCertificate(
    { serial: newSerial(), subject: o.subject, issuer: o.issuer, spki: o.spki, notBefore: new Date(o.from ?? now - DAY), notAfter: new Date(o.to ?? now + 30 * DAY), extensions: ext },
    async (tbs) => sign('sha256', tbs, { key: o.caKey, dsaEncoding: 'ieee-p1363' }),
  );
  return c.toString('pem');
}

/** A self-signed KMS CA (valid unless from/to say otherwise) and its pinned trust anchor. */
export async function makeKmsCa(from?: number, to?: number): Promise<{ key: KeyObject; pem: string; trust: TrustAnchor }> {
  const ca = pair();
  const pem = await makeCert({ subject: 'CN=KMS CA', issuer: 'CN=KMS CA', spki: spkiOf(ca.publicKey), caKey: ca.privateKey, ca: true, ...(from !== undefined ? { from } : {}), ...(to !== undefined ? { to } : {}) });
  return { key: ca.privateKey, pem, trust: { ca: new X509Certificate(pem) } };
}

/** A KMS signer issued by `caKey`: a fresh key and its certificate (the batch-signer EKU unless `eku` is given). */
export async function makeSigner(caKey: KeyObject, leaf: Partial<Omit<CertSpec, 'spki' | 'caKey'>> = {}): Promise<{ key: KeyObject; certPem: string }> {
  const k = pair();
  const certPem = await makeCert({ subject: 'CN=kms-batch-signer', issuer: 'CN=KMS CA', spki: spkiOf(k.publicKey), caKey, eku: [BATCH_SIGNER_EKU], ...leaf });
  return { key: k.privateKey, certPem };
}
