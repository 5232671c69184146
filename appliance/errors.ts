// One catalogue of coded errors for every service, the CLI and the HTTP problem documents.
// A code is stable API: testers, ops tooling and the KMS match on it, so codes are never
// renamed or reused; add new ones instead. `status` is the HTTP status the tester API and
// the local IPC answer with; `retry` tells a client whether asking again can help.

export interface ErrorSpec {
  readonly status: number;
  readonly title: string;
  readonly retry: boolean;
}

const spec = (status: number, title: string, retry = false): ErrorSpec => ({ status, title, retry });

export const CATALOGUE = Object.freeze({
  // configuration and start-up
  PKS_CONFIG_INVALID: spec(500, 'configuration is invalid'),
  PKS_CONFIG_UNREADABLE: spec(500, 'configuration file cannot be read'),
  PKS_CREDENTIAL_MISSING: spec(500, 'a required credential is missing'),

  // input validation (any caller)
  PKS_BAD_REQUEST: spec(400, 'request is malformed'),
  PKS_BAD_HEX: spec(400, 'value is not hex of the expected length'),
  PKS_OUT_OF_RANGE: spec(400, 'value is out of range'),
  PKS_TOO_LARGE: spec(413, 'request is too large'),
  PKS_NOT_FOUND: spec(404, 'no such object'),
  PKS_CONFLICT: spec(409, 'request conflicts with the current state'),

  // local IPC
  PKS_IPC_FORBIDDEN: spec(403, 'caller is not allowed this verb'),
  PKS_IPC_UNKNOWN_VERB: spec(404, 'no such verb'),
  PKS_IPC_TIMEOUT: spec(504, 'local service did not answer in time', true),
  PKS_IPC_UNAVAILABLE: spec(503, 'local service is not reachable', true),
  PKS_IPC_PROTOCOL: spec(502, 'local service answered out of protocol', true),

  // vault / HSM (fail closed)
  PKS_HSM_MODULE: spec(503, 'PKCS#11 module cannot be loaded', true),
  PKS_HSM_TOKEN: spec(503, 'HSM token not found', true),
  PKS_HSM_LOGIN: spec(503, 'HSM login failed', true),
  PKS_HSM_KEY_MISSING: spec(503, 'HSM key is missing', true),
  PKS_HSM_KEY_POLICY: spec(500, 'HSM key has unsafe attributes'),
  PKS_HSM_FAILURE: spec(503, 'HSM operation failed', true),
  PKS_SEAL_INVALID: spec(422, 'sealed record does not open under its id'),
  PKS_KEY_UNKNOWN: spec(404, 'no such named key'),

  // SHE memory update protocol
  PKS_SHE_INVALID: spec(400, 'SHE parameters are invalid'),
  PKS_SHE_PROOF_MISMATCH: spec(422, 'ECU proof M4/M5 does not match'),

  // key buffer
  PKS_POOL_UNKNOWN: spec(404, 'no such pool'),
  PKS_POOL_EMPTY: spec(503, 'pool has no available key', true),
  PKS_POOL_FORBIDDEN: spec(403, 'tester is not allowed this pool'),
  PKS_STATE_INVALID: spec(409, 'key is not in a state that allows this'),
  PKS_BATCH_INVALID: spec(422, 'key batch is malformed'),
  PKS_BATCH_SIGNATURE: spec(422, 'key batch signature does not verify'),
  PKS_BATCH_NOT_FOR_US: spec(422, 'key batch is addressed to another box'),
  PKS_AUDIT_BROKEN: spec(500, 'audit chain does not verify'),
  PKS_STORE_FULL: spec(507, 'storage is full', true),
  PKS_STORE_FAILURE: spec(503, 'storage failure', true),
  // issuance (issue 10): counters, open reservations, finished ECUs
  PKS_SHE_COUNTER_EXHAUSTED: spec(409, 'SHE counter of this ECU slot is at its 28-bit limit'),
  PKS_RESERVATIONS_OPEN: spec(429, 'tester holds too many unconfirmed reservations', true),
  PKS_RESERVED_BY_OTHER: spec(409, 'ECU has an open reservation of another tester'),
  PKS_ALREADY_INJECTED: spec(409, 'ECU already holds the key of this pool'),

  // tester API
  PKS_AUTH_REQUIRED: spec(401, 'client certificate required'),
  PKS_TESTER_UNKNOWN: spec(403, 'tester is not registered or revoked'),
  PKS_TESTER_EXPIRED: spec(403, 'tester authorization has expired'),
  PKS_RATE_LIMITED: spec(429, 'too many requests', true),
  PKS_QUOTA_EXCEEDED: spec(429, 'tester quota exceeded', true),
  PKS_CSR_INVALID: spec(400, 'certificate signing request is invalid'),
  PKS_SERVICE_UNAVAILABLE: spec(503, 'service is not ready', true),
  // the tester API's HTTP/TLS layer (services/tester-api/http-errors.ts)
  PKS_URI_TOO_LONG: spec(414, 'request target is too long'),
  PKS_HEADERS_TOO_LARGE: spec(431, 'request header fields are too large'),
  PKS_REQUEST_TIMEOUT: spec(408, 'request was not received in time', true),
  PKS_HTTP_MALFORMED: spec(400, 'request is not valid HTTP/1.1'),
  PKS_TOO_MANY_CONNECTIONS: spec(503, 'too many connections', true),

  // uplink / KMS / commands
  PKS_COMMAND_SIGNATURE: spec(403, 'command signature does not verify'),
  PKS_COMMAND_STALE: spec(403, 'command is expired or replayed'),
  PKS_COMMAND_INVALID: spec(400, 'command is malformed'),
  PKS_UPLINK_DOWN: spec(503, 'KMS link is down', true),
  // what the KMS sends, signed by its batch signer (appliance/kms-message.ts)
  PKS_KMS_SIGNATURE: spec(403, 'KMS message is not signed by the pinned KMS CA'),
  PKS_KMS_MESSAGE_INVALID: spec(400, 'KMS message is malformed'),
  // uplink state unreadable: commands refused until the KMS re-synchronises the box
  PKS_SAFE_MODE: spec(503, 'uplink is in safe mode until the KMS re-synchronises it', true),

  // updates (services/updater): every refusal changes nothing, the booted slot stays
  PKS_UPDATE_DOWNGRADE: spec(409, 'bundle is older than the version floor or the running version'),
  PKS_UPDATE_SIGNATURE: spec(422, 'bundle signature does not verify against the maintenance keyring'),
  PKS_UPDATE_INCOMPATIBLE: spec(422, 'bundle is for another kind of system'),
  PKS_UPDATE_CORRUPT: spec(422, 'bundle is truncated or corrupted'),
  PKS_UPDATE_MANIFEST: spec(422, 'update manifest is malformed or not signed by the KMS'),
  PKS_UPDATE_FLOOR: spec(503, 'version floor in the TPM cannot be read or raised', true),
  PKS_UPDATE_BUSY: spec(409, 'another update is in progress', true),
  PKS_UPDATE_DRAINING: spec(503, 'box is draining for an update', true),
  PKS_UPDATE_DOWNLOAD: spec(503, 'bundle download failed', true),
  PKS_UPDATE_INSTALL_FAILED: spec(500, 'bundle could not be installed; the booted slot stays'),
  PKS_UPDATE_HEALTH_FAILED: spec(500, 'new slot failed its health check; the box fell back'),
  PKS_UPDATE_INTERRUPTED: spec(500, 'update was interrupted (power cut); the box stayed on a good slot'),
  PKS_UPDATE_MEASUREMENT: spec(422, "bundle's application measurement is not authorised (no, altered or foreign signed manifest, or not this bundle's)"),
  PKS_DATA_FORMAT_NEWER: spec(500, 'data on the data partition is in a newer format than this software reads'),

  // clusters and decommissioning (issue 16 §2, §3)
  PKS_DECOMMISSIONED: spec(403, 'box is decommissioned'),
  PKS_ZEROIZE_REFUSED: spec(409, 'zeroize refused: the final records cannot reach the KMS (use --force to zeroize anyway)'),
  PKS_ZEROIZE_UNCONFIRMED: spec(400, 'zeroize needs the box name typed back (or --yes)'),

  // sentinel / mail
  PKS_MAIL_FAILED: spec(503, 'alert mail could not be sent', true),

  // measured boot and attestation (issue 12; fail closed)
  PKS_TPM_UNSEAL: spec(503, 'sealed secret does not open in this boot state'),
  PKS_TAMPERED: spec(503, 'application measurement differs from the provisioned value', true),
  PKS_ATTEST_UNTRUSTED: spec(403, 'box attestation failed'),
  PKS_ATTEST_STALE: spec(403, 'attestation nonce is unknown, used or expired'),
  PKS_ATTEST_REQUIRED: spec(403, 'box has not attested within the window'),
  // ECU unlock tokens (services/unlock)
  PKS_UNLOCK_USER_UNKNOWN: spec(403, 'not an onboarded unlock user'),
  PKS_UNLOCK_REVOKED: spec(403, 'unlock access or certificate is revoked'),
  PKS_UNLOCK_EXPIRED: spec(403, 'unlock access or certificate has expired'),
  PKS_UNLOCK_FORBIDDEN: spec(403, 'role does not allow this'),
  PKS_UNLOCK_LIFETIME: spec(400, 'token lifetime is over the role maximum'),
  PKS_UNLOCK_APPROVAL: spec(409, 'approval not allowed (same admin twice, own request, or already decided)'),
  PKS_UNLOCK_CSRF: spec(403, 'request lacks the console anti-forgery proof'),
  PKS_UNLOCK_TOKEN_INVALID: spec(422, 'unlock token is malformed'),
  // ECU protocols (DoIP, ISO-TP, UDS) and pks-inject: what the ECU side sent or failed to send
  PKS_DOIP_HEADER: spec(400, 'DoIP header is malformed (version pattern)'),
  PKS_DOIP_LENGTH: spec(400, 'DoIP payload length is wrong for its type'),
  PKS_DOIP_UNKNOWN_TYPE: spec(400, 'DoIP payload type is unknown'),
  PKS_DOIP_TOO_LARGE: spec(413, 'DoIP message is larger than allowed'),
  PKS_DOIP_NACK: spec(502, 'DoIP entity refused the message (NACK)'),
  PKS_DOIP_ROUTING_DENIED: spec(403, 'DoIP routing activation was denied'),
  PKS_DOIP_TIMEOUT: spec(504, 'DoIP entity did not answer in time', true),
  PKS_DOIP_CLOSED: spec(503, 'DoIP connection closed', true),
  PKS_ISOTP_FRAME: spec(400, 'ISO-TP frame is malformed'),
  PKS_ISOTP_SEQUENCE: spec(400, 'ISO-TP frame is out of sequence'),
  PKS_ISOTP_TIMEOUT: spec(504, 'ISO-TP peer did not answer in time', true),
  PKS_ISOTP_OVERFLOW: spec(413, 'ISO-TP message too large for the receiver'),
  PKS_CAN_UNAVAILABLE: spec(503, 'CAN interface is not available'),
  PKS_UDS_NEGATIVE: spec(502, 'ECU answered with a UDS negative response'),
  PKS_UDS_PROTOCOL: spec(502, 'ECU answered out of the UDS protocol'),
  PKS_UDS_TIMEOUT: spec(504, 'ECU did not answer the UDS request in time', true),
  PKS_UDS_MAPPING_INVALID: spec(400, 'UDS mapping of an ECU type is invalid'),

  // pksctl setup (issue 16): bad answers change nothing; a failed step is resumed by running setup again
  PKS_SETUP_ANSWERS: spec(400, 'setup answers are invalid'),
  PKS_SETUP_RESUME: spec(409, 'the setup journal was started with other answers'),
  PKS_SETUP_STEP: spec(503, 'a setup step failed; run setup again to resume', true),

  // anything we did not foresee: never leak internals, say so
  PKS_INTERNAL: spec(500, 'internal error'),
} satisfies Record<string, ErrorSpec>);

