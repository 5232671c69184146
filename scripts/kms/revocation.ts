// Issue 16 §3: revoked box MQTT certificates. The KMS records a revocation when
//  - a box reports, in its audit-signed verification file, that rotate-cert replaced its
//    certificate (`mqtt-cert-rotated` with the previous certificate): the old one is revoked at
//    once instead of staying valid until it expires;
//  - a box is decommissioned (`pksctl zeroize`): every certificate of the box is revoked.
// A certificate is revoked only when it names the reporting box and was issued by the client CA
// the broker trusts: a box cannot get another box's certificate revoked. The CRL (client-ca.ts
// clientCrl) is written to the configured file and the broker is told to reload it (SIGHUP to
// the pid in its pid file, scripts/broker.sh); a broker on another host reloads it by its own means.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as x509 from '@peculiar/x509';
import { writeFileDurably } from '../../appliance/durable-file.js';
import { pksError } from '../../appliance/errors.js';
import type { Logger } from '../../appliance/log.js';
import { clientCrl } from './client-ca.js';
import type { KmsStore } from './store.js';

/** The serial of `pem` when it is a client certificate of this CA for `boxId`, else null. */
export function boxCertSerial(caFile: string, boxId: string, pem: unknown): string | null {
  if (typeof pem !== 'string' || pem.length > 8192) return null;
  try {
    const cert = new X509Certificate(pem);
    const ca = new X509Certificate(readFileSync(caFile, 'utf8'));
    if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return null;
    const cn = new x509.X509Certificate(pem).subjectName.getField('CN');
    if (cn.length !== 1 || cn[0] !== boxId) return null;
    return cert.serialNumber.toLowerCase();
  } catch {
    return null;
  }
}

/** Records a revocation (inside the caller's transaction or on its own); true when it is new. */
export function recordRevocation(store: KmsStore, boxId: string, serial: string, reason: string, now = new Date()): boolean {
  const s = serial.toLowerCase();
  if (!/^[0-9a-f]{1,64}$/.test(s)) throw pksError('PKS_BAD_REQUEST', 'serial is not hex');
  if (store.revocations.get(s)) return false;
  store.revocations.putSync(s, { serial: s, boxId, at: now.toISOString(), reason: reason.slice(0, 200) });
  return true;
}

export interface CrlConfig {
  /** where the CRL is written (the broker's `crlfile`) */
  file: string;
  /** the broker's pid file: SIGHUP after each new CRL (dev stack: scripts/broker.sh) */
  hupPidFile?: string;
}

/** Builds the CRL from every revocation, writes it durably and has the broker reload it. */
export async function publishCrl(store: KmsStore, ca: { certFile: string; keyFile: string }, cfg: CrlConfig | undefined, log: Logger): Promise<string> {
  const entries = [...store.revocations.getRange()].map((e) => e.value);
  const pem = await clientCrl(ca, entries);
  if (cfg) {
    writeFileDurably(cfg.file, pem, 0o644);
    if (cfg.hupPidFile) {
      try {
        process.kill(Number(readFileSync(cfg.hupPidFile, 'utf8').trim()), 'SIGHUP');
      } catch (err) {
        log.warn('broker not told to reload the CRL', { err });
      }
    }
    log.info('CRL published', { revoked: entries.length, file: cfg.file });
  }
  return pem;
}
