// The unlock records' contract: what the keystore keeps for the unlock service (users,
// onboarding requests, certificates, tokens, the log) and answers over
// /run/pks/keystore/unlock.sock (services/keystore/unlock-log.ts), and what pksctl and the
// console show. Times are ISO strings, binary values lowercase hex.

export interface UnlockCert {
  serial: string;
  notAfter: string;
  revoked: boolean;
}
export interface UnlockUser {
  cn: string;
  role: string;
  state: 'ACTIVE' | 'REVOKED';
  /** access ends by itself at this time (ISO) */
  expiresAt: string;
  onboardedAt: string;
  approvedBy: string[];
  certs: UnlockCert[];
  revokedAt?: string;
  revokedBy?: string;
}
export interface UnlockRequest {
  id: string;
  cn: string;
  role: string;
  accessSeconds: number;
  requestedBy: string;
  at: string;
  approvalsNeeded: number;
  approvals: string[];
  state: 'PENDING' | 'APPROVED' | 'REJECTED';
  decidedAt?: string;
  reason?: string;
}
export interface UnlockTokenRecord {
  tokenId: string;
  cn: string;
  serial: string;
  role: string;
  ecuType: string;
  uid: string;
  challenge: string;
  permissions: string;
  notBefore: string;
  notAfter: string;
  tokenKey: string;
  at: string;
  auditSeq: number;
}
/** One line of `pksctl unlock log`: an audit entry of the unlock service, indexed. */
export interface UnlockLogEntry {
  seq: number;
  at: string;
  ev: string;
  cn: string;
  [k: string]: unknown;
}
