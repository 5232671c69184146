// A keystore stand-in for tests of the keystore's callers: the real IPC server (startIpcServer)
// with the contract's verbs (appliance/contracts/keystore.ts), backed by a tiny in-memory map. It
// records every call so a test can prove that bad input never reached the keystore.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { startIpcServer, type IpcServer } from '../../appliance/ipc.js';
import { pksError } from '../../appliance/errors.js';
import { silentLogger } from '../../appliance/log.js';
import { ID, NAME, POOL, hex } from '../../appliance/schema.js';
import type {
  ConfirmRequest,
  EcuCertRequest,
  ConfirmResponse,
  FailRequest,
  HistoryItem,
  KeyState,
  ReserveRequest,
  ReserveResponse,
  TesterRecord,
} from '../../appliance/contracts/keystore.js';

export interface StubPackage extends ReserveResponse {
  tester: string;
  station: string;
  state: KeyState;
  /** the proof an honest ECU would answer */
  m4: string;
  m5: string;
  reservedAt: string;
  updatedAt: string;
}

export interface KeystoreStub {
  /** the runtime dir whose keystore/tester-api.sock the client should use */
  runDir: string;
  server: IpcServer;
  calls: { verb: string; body: unknown }[];
  testers: Map<string, TesterRecord>;
  packages: Map<string, StubPackage>;
  /** ECU certificate requests that reached the keystore */
  certs: EcuCertRequest[];
  /** per pool: how many keys are left (unlimited when absent) */
  stock: Map<string, number>;
  /** pools the stub knows; others answer PKS_POOL_UNKNOWN */
  pools: Set<string>;
  /** verbs that answer this error instead of working (to simulate failures) */
  failing: Map<string, string>;
  callsOf(verb: string): unknown[];
  close(): Promise<void>;
}

const obj = (properties: Record<string, unknown>, required = Object.keys(properties)) => ({ type: 'object', additionalProperties: false, required, properties });

