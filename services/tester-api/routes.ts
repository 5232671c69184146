// The tester API's routes as one table of schemas: app.ts registers them with fastify (which
// validates every input against them) and openapi.ts turns the same table into the OpenAPI
// document, so the documented contract and the enforced one cannot drift apart.
import { CERT_PROFILE, ID, POOL, hex } from '../../appliance/schema.js';

export type RouteId = 'she-reserve' | 'she-confirm' | 'she-fail' | 'she-relay' | 'history' | 'ecu-certificate' | 'openapi' | 'health';

export interface RouteSpec {
  id: RouteId;
  method: 'GET' | 'POST';
  url: string;
  summary: string;
  /**
   * tester: mTLS plus a registered, unexpired tester, asked of the keystore first; granted: the
   * same, checked by the keystore inside the one call the route makes (reserve, confirm: no
   * separate tester-get on the issuance path); mtls: a certificate from the tester CA is enough
   */
  auth: 'tester' | 'granted' | 'mtls';
  bodyLimit?: number;
  schema: {
    body?: Record<string, unknown>;
    params?: Record<string, unknown>;
    querystring?: Record<string, unknown>;
    response: { 200: Record<string, unknown> };
  };
  /** problem codes this route answers besides the common ones */
  errors: readonly string[];
}

export const BODY_LIMIT = 4 * 1024;
export const CSR_BODY_LIMIT = 16 * 1024;

const obj = (properties: Record<string, unknown>, required = Object.keys(properties)) => ({
  type: 'object',
  additionalProperties: false,
  required,
  properties,
});

const STATE = { type: 'string', enum: ['AVAILABLE', 'RESERVED', 'INJECTED', 'REPORTED', 'BURNED'] } as const;
const PACKAGE_PARAMS = obj({ packageId: ID });
const UID = { ...hex(15), description: 'ECU UID, 15 bytes (120 bits) as hex' };