export type ErrorCode = keyof typeof CATALOGUE;

export class PksError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retry: boolean;
  /** Safe, non-secret detail for the caller (for example the offending field). */
  readonly detail: string;

  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown }) {
    const s = CATALOGUE[code];
    super(`${code}: ${detail ?? s.title}`, options);
    this.name = 'PksError';
    this.code = code;
    this.status = s.status;
    this.retry = s.retry;
    this.detail = detail ?? s.title;
  }

  toJSON(): { code: ErrorCode; status: number; title: string; detail: string; retry: boolean } {
    return { code: this.code, status: this.status, title: CATALOGUE[this.code].title, detail: this.detail, retry: this.retry };
  }
}

export const pksError = (code: ErrorCode, detail?: string, cause?: unknown): PksError =>
  new PksError(code, detail, cause === undefined ? undefined : { cause });

export const isPksError = (e: unknown): e is PksError => e instanceof PksError;

export function isErrorCode(c: unknown): c is ErrorCode {
  return typeof c === 'string' && Object.prototype.hasOwnProperty.call(CATALOGUE, c);
}

/** Turns anything thrown into a PksError without leaking internals of foreign errors. */
export function asPksError(e: unknown): PksError {
  if (e instanceof PksError) return e;
  return new PksError('PKS_INTERNAL', undefined, { cause: e });
}

/** RFC 9457 problem details carrying our code. */
export function problem(e: PksError, instance?: string): Record<string, unknown> {
  return {
    type: `urn:pks:error:${e.code}`,
    title: CATALOGUE[e.code].title,
    status: e.status,
    detail: e.detail,
    code: e.code,
    retry: e.retry,
    ...(instance ? { instance } : {}),
  };
}
