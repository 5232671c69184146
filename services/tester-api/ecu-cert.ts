// X.509 helpers the plant and the reference KMS use by this name. ECU certificates themselves
// are no longer built here (issue 9): the keystore records the request and the vault builds
// and signs the certificate from its profile (services/vault/signed-structures.ts).
export { keyIdentifier, newSerial, signCertificate, type CertificateSpec, type RawSigner } from '../../appliance/x509.js';