export const ROUTES: readonly RouteSpec[] = [
  {
    id: 'she-reserve',
    method: 'POST',
    url: '/v1/she/packages',
    summary: 'The SHE key package (M1-M3) for the ECU in front of the tester; a retry for the same pool and ECU gets the same package',
    auth: 'granted',
    schema: {
      body: obj({ pool: { ...POOL, description: '<oem>.<ecu type>.<slot>' }, uid: UID }),
      response: {
        200: obj({
          packageId: { type: 'string' },
          pool: { type: 'string' },
          uid: { type: 'string' },
          keyId: { type: 'integer' },
          authKeyId: { type: 'integer' },
          counter: { type: 'integer' },
          flags: { type: 'integer' },
          m1: { type: 'string', description: 'hex, 16 bytes' },
          m2: { type: 'string', description: 'hex, 32 bytes' },
          m3: { type: 'string', description: 'hex, 16 bytes' },
          reused: { type: 'boolean', description: 'true when this answers a retry of an earlier reservation' },
        }),
      },
    },
    errors: [
      'PKS_POOL_FORBIDDEN', 'PKS_POOL_UNKNOWN', 'PKS_POOL_EMPTY', 'PKS_QUOTA_EXCEEDED', 'PKS_STATE_INVALID',
      'PKS_RESERVATIONS_OPEN', 'PKS_RESERVED_BY_OTHER', 'PKS_ALREADY_INJECTED', 'PKS_SHE_COUNTER_EXHAUSTED',
    ],
  },
  {
    id: 'she-confirm',
    method: 'POST',
    url: '/v1/she/packages/:packageId/confirm',
    summary: "The ECU's proof M4/M5 for a package; a mismatch burns the key (422 PKS_SHE_PROOF_MISMATCH)",
    auth: 'granted',
    schema: {
      params: PACKAGE_PARAMS,
      body: obj({ m4: { ...hex(32), description: 'hex, 32 bytes' }, m5: { ...hex(16), description: 'hex, 16 bytes' } }),
      response: { 200: obj({ packageId: { type: 'string' }, state: STATE, verified: { type: 'boolean' } }) },
    },
    errors: ['PKS_SHE_PROOF_MISMATCH', 'PKS_NOT_FOUND', 'PKS_STATE_INVALID'],
  },
  {
    id: 'she-fail',
    method: 'POST',
    url: '/v1/she/packages/:packageId/fail',
    summary: 'The injection of a package failed; its key is burned and never issued again',
    auth: 'tester',
    schema: {
      params: PACKAGE_PARAMS,
      body: obj({ reason: { type: 'string', minLength: 1, maxLength: 200, pattern: '^[\\x20-\\x7e]+$', description: 'printable ASCII' } }),
      response: { 200: obj({ packageId: { type: 'string' }, state: { type: 'string', enum: ['BURNED'] } }) },
    },
    errors: ['PKS_NOT_FOUND', 'PKS_STATE_INVALID'],
  },
  {
    id: 'she-relay',
    method: 'POST',
    url: '/v1/she/relayed-proofs',
    summary:
      "Issue 16 §2 (clusters): the ECU's proof M4/M5 for a package of another box of this plant that cannot take it (down); this box forwards it to the KMS, which checks it against the key it sent there. No package is issued for that ECU slot",
    auth: 'tester',
    schema: {
      body: obj({
        origin: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$', description: 'the box that issued the package' },
        packageId: { ...ID, description: 'the package id that box answered' },
        pool: POOL,
        uid: UID,
        counter: { type: 'integer', minimum: 0, maximum: 0x0fffffff, description: 'the SHE counter of that package' },
        m4: { ...hex(32), description: 'hex, 32 bytes' },
        m5: { ...hex(16), description: 'hex, 16 bytes' },
      }),
      response: { 200: obj({ relayed: { type: 'boolean' } }) },
    },
    errors: ['PKS_POOL_FORBIDDEN'],
  },
  {
    id: 'history',
    method: 'GET',
    url: '/v1/history',
    summary: "The calling tester's own most recent packages, newest first",
    auth: 'tester',
    schema: {
      querystring: obj({ limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 } }, []),
      response: {
        200: obj({
          items: {
            type: 'array',
            items: obj({
              packageId: { type: 'string' },
              pool: { type: 'string' },
              uid: { type: 'string' },
              state: STATE,
              station: { type: 'string' },
              reservedAt: { type: 'string', format: 'date-time' },
              updatedAt: { type: 'string', format: 'date-time' },
            }),
          },
        }),
      },
    },
    errors: [],
  },
  {
    id: 'ecu-certificate',
    method: 'POST',
    url: '/v1/ecu/certificates',
    summary:
      "An ECU certificate from the ECU's CSR (P-256, subject CN = the UID in hex) under a certificate profile the tester is granted; recorded by the key store, built and signed by the vault from the profile; counts against the tester's new-issuance quota",
    auth: 'tester',
    bodyLimit: CSR_BODY_LIMIT,
    schema: {
      body: obj({
        uid: UID,
        profile: { ...CERT_PROFILE, description: 'certificate profile, <oem>.<ecu type>' },
        csr: { type: 'string', minLength: 64, maxLength: 12 * 1024, description: 'PEM CERTIFICATE REQUEST' },
      }),
      response: {
        200: obj({
          certificate: { type: 'string', description: 'PEM' },
          serial: { type: 'string', description: 'hex' },
        }),
      },
    },
    errors: ['PKS_CSR_INVALID', 'PKS_POOL_FORBIDDEN', 'PKS_QUOTA_EXCEEDED', 'PKS_NOT_FOUND'],
  },
  {
    id: 'openapi',
    method: 'GET',
    url: '/v1/openapi.json',
    summary: 'This document',
    auth: 'mtls',
    schema: { response: { 200: { type: 'object', additionalProperties: true } } },
    errors: [],
  },
  {
    id: 'health',
    method: 'GET',
    url: '/v1/health',
    summary: 'Whether the service can serve (the key store is reachable)',
    auth: 'mtls',
    schema: { response: { 200: obj({ ready: { type: 'boolean' } }) } },
    errors: [],
  },
];

/** Codes any tester route can answer. */
export const COMMON_ERRORS = [
  'PKS_BAD_REQUEST',
  'PKS_BAD_HEX',
  'PKS_TOO_LARGE',
  'PKS_TESTER_UNKNOWN',
  'PKS_TESTER_EXPIRED',
  'PKS_RATE_LIMITED',
  'PKS_SERVICE_UNAVAILABLE',
  'PKS_INTERNAL',
] as const;
