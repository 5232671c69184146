// Box MQTT client certificates for rotate-cert: the box sends a CSR on `csr`, the KMS issues
// the certificate with the CA the broker trusts for client authentication (config clientCa;
// in the dev stack the broker's own dev CA). The request is only a proof of possession of a
// P-256 key: the subject and every extension come from here, and the one name allowed is the
// registered box id the broker already authenticated (the topic's CN).
import { X509Certificate, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as x509 from '@peculiar/x509';
import { pksError } from '../../appliance/errors.js';
import { boxCsrMessage } from '../../appliance/signed-messages.js';
import { checkP256Csr, keyIdentifier, newSerial, signCertificate, clientLeafExtensions } from '../../appliance/x509.js';
import { p256PointFromSpki } from '../../appliance/ec-der.js';
import { rawKeySigner } from './signer.js';


export interface IssuedClientCert {
  cert: string;
  serial: string;
  notAfter: string;
}

export class ClientCa {
  private readonly ca: x509.X509Certificate;
  private readonly aki: string;

  private constructor(
    caPem: string,
    private readonly key: KeyObject,
    private readonly days: number,
  ) {
    this.ca = new x509.X509Certificate(caPem);
    this.aki = this.ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? keyIdentifier(Buffer.from(this.ca.publicKey.rawData));
  }

  static load(cfg: { certFile: string; keyFile: string; days?: number }): ClientCa {
    let caPem: string;
    let key: KeyObject;
    try {
      caPem = readFileSync(cfg.certFile, 'utf8');
      key = createPrivateKey(readFileSync(cfg.keyFile, 'utf8'));
    } catch {
      throw pksError('PKS_CONFIG_INVALID', 'clientCa: certificate or key cannot be read');
    }
    try {
      const c = new X509Certificate(caPem);
      if (!c.ca) throw new Error('not a CA');
      p256PointFromSpki(c.publicKey.export({ type: 'spki', format: 'der' }));
      // the key must be the CA's own, or every certificate would fail at the broker
      if (!c.checkPrivateKey(key)) throw new Error('key');
    } catch {
      throw pksError('PKS_CONFIG_INVALID', 'clientCa: not a P-256 CA certificate with its key');
    }
    return new ClientCa(caPem, key, cfg.days ?? 365);
  }

  /** Checks the CSR; every failure is PKS_CSR_INVALID. Returns the requested key's SPKI. */
  static async checkCsr(pem: unknown, boxId: string): Promise<Buffer> {
    const { spki, cn } = await checkP256Csr(pem);
    if (cn !== boxId) throw pksError('PKS_CSR_INVALID', `csr subject CN must be the box id ${boxId}`);
    return spki;
  }

  async issue(boxId: string, csrPem: unknown): Promise<IssuedClientCert> {
    const spki = await ClientCa.checkCsr(csrPem, boxId);
    const now = Math.floor(Date.now() / 1000) * 1000;
    let notAfter = new Date(now + this.days * 86_400_000);
    if (notAfter > this.ca.notAfter) notAfter = this.ca.notAfter;
    // a minute of slack for a box clock slightly behind ours
    const notBefore = new Date(now - 60_000);
    if (notAfter <= notBefore) throw pksError('PKS_SERVICE_UNAVAILABLE', 'client CA certificate has expired');
    const serial = newSerial();
    const cert = await signCertificate(
      {
        serial,
        subject: new x509.Name([{ CN: [boxId] }]),
        issuer: this.ca.subjectName,
        spki,
        notBefore,
        notAfter,
        extensions: clientLeafExtensions(spki, this.aki),
      },
      rawKeySigner(this.key),
    );
    return { cert: cert.toString('pem') + '\n', serial, notAfter: notAfter.toISOString() };
  }
}

/**
 * rotate-cert: the CSR must be endorsed by the box's HSM identity key registered here
 * (appliance/signed-messages.ts boxCsrMessage), so holding the box's MQTT key is not enough
 * to get a new client certificate (issue 9).
 */
export async function checkEndorsement(box: { boxId: string; identity: string }, csrPem: string, endorsement: string | undefined): Promise<void> {
  const spki = await ClientCa.checkCsr(csrPem, box.boxId);
  if (endorsement === undefined) throw pksError('PKS_CSR_INVALID', 'csr is not endorsed by the box identity key');
  const key = createPublicKey({ key: Buffer.from(box.identity, 'base64'), format: 'der', type: 'spki' });
  let ok = false;
  try {
    ok = verify('sha256', boxCsrMessage(box.boxId, spki), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(endorsement, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) throw pksError('PKS_CSR_INVALID', 'csr is not endorsed by the box identity key');
}

/**
 * Issue 16 §3: the CRL of the client CA (the broker reloads it: scripts/broker.sh crlfile), over
 * every revoked box certificate. Signed with the same CA key that issues them.
 */
export async function clientCrl(cfg: { certFile: string; keyFile: string }, entries: ReadonlyArray<{ serial: string; at: string }>, now = new Date()): Promise<string> {
  const crypto = (await import('node:crypto')).webcrypto as unknown as Crypto;
  const ca = new x509.X509Certificate(readFileSync(cfg.certFile, 'utf8'));
  const der = createPrivateKey(readFileSync(cfg.keyFile, 'utf8')).export({ format: 'der', type: 'pkcs8' });
  const signingKey = await crypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  der.fill(0);
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: ca.subjectName.toString(),
      thisUpdate: new Date(now.getTime() - 60_000),
      // the broker refuses every client once the CRL is past nextUpdate: the KMS re-issues it long before
      nextUpdate: new Date(now.getTime() + 30 * 86_400_000),
      entries: entries.map((e) => ({ serialNumber: e.serial, revocationDate: new Date(e.at), reason: x509.X509CrlReason.cessationOfOperation })),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      signingKey,
    },
    crypto,
  );
  // OpenSSL (mosquitto's crlfile) reads only the `X509 CRL` PEM label, not the library's `CRL`
  const b64 = Buffer.from(crl.rawData).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN X509 CRL-----\n${b64}\n-----END X509 CRL-----\n`;
}
