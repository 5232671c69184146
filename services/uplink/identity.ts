// The box's MQTT client identity and its rotation (ops command `rotate-cert`). The config
// names the identity installed at setup; a rotated one lives in the uplink's state dir and the
// state file points to it (the "identity override"), so every later connect, after restarts
// too, uses the newest identity while the setup files stay untouched.
//
// Rotation, box side: a fresh P-256 key made here (node crypto), a PKCS#10 CSR with CN = the
// box id, sent on `csr`; the KMS answers on `cert`. Nothing the KMS sends is trusted: the
// certificate must chain to the broker's client CA the box pins, name this box, carry exactly
// the new key and be valid now, or the old identity stays.
import { X509Certificate, createPrivateKey, webcrypto } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import * as x509 from '@peculiar/x509';
import { pksError } from '../../appliance/errors.js';
import { writeFileDurably } from '../../appliance/durable-file.js';

const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const MAX_CERT_PEM = 8192;

export interface FreshKey {
  keyPem: string;
  csrPem: string;
  /** DER SPKI of the new public key */
  spki: Buffer;
}

/** A new P-256 key and a CSR for it, subject CN = boxId, self-signed (proof of possession). */
export async function makeCsr(boxId: string): Promise<FreshKey> {
  const crypto = webcrypto as unknown as Crypto;
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: new x509.Name([{ CN: [boxId] }]), keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } },
    crypto,
  );
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ type: 'pkcs8', format: 'pem' }) as string;
  pkcs8.fill(0);
  const spki = Buffer.from(await crypto.subtle.exportKey('spki', keys.publicKey));
  return { keyPem, csrPem: csr.toString('pem'), spki };
}

export interface IssuedInfo {
  serial: string;
  notAfter: string;
}

/** Checks a certificate the KMS sent for our CSR; every failure is PKS_CSR_INVALID. */
export function checkIssuedCert(pem: unknown, o: { caPem: string; boxId: string; spki: Buffer; now?: Date }): IssuedInfo {
  const bad = (why: string): never => {
    throw pksError('PKS_CSR_INVALID', `issued certificate ${why}`);
  };
  if (typeof pem !== 'string' || pem.length > MAX_CERT_PEM || !pem.trimStart().startsWith('-----BEGIN CERTIFICATE-----')) bad('is not one PEM certificate');
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(pem as string);
  } catch {
    return bad('does not parse');
  }
  try {
    ca = new X509Certificate(o.caPem);
  } catch {
    throw pksError('PKS_CONFIG_INVALID', 'broker client CA is not a PEM certificate');
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) bad('is not issued by the broker client CA');
  const cn = new x509.X509Certificate(pem as string).subjectName.getField('CN');
  if (cn.length !== 1 || cn[0] !== o.boxId) bad(`does not name ${o.boxId}`);
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  if (!spki.equals(o.spki)) bad('does not carry the key we generated');
  const now = (o.now ?? new Date()).getTime();
  if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)) bad('is not valid now');
  if (cert.ca) bad('is a CA certificate');
  // node lists the EKU OIDs as keyUsage; absent means any purpose
  if (cert.keyUsage && !cert.keyUsage.includes(CLIENT_AUTH)) bad('is not for TLS client authentication');
  return { serial: cert.serialNumber, notAfter: new Date(cert.validTo).toISOString() };
}

export interface StoredIdentity {
  certFile: string;
  keyFile: string;
  serial: string;
  at: string;
}


/**
 * Writes key (0600) and certificate under <stateDir>/identity/, named by serial, each file
 * atomically and on disk before this returns. They are not in use until the state file
 * points to them (the commit is that one rename).
 */
export function storeIdentity(stateDir: string, serial: string, keyPem: string, certPem: string): StoredIdentity {
  const dir = path.join(stateDir, 'identity');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const name = `mqtt-${serial.toLowerCase().replace(/[^0-9a-f]/g, '').slice(0, 40)}`;
  const keyFile = path.join(dir, `${name}.key`);
  const certFile = path.join(dir, `${name}.crt`);
  writeFileDurably(keyFile, keyPem, 0o600);
  writeFileDurably(certFile, certPem, 0o644);
  return { certFile, keyFile, serial, at: new Date().toISOString() };
}

export function removeIdentity(id: Pick<StoredIdentity, 'certFile' | 'keyFile'>): void {
  for (const f of [id.keyFile, id.certFile]) rmSync(f, { force: true });
}

/** The override's files, or null when they cannot be read (the caller falls back to config). */
export function loadStoredIdentity(id: StoredIdentity): { cert: string; key: string } | null {
  try {
    return { cert: readFileSync(id.certFile, 'utf8'), key: readFileSync(id.keyFile, 'utf8') };
  } catch {
    return null;
  }
}

export const serialOf = (certPem: string): string | null => {
  try {
    return new X509Certificate(certPem).serialNumber;
  } catch {
    return null;
  }
};
