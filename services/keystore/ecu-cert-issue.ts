// ECU certificates, issued like keys (issue 9): the keystore owns issuance. It checks the
// tester's grant for the profile and the ECU's CSR (proof of possession, CN = UID), records
// the request durably (audit entry, flushed), and only then has the vault build and sign the
// certificate from (UID, public key, profile); the issued certificate is recorded and
// reported to the KMS. The tester API, which faces the network, has no signing verb at all:
// whatever it is made to do, nothing is signed that is not on record here first.
import { createHash } from 'node:crypto';
import { pksError } from '../../appliance/errors.js';
import { appendAudit } from './audit.js';
import type { EcuCertRequest, EcuCertResponse, TesterRecord } from '../../appliance/contracts/keystore.js';
import type { Dbs } from './db.js';
import { putOutbox } from './stock.js';

export interface EcuCertSigner {
  issueEcuCert(r: { uid: string; spki: string; profile: string; serial: string }): Promise<{ certificate: string; serial: string; subject: string; notAfter: string }>;
}

export interface EcuCertDeps {
  dbs: Dbs;
  vault: EcuCertSigner;
  now: () => number;
  /** one LMDB transaction, resolved once flushed to disk */
  commit<T>(fn: () => T): Promise<T>;
}

/** The grant, read from the registry the keystore itself keeps (never from the caller). */
function grantedTester(dbs: Dbs, cn: string, profile: string, now: number): TesterRecord {
  const t = dbs.testers.get(cn);
  if (!t || t.revoked) throw pksError('PKS_TESTER_UNKNOWN', 'tester is not registered or revoked');
  if (!(Date.parse(t.expiresAt) > now)) throw pksError('PKS_TESTER_EXPIRED', 'tester authorization has expired');
  if (!(t.certProfiles ?? []).includes(profile)) throw pksError('PKS_POOL_FORBIDDEN', `tester may not use certificate profile '${profile}'`);
  return t;
}

export async function issueEcuCert(d: EcuCertDeps, r: EcuCertRequest): Promise<EcuCertResponse> {
  const uid = r.uid.toLowerCase();
  if (/^0+$/.test(uid)) throw pksError('PKS_CSR_INVALID', 'uid 0 (wildcard) is not an ECU');
  const tester = grantedTester(d.dbs, r.tester, r.profile, d.now());
  // loaded on first use: @peculiar/x509 costs the keystore seconds at every (re)start otherwise
  const { checkP256Csr, newSerial } = await import('../../appliance/x509.js');
  const { spki, cn } = await checkP256Csr(r.csr);
  if (cn.toLowerCase() !== uid) throw pksError('PKS_CSR_INVALID', 'csr subject CN must be the ECU UID in hex');
  const serial = newSerial();
  const keyHash = createHash('sha256').update(spki).digest('hex');
  const request = { tester: tester.cn, station: tester.station, uid, profile: r.profile, serial, spkiSha256: keyHash };
  // on record and on disk before anything is signed
  await d.commit(() => appendAudit(d.dbs, d.now(), { ev: 'ecu-cert-request', ...request }));
  const cert = await d.vault.issueEcuCert({ uid, spki: spki.toString('base64'), profile: r.profile, serial });
  if (cert.serial !== serial) throw pksError('PKS_INTERNAL', 'vault issued another serial');
  const issued = { ...request, subject: cert.subject, notAfter: cert.notAfter, certSha256: createHash('sha256').update(cert.certificate).digest('hex') };
  // logged like a key: the certificate leaves the box only once the keystore has it on record
  await d.commit(() => {
    const seq = appendAudit(d.dbs, d.now(), { ev: 'ecu-cert', ...issued });
    putOutbox(d.dbs, d.now(), 'cert', { ...issued, auditSeq: seq });
  });
  return { certificate: cert.certificate, serial, subject: cert.subject, notAfter: cert.notAfter };
}