export async function startKeystoreStub(runDir: string, opts: { pools?: string[] } = {}): Promise<KeystoreStub> {
  const calls: KeystoreStub['calls'] = [];
  const testers = new Map<string, TesterRecord>();
  const packages = new Map<string, StubPackage>();
  const byEcu = new Map<string, string>();
  const certs: EcuCertRequest[] = [];
  const stock = new Map<string, number>();
  const pools = new Set(opts.pools ?? []);
  const failing = new Map<string, string>();
  let seq = 0;

  const record = (verb: string, body: unknown): void => {
    calls.push({ verb, body });
    const code = failing.get(verb);
    if (code) throw pksError(code as never, 'stub failure');
  };
  // as the keystore's grant.ts: reserve and confirm check the tester's grant themselves
  const grant = (cn: string, pool?: string): TesterRecord => {
    const t = testers.get(cn);
    if (!t) throw pksError('PKS_TESTER_UNKNOWN', 'tester is not registered');
    if (t.revoked) throw pksError('PKS_TESTER_UNKNOWN', 'tester is revoked');
    if (!(Date.parse(t.expiresAt) > Date.now())) throw pksError('PKS_TESTER_EXPIRED', 'tester authorization has expired');
    if (pool !== undefined && !t.pools.includes(pool)) throw pksError('PKS_POOL_FORBIDDEN', `tester may not use pool '${pool}'`);
    return t;
  };
  const owned = (packageId: string, tester: string): StubPackage => {
    const p = packages.get(packageId);
    if (!p || p.tester !== tester) throw pksError('PKS_NOT_FOUND', `no package '${packageId}' for this tester`);
    return p;
  };

  const server = await startIpcServer({
    service: 'keystore',
    dir: path.join(runDir, 'keystore'),
    log: silentLogger,
    callers: { 'tester-api': ['reserve', 'confirm', 'fail', 'history', 'stats', 'ecu-cert', 'tester-get'] },
    verbs: {
      reserve: {
        request: obj({ pool: POOL, uid: hex(15), tester: NAME, station: NAME }, ['pool', 'uid', 'tester']),
        handler: (b: ReserveRequest): ReserveResponse => {
          record('reserve', b);
          const t = grant(b.tester, b.pool);
          if (b.station !== undefined && b.station !== t.station) throw pksError('PKS_BAD_REQUEST', 'station is not the tester\'s');
          if (!pools.has(b.pool)) throw pksError('PKS_POOL_UNKNOWN', `no pool '${b.pool}'`);
          const prev = byEcu.get(`${b.pool}/${b.uid}`);
          if (prev) {
            const p = packages.get(prev)!;
            if (p.state !== 'RESERVED') throw pksError('PKS_STATE_INVALID', 'the key for this ECU was already used');
            const { tester: _t, station: _s, state: _st, m4: _4, m5: _5, reservedAt: _r, updatedAt: _u, ...res } = p;
            return { ...res, reused: true };
          }
          const left = stock.get(b.pool);
          if (left !== undefined) {
            if (left <= 0) throw pksError('PKS_POOL_EMPTY', `pool '${b.pool}' has no available key`);
            stock.set(b.pool, left - 1);
          }
          const now = new Date().toISOString();
          const p: StubPackage = {
            packageId: `pkg-${++seq}`,
            pool: b.pool,
            uid: b.uid,
            keyId: 4,
            authKeyId: 1,
            counter: seq,
            flags: 0,
            m1: randomBytes(16).toString('hex'),
            m2: randomBytes(32).toString('hex'),
            m3: randomBytes(16).toString('hex'),
            reused: false,
            tester: b.tester,
            station: t.station,
            state: 'RESERVED',
            m4: randomBytes(32).toString('hex'),
            m5: randomBytes(16).toString('hex'),
            reservedAt: now,
            updatedAt: now,
          };
          packages.set(p.packageId, p);
          byEcu.set(`${b.pool}/${b.uid}`, p.packageId);
          const { tester: _t, station: _s, state: _st, m4: _4, m5: _5, reservedAt: _r, updatedAt: _u, ...res } = p;
          return res;
        },
      },
      confirm: {
        request: obj({ packageId: ID, tester: NAME, m4: hex(32), m5: hex(16) }),
        handler: (b: ConfirmRequest): ConfirmResponse => {
          record('confirm', b);
          grant(b.tester);
          const p = owned(b.packageId, b.tester);
          if (p.state === 'INJECTED' && p.m4 === b.m4 && p.m5 === b.m5) return { packageId: p.packageId, state: p.state, verified: true };
          if (p.state !== 'RESERVED') throw pksError('PKS_STATE_INVALID', `package is ${p.state}`);
          const ok = p.m4 === b.m4 && p.m5 === b.m5;
          p.state = ok ? 'INJECTED' : 'BURNED';
          p.updatedAt = new Date().toISOString();
          return { packageId: p.packageId, state: p.state, verified: ok };
        },
      },
      fail: {
        request: obj({ packageId: ID, tester: NAME, reason: { type: 'string', minLength: 1, maxLength: 200 } }),
        handler: (b: FailRequest) => {
          record('fail', b);
          const p = owned(b.packageId, b.tester);
          if (p.state !== 'RESERVED' && p.state !== 'BURNED') throw pksError('PKS_STATE_INVALID', `package is ${p.state}`);
          p.state = 'BURNED';
          p.updatedAt = new Date().toISOString();
          return { packageId: p.packageId, state: 'BURNED' };
        },
      },
      history: {
        request: obj({ tester: NAME, limit: { type: 'integer', minimum: 1, maximum: 500 } }, ['tester']),
        handler: (b: { tester: string; limit?: number }) => {
          record('history', b);
          const items: HistoryItem[] = [...packages.values()]
            .filter((p) => p.tester === b.tester)
            .reverse()
            .slice(0, b.limit ?? 50)
            .map((p) => ({ packageId: p.packageId, pool: p.pool, uid: p.uid, state: p.state, station: p.station, reservedAt: p.reservedAt, updatedAt: p.updatedAt }));
          return { items };
        },
      },
      stats: {
        request: obj({}),
        handler: () => {
          record('stats', {});
          return { pools: {} };
        },
      },
      'ecu-cert': {
        request: obj({ tester: NAME, uid: hex(15), profile: { type: 'string', maxLength: 65 }, csr: { type: 'string', maxLength: 12 * 1024 } }),
        maxBytes: 16 * 1024,
        handler: (b: EcuCertRequest) => {
          record('ecu-cert', b);
          certs.push(b);
          // the real keystore has the vault build the certificate; tests of that use it
          return { certificate: '-----BEGIN CERTIFICATE-----\nstub\n-----END CERTIFICATE-----\n', serial: '40'.repeat(16), subject: `CN=${b.uid.toUpperCase()}`, notAfter: new Date(Date.now() + 86_400_000).toISOString() };
        },
      },
      'tester-get': {
        request: obj({ cn: NAME }),
        handler: (b: { cn: string }): TesterRecord => {
          record('tester-get', b);
          const t = testers.get(b.cn);
          if (!t) throw pksError('PKS_TESTER_UNKNOWN', 'tester is not registered');
          return t;
        },
      },
    },
  });
  return {
    runDir,
    server,
    calls,
    testers,
    packages,
    certs,
    stock,
    pools,
    failing,
    callsOf: (verb) => calls.filter((c) => c.verb === verb).map((c) => c.body),
    close: () => server.close(),
  };
}
