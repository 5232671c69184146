// What the vault signs, built here from validated fields: an ECU certificate from (UID, public
// key, profile), the ECU CA's own certificate, an audit checkpoint, a verification file. No
// caller hands the vault bytes to sign (issue 9, after OpenSSH's monitor: the verb table says
// who may ask, this module checks what is asked). Every structure has its own domain: X.509
// TBSCertificates only for the ecu-ca key, prefixed messages (appliance/signed-messages.ts)
// for the audit key.
import { X509Certificate as NodeX509 } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import * as x509 from '@peculiar/x509';
import { pksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import { boxCsrMessage, checkpointMessage, verificationFileMessage, type CheckpointFields } from '../../appliance/signed-messages.js';
import { checkP256Csr, keyIdentifier, signCertificate, type RawSigner } from '../../appliance/x509.js';
import { p256PointFromSpki } from '../../appliance/ec-der.js';
import { OUTBOX_KINDS } from '../../appliance/contracts/keystore.js';

const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const EKU: Record<string, string> = { clientAuth: CLIENT_AUTH, serverAuth: SERVER_AUTH };

export interface EcuProfile {
  validityDays: number;
  /** RFC 4514 subject with `{uid}` for the ECU UID in uppercase hex */
  subjectTemplate: string;
  /** extended key usages by name; default clientAuth */
  extendedKeyUsage?: readonly ('clientAuth' | 'serverAuth')[];
}

export interface EcuCaConfig {
  /** PEM of the issuing CA certificate over the HSM ecu-ca key (installed by plant IT) */
  cert: string;
  /** subject of the self-signed development CA certificate (verb ecu-ca-certificate) */
  subject: string;
  /** certificate profiles by name, `<oem>.<ecu type>` */
  profiles: Readonly<Record<string, EcuProfile>>;
}

export interface IssuedCertificate {
  certificate: string;
  serial: string;
  subject: string;
  notAfter: string;
}

function subjectFor(template: string, uid: string): x509.Name {
  let name: x509.Name;
  try {
    name = new x509.Name(template.split('{uid}').join(uid.toUpperCase()));
  } catch {
    throw pksError('PKS_CONFIG_INVALID', 'ecuCa profile subjectTemplate is not an RFC 4514 name');
  }
  if (name.getField('CN').length !== 1) throw pksError('PKS_CONFIG_INVALID', 'ecuCa profile subjectTemplate needs exactly one CN');
  return name;
}

/** Profiles are checked once at start: a template that makes no valid name fails there. */
export function checkEcuCaConfig(cfg: EcuCaConfig): void {
  for (const [name, p] of Object.entries(cfg.profiles)) {
    try {
      subjectFor(p.subjectTemplate, '00'.repeat(15));
    } catch {
      throw pksError('PKS_CONFIG_INVALID', `ecuCa.profiles.${name}.subjectTemplate is not an RFC 4514 name with one CN`);
    }
  }
  try {
    new x509.Name(cfg.subject);
  } catch {
    throw pksError('PKS_CONFIG_INVALID', 'ecuCa.subject is not an RFC 4514 name');
  }
}

interface LoadedCa {
  mtimeMs: number;
  cert: x509.X509Certificate;
  node: NodeX509;
  aki: string;
}

/**
 * The ECU issuing CA: its certificate (re-read when the file changes, so plant IT can install
 * it without a restart), checked against the HSM key on every load, and the profiles.
 */
export class EcuCa {
  #loaded: LoadedCa | null = null;

  constructor(
    readonly cfg: EcuCaConfig,
    private readonly caSpki: () => Buffer,
    private readonly sign: RawSigner,
    private readonly now: () => number = Date.now,
  ) {
    checkEcuCaConfig(cfg);
  }

  #ca(): LoadedCa {
    let mtimeMs: number;
    try {
      mtimeMs = statSync(this.cfg.cert).mtimeMs;
    } catch {
      throw pksError('PKS_SERVICE_UNAVAILABLE', 'the ECU issuing CA certificate is not installed');
    }
    if (this.#loaded && this.#loaded.mtimeMs === mtimeMs) return this.#loaded;
    let cert: x509.X509Certificate;
    let node: NodeX509;
    try {
      const pem = readFileSync(this.cfg.cert, 'utf8');
      cert = new x509.X509Certificate(pem);
      node = new NodeX509(pem);
    } catch {
      throw pksError('PKS_CONFIG_INVALID', 'ecuCa.cert is not an X.509 certificate');
    }
    if (!cert.getExtension(x509.BasicConstraintsExtension)?.ca) throw pksError('PKS_CONFIG_INVALID', 'ecuCa.cert is not a CA certificate');
    // the configured certificate must be the HSM key's: otherwise every certificate is junk
    if (!Buffer.from(cert.publicKey.rawData).equals(this.caSpki())) throw pksError('PKS_CONFIG_INVALID', 'ecuCa.cert does not match the HSM ecu-ca key');
    const aki = cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? keyIdentifier(this.caSpki());
    this.#loaded = { mtimeMs, cert, node, aki };
    return this.#loaded;
  }

  /**
   * An end-entity ECU certificate: never a CA; subject, key usage, EKU and validity from the
   * profile; never outliving the issuing CA; checked under the CA before it is returned.
   */
  async issue(r: { uid: string; spki: Buffer; profile: string; serial: string }): Promise<IssuedCertificate> {
    const profile = Object.hasOwn(this.cfg.profiles, r.profile) ? this.cfg.profiles[r.profile] : undefined;
    if (!profile) throw pksError('PKS_NOT_FOUND', `no ECU certificate profile '${r.profile}'`);
    if (!/^[0-9a-f]{30}$/i.test(r.uid) || /^0+$/.test(r.uid)) throw pksError('PKS_BAD_HEX', 'uid must be an individual ECU UID (15 bytes hex)');
    try {
      p256PointFromSpki(r.spki);
    } catch {
      throw pksError('PKS_CSR_INVALID', 'ECU public key must be EC P-256');
    }
    // a positive 16-byte DER INTEGER, as newSerial() makes them
    if (!/^[4-7][0-9a-f]{31}$/.test(r.serial)) throw pksError('PKS_BAD_REQUEST', 'serial must be 16 bytes hex with the top bits 01');
    const ca = this.#ca();
    const nowMs = Math.floor(this.now() / 1000) * 1000;
    const notBefore = new Date(nowMs);
    if (notBefore < ca.cert.notBefore) throw pksError('PKS_SERVICE_UNAVAILABLE', 'issuing CA certificate is not valid yet');
    let notAfter = new Date(nowMs + profile.validityDays * 86_400_000);
    if (notAfter > ca.cert.notAfter) notAfter = new Date(ca.cert.notAfter.getTime());
    if (notAfter <= notBefore) throw pksError('PKS_SERVICE_UNAVAILABLE', 'issuing CA certificate has expired');
    const subject = subjectFor(profile.subjectTemplate, r.uid);
    const ekus = (profile.extendedKeyUsage ?? ['clientAuth']).map((e) => EKU[e]!);
    const cert = await signCertificate(
      {
        serial: r.serial.toLowerCase(),
        subject,
        issuer: ca.cert.subjectName,
        spki: r.spki,
        notBefore,
        notAfter,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension(ekus, false),
          new x509.SubjectKeyIdentifierExtension(keyIdentifier(r.spki)),
          new x509.AuthorityKeyIdentifierExtension(ca.aki),
        ],
      },
      this.sign,
    );
    const pem = cert.toString('pem');
    if (!new NodeX509(pem).verify(ca.node.publicKey)) throw pksError('PKS_CONFIG_INVALID', 'issued certificate does not verify under ecuCa.cert');
    return { certificate: pem + '\n', serial: r.serial.toLowerCase(), subject: subject.toString(), notAfter: notAfter.toISOString() };
  }

  /**
   * The development CA certificate: self-signed over the HSM ecu-ca key, subject from the
   * config, CA:TRUE pathlen 0. (Production installs a certificate the OEM issued instead.)
   */
  async selfSigned(serial: string, days: number): Promise<string> {
    const spki = this.caSpki();
    const now = Math.floor(this.now() / 1000) * 1000;
    const cert = await signCertificate(
      {
        serial,
        subject: this.cfg.subject,
        issuer: this.cfg.subject,
        spki,
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + days * 86_400_000),
        extensions: [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          new x509.SubjectKeyIdentifierExtension(keyIdentifier(spki)),
        ],
      },
      this.sign,
    );
    return cert.toString('pem') + '\n';
  }
}

