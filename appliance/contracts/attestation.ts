// Remote attestation between a box and the KMS over MQTT (issue 12), and the vault's signed
// gate report that travels with every quote.
//
// Topics (topics.ts): the box publishes `attest` (one of the messages below, by `type`), the
// KMS answers on `attest-answer`, signed like every KMS message (kms-message.ts, kind `attest`).
//   box → KMS  {type: 'enroll', requestId, ekCert, akPublic, pcr15, measurementLog?}
//                                                                       (base64 DER / TPM2B_PUBLIC)
//   KMS → box  {requestId, credential}                                  (TPM2_MakeCredential blob)
//   box → KMS  {type: 'activate', requestId, secret}                    (what the TPM opened)
//   box → KMS  {type: 'challenge', requestId}                           ("give me a nonce")
//   KMS → box  {requestId, nonce}                                       (32 bytes, single use, 60 s)
//   box → KMS  {type: 'quote', requestId, nonce, message, signature, pcrs, eventLog, measurementLog?, gate}
//   KMS → box  {requestId, ok, state, error?{code, detail}}             (the verdict)
// `gate` is the vault's own verdict on the application measurement, signed by the box's HSM
// identity key over gateReportText(): the uplink carries it but cannot make it, so a box whose
// vault is closed (a file changed at run time, which PCR 15 of the boot cannot show) is refused
// stock even if the network-facing uplink lies.
// `measurementLog` is pks-measure's PCR 15 log, /run/pks/measurements.json byte for byte, in
// base64 ({version: 1, pcr: 15, events: [{name, digest, ...}], ...}): the KMS replays its events
// to the quoted PCR 15 and judges each tree on its own (pks-config: the enrolled one; pks-app:
// the enrolled one or a build-signed manifest's), so that a signed update keeps the box attested.
// Without it the whole PCR 15 must be the enrolled value (boxes that predate it).
/** bytes of a measurement log the KMS takes (pks-measure writes well under 2 KiB) */
export const MEASUREMENT_LOG_MAX = 16 * 1024;

export const ATTEST_MESSAGE_TYPES = ['enroll', 'activate', 'challenge', 'quote'] as const;
export type AttestMessageType = (typeof ATTEST_MESSAGE_TYPES)[number];

export interface GateReport {
  readonly open: boolean;
  /** PKS_TAMPERED when closed */
  readonly code?: string;
  readonly reason?: string;
  readonly at: string;
  /** base64 raw r||s ECDSA P-256 SHA-256 by the HSM identity key over gateReportText() */
  readonly sig: string;
}

/** What the identity key signs: domain-separated, bound to the box and the KMS's nonce. */
export const gateReportText = (boxId: string, nonce: Buffer, r: Omit<GateReport, 'sig'>): Buffer =>
  Buffer.from(`pks-gate-report-v1|${boxId}|${nonce.toString('hex')}|${r.open ? 'open' : 'closed'}|${r.code ?? ''}|${r.at}`);

export const ATTEST_STATES = ['attested', 'expired', 'untrusted', 'enrolled', 'unknown'] as const;
