// The keystore's IPC contract: what its callers (tester-api, uplink, sentinel, pksctl) send
// and get back over /run/pks/keystore/<caller>.sock (POST /v1/<verb>, JSON). Binary values
// are hex (SHE) or base64 (everything else).

export type KeyState = 'AVAILABLE' | 'RESERVED' | 'INJECTED' | 'REPORTED' | 'BURNED';

/** tester-api → keystore: the SHE package for the ECU in front of a tester (idempotent per pool+uid+slot). */
export interface ReserveRequest {
  pool: string; // "<oem>.<ecuType>.<slot>"
  uid: string; // hex, 15 bytes
  tester: string; // tester CN
  /** the tester's station; the keystore takes it from its registry, and refuses one that differs */
  station?: string;
}
export interface ReserveResponse {
  packageId: string;
  pool: string;
  uid: string;
  keyId: number;
  authKeyId: number;
  counter: number;
  flags: number;
  m1: string;
  m2: string;
  m3: string;
  /** true when this is a retry that got the package reserved before */
  reused: boolean;
}

/** tester-api → keystore: the ECU's proof; a mismatch burns the key. */
export interface ConfirmRequest {
  packageId: string;
  tester: string;
  m4: string; // hex 32 bytes
  m5: string; // hex 16 bytes
}
export interface ConfirmResponse {
  packageId: string;
  state: KeyState; // INJECTED on success, BURNED on mismatch
  verified: boolean;
}

/** tester-api → keystore: the injection failed; the key is burned, never reissued. */
export interface FailRequest {
  packageId: string;
  tester: string;
  reason: string; // <= 200 chars, printable
}
export interface FailResponse {
  packageId: string;
  state: 'BURNED';
}

export interface HistoryRequest {
  tester: string;
  limit?: number; // default 50, max 500
}
export interface HistoryItem {
  packageId: string;
  pool: string;
  uid: string;
  state: KeyState;
  station: string;
  reservedAt: string;
  updatedAt: string;
}
export interface HistoryResponse {
  items: HistoryItem[];
}

export interface PoolStats {
  available: number;
  reserved: number;
  injected: number;
  reported: number;
  burned: number;
  minimum: number;
  reorder: number;
  /** burned / (injected + reported + burned), 0 when nothing issued */
  burnRate: number;
}
export interface StatsResponse {
  pools: Record<string, PoolStats>;
}

/**
 * tester-api → keystore: an ECU certificate, issued like a key (issue 9). The keystore checks
 * the tester's grant for the profile and the CSR, records the request on disk, then has the
 * vault build and sign the certificate from (UID, public key, profile).
 */
export interface EcuCertRequest {
  tester: string; // tester CN
  uid: string; // hex, 15 bytes
  profile: string; // "<oem>.<ecuType>"
  csr: string; // PEM PKCS#10, P-256, subject CN = uid
}
export interface EcuCertResponse {
  certificate: string; // PEM
  serial: string; // hex
  subject: string;
  notAfter: string;
}

/** The tester registry (kept by the keystore; the uplink revokes, pksctl enrols). */
export interface TesterRecord {
  cn: string;
  station: string;
  pools: string[];
  expiresAt: string; // ISO time the tester's grant ends
  revoked: boolean;
  /** ECU certificate profiles ("<oem>.<ecuType>") the tester may have certificates issued for */
  certProfiles?: string[];
}

// ---- uplink (and pksctl import) → keystore

/** One signed batch chunk (appliance/batch-format.ts SignedChunk), verified by the keystore. */
export interface ImportChunkRequest {
  chunk: { v: 1; payload: string; sig: string; cert: string };
}
export interface ImportChunkResponse {
  batchId: string;
  pool: string;
  chunk: number;
  chunks: number;
  /** records made AVAILABLE by this call (0 for a duplicate chunk) */
  imported: number;
  duplicate: boolean;
  /** every chunk of the batch has arrived */
  complete: boolean;
  /** chunk indexes still missing (at most 100 listed) */
  missing: number[];
}

/** Every kind of outbox item; the verification file and the vault's check of it take exactly these. */
// relayed-proof and release: issue 16 §2 (scripts/kms/cluster.ts)
export const OUTBOX_KINDS = ['injection', 'burn', 'alert', 'event', 'checkpoint', 'cert', 'unlock', 'relayed-proof', 'release'] as const;
export type OutboxKind = (typeof OUTBOX_KINDS)[number];
export interface OutboxItem {
  id: string; // monotonic, sortable
  kind: OutboxKind;
  at: string;
  body: Record<string, unknown>;
}
/** Oldest first; items stay until acknowledged. */
export interface OutboxPeekRequest {
  limit?: number; // default 500, max 5000
  after?: string; // id to continue after
}
export interface OutboxPeekResponse {
  items: OutboxItem[];
}
/** uplink → keystore: the next verification file, packed from flushed items, signed by the vault. */
export interface OutboxFileRequest {
  limit?: number; // default 5000
}
export interface OutboxFileResponse {
  fileId: string; // '' when the outbox is empty
  payload: string; // the file's payload text (services/uplink/verification.ts)
  sig: string; // base64 raw r||s by the audit key over verificationFileMessage(payload)
  ids: string[]; // the outbox ids in this file
}
/** uplink → keystore: items the KMS rejected (its ack's `rejected`); kept, never deleted. */
export interface OutboxRejectRequest {
  items: { id: string; code: string; detail: string }[];
}
/** Application-level acknowledgement from the KMS: deletes the items; injections become REPORTED. */
export interface OutboxAckRequest {
  ids: string[]; // max 5000
}
export interface OutboxAckResponse {
  acked: number;
  reported: number;
}
/** sentinel/uplink events to forward to the KMS. */
export interface OutboxPutRequest {
  kind: 'alert' | 'event';
  body: Record<string, unknown>; // <= 8 KiB JSON
}

/** ops command: pool quotas. */
export interface PoolSetRequest {
  pool: string;
  minimum: number;
  reorder: number;
  critical?: number;
}
export interface TesterPutRequest extends TesterRecord {}

/**
 * pksctl → keystore 'handover': an open reservation moves to another tester (a rework station),
 * named by package or by pool + ECU UID; audited with who ordered it and why. Answers
 * { packageId, tester, station }. Issuance answers of 'reserve' (issue 10):
 * PKS_RESERVED_BY_OTHER, PKS_ALREADY_INJECTED (detail names the package for its own tester),
 * PKS_RESERVATIONS_OPEN, PKS_QUOTA_EXCEEDED (detail "retry after N s"), PKS_SHE_COUNTER_EXHAUSTED.
 * Injection and burn outbox bodies carry `counter` (the SHE C_ID used); a late injection `late: true`.
 */
export interface HandoverRequest {
  packageId?: string;
  pool?: string;
  uid?: string;
  to: string;
  by: string;
  reason: string;
}
export interface TesterRevokeRequest {
  cn: string;
}

/**
 * A proof relayed by another box of the plant (issue 16 §2): the ECU took a key of box `origin`
 * that is gone; this box records and forwards it, the KMS checks it against the key it sent there.
 * What the tester sends; the keystore's verb adds who relayed it.
 */
export interface RelayedProof {
  origin: string;
  packageId: string;
  pool: string;
  uid: string;
  counter: number;
  m4: string;
  m5: string;
}