const HASH64 = /^[0-9a-f]{64}$/;

/** A checkpoint's fields, checked: sequence numbers in order, hashes of the chain's form, a real time. */
export function checkpointToSign(c: CheckpointFields, now = Date.now()): Buffer {
  if (!Number.isSafeInteger(c.seq) || !Number.isSafeInteger(c.prevSeq) || c.prevSeq < 0 || c.seq <= c.prevSeq) {
    throw pksError('PKS_OUT_OF_RANGE', 'checkpoint seq must follow prevSeq');
  }
  if (!HASH64.test(c.hash) || !HASH64.test(c.prevHash)) throw pksError('PKS_BAD_HEX', 'checkpoint hashes must be 32 bytes lowercase hex');
  if (c.prevSeq === 0 && c.prevHash !== '0'.repeat(64)) throw pksError('PKS_BAD_REQUEST', 'the first checkpoint starts at the genesis hash');
  const at = Date.parse(c.at);
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$/.test(c.at) || !Number.isFinite(at)) throw pksError('PKS_BAD_REQUEST', 'checkpoint time must be ISO 8601 UTC');
  // a checkpoint is signed when it is made: not dated into the future (a pre-signed anchor)
  if (at > now + 5 * 60_000) throw pksError('PKS_OUT_OF_RANGE', 'checkpoint time is in the future');
  return checkpointMessage(c);
}

