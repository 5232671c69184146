// The tester station's side of the tester API (services/tester-api/routes.ts): one keep-alive
// mTLS connection to the box, the three calls an injection needs, problem documents turned back
// into our coded errors so the injector can tell "retry" from "stop".
import { Client } from 'undici';
import { isErrorCode, pksError, PksError } from '../errors.js';
import { parseJsonOr } from '../json.js';
import type { RelayedProof } from '../contracts/keystore.js';

export interface SheP {
  packageId: string;
  pool: string;
  uid: string;
  keyId: number;
  m1: string;
  m2: string;
  m3: string;
  /** the SHE counter the box chose for this ECU slot (M2 carries it) */
  counter?: number;
  reused: boolean;
}

export type RelayInput = RelayedProof;

export interface BoxApi {
  reserve(pool: string, uid: string): Promise<SheP>;
  confirm(packageId: string, m4: Buffer, m5: Buffer): Promise<{ state: string; verified: boolean }>;
  fail(packageId: string, reason: string): Promise<{ state: string }>;
  /** issue 16 §2: hands another box's proof to this box for the KMS (cluster.ts) */
  relay?(r: RelayInput): Promise<{ relayed: boolean }>;
  close(): Promise<void>;
}

export interface BoxOptions {
  url: string;
  ca: string;
  cert: string;
  key: string;
  servername?: string;
  timeoutMs?: number;
}

export function boxClient(o: BoxOptions): BoxApi {
  const c = new Client(o.url, {
    connect: { ca: o.ca, cert: o.cert, key: o.key, servername: o.servername ?? 'localhost' },
    keepAliveTimeout: 60_000,
    headersTimeout: o.timeoutMs ?? 15_000,
    bodyTimeout: o.timeoutMs ?? 15_000,
  });
  const call = async <T>(path: string, body: unknown): Promise<T> => {
    let status: number;
    let text: string;
    try {
      const r = await c.request({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      status = r.statusCode;
      text = await r.body.text();
    } catch (e) {
      throw pksError('PKS_SERVICE_UNAVAILABLE', `box ${o.url}: ${(e as Error).message}`);
    }
    const doc = parseJsonOr('PKS_SERVICE_UNAVAILABLE', `the box's answer (HTTP ${status})`, text) as Record<string, unknown>;
    if (status !== 200) {
      const code = isErrorCode(doc.code) ? doc.code : 'PKS_INTERNAL';
      throw new PksError(code, typeof doc.detail === 'string' ? doc.detail : `HTTP ${status}`);
    }
    return doc as T;
  };
  return {
    reserve: (pool, uid) => call<SheP>('/v1/she/packages', { pool, uid }),
    confirm: (id, m4, m5) => call(`/v1/she/packages/${encodeURIComponent(id)}/confirm`, { m4: m4.toString('hex'), m5: m5.toString('hex') }),
    fail: (id, reason) => call(`/v1/she/packages/${encodeURIComponent(id)}/fail`, { reason: reason.replace(/[^\x20-\x7e]/g, '?').slice(0, 200) || 'injection failed' }),
    relay: (r) => call('/v1/she/relayed-proofs', r),
    close: () => c.close(),
  };
}
