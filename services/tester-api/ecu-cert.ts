// ECU certificates: a CSR from the ECU in, a certificate signed by the issuing CA key out. The
// CA key lives in the HSM (vault key `ecu-ca`), so the TBSCertificate is built here and only its
// bytes go to the vault, which answers a raw P-256 r||s signature. Everything the ECU sent is
// checked first (self-signature, P-256 key on the curve, CN = its UID); the issued subject and
// extensions come from our profile, never from the request.
import { X509Certificate as NodeX509, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { pksError } from '../../appliance/errors.js';
import { checkP256Csr, keyIdentifier, newSerial, signCertificate, type RawSigner, clientLeafExtensions } from '../../appliance/x509.js';
import { p256PointFromSpki } from '../../appliance/ec-der.js';

export { keyIdentifier, newSerial, signCertificate, type CertificateSpec, type RawSigner } from '../../appliance/x509.js';

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
    const { spki, cn } = await checkP256Csr(pem);
    if (cn.toLowerCase() !== uid.toLowerCase()) throw pksError('PKS_CSR_INVALID', 'csr subject CN must be the ECU UID in hex');
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
        extensions: clientLeafExtensions(spki, this.#aki),
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