const FILE_KINDS = new Set<string>(OUTBOX_KINDS);

/**
 * A verification file as the keystore packs it: this box's, of outbox items only. The vault
 * signs the domain-separated digest of the exact text.
 */
export function verificationFileToSign(text: string, boxId: string): Buffer {
  const p = parseJsonOr('PKS_BAD_REQUEST', 'verification payload', text) as { type?: unknown; v?: unknown; fileId?: unknown; boxId?: unknown; createdAt?: unknown; items?: unknown };
  const keys = Object.keys(p ?? {}).sort().join(',');
  if (keys !== 'boxId,createdAt,fileId,items,type,v' || p.type !== 'pks-verification' || p.v !== 1) throw pksError('PKS_BAD_REQUEST', 'not a v1 verification payload');
  if (p.boxId !== boxId) throw pksError('PKS_BAD_REQUEST', 'verification payload names another box');
  if (typeof p.fileId !== 'string' || !/^vf-[0-9a-f-]{36}$/.test(p.fileId)) throw pksError('PKS_BAD_REQUEST', 'fileId is malformed');
  if (!Array.isArray(p.items) || p.items.length === 0 || p.items.length > 5000) throw pksError('PKS_BAD_REQUEST', 'items must be 1..5000 outbox items');
  for (const it of p.items as Record<string, unknown>[]) {
    if (typeof it !== 'object' || it === null || Object.keys(it).sort().join(',') !== 'at,body,id,kind') throw pksError('PKS_BAD_REQUEST', 'item is not an outbox item');
    if (typeof it.id !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,95}$/.test(it.id) || !FILE_KINDS.has(it.kind as string) || typeof it.body !== 'object') throw pksError('PKS_BAD_REQUEST', 'item is not an outbox item');
  }
  return verificationFileMessage(text);
}

/**
 * The box's own CSR for rotate-cert: the uplink makes the new MQTT key and its CSR; the vault
 * checks it names this box (one CN, P-256, valid self-signature) and endorses exactly that key
 * with the HSM identity key, which the KMS registered. A stolen MQTT key alone cannot rotate.
 */
export async function boxCsrToSign(csrPem: string, boxId: string): Promise<Buffer> {
  const { spki, cn } = await checkP256Csr(csrPem);
  if (cn !== boxId) throw pksError('PKS_CSR_INVALID', `csr subject CN must be this box (${boxId})`);
  return boxCsrMessage(boxId, spki);
}
