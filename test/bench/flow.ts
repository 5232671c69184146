// One tester's injection over the tester API, as an EOL station does it: ask for the ECU's
// package, run CMD_LOAD_KEY on the (simulated) ECU, send its proof back.
import { Pool } from 'undici';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { EcuAnswers } from './ecu-answers.js';

export interface Cred {
  ca: string;
  cert: string;
  key: string;
}

/** A keep-alive mTLS pool with one connection per simulated tester. */
export function testerPool(port: number, cred: Cred, connections: number): Pool {
  return new Pool(`https://localhost:${port}`, {
    connections,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    connect: { ca: cred.ca, cert: cred.cert, key: cred.key, servername: 'localhost' },
  });
}

async function post<T>(pool: Pool, path: string, body: unknown): Promise<T> {
  const res = await pool.request({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.body.text();
  if (res.statusCode !== 200) {
    let code = '';
    try {
      code = (JSON.parse(text) as { code?: string }).code ?? '';
    } catch {
      /* not a problem document */
    }
    throw Object.assign(new Error(`${path.split('/').slice(0, 4).join('/')} answered ${res.statusCode} ${code}`), { code });
  }
  return JSON.parse(text) as T;
}

/** `ecu`: the master key (each ECU simulated in full) or precomputed answers (ecu-answers.ts). */
export function httpInjection(pool: Pool, poolId: string, ecu: Buffer | EcuAnswers, nextUid: () => string): () => Promise<void> {
  return async () => {
    const uid = nextUid();
    const p = await post<{ packageId: string; m1: string; m2: string; m3: string }>(pool, '/v1/she/packages', { pool: poolId, uid });
    let proof: { m4: string; m5: string };
    if (ecu instanceof EcuAnswers) proof = ecu.proof(p.packageId, uid);
    else {
      const m = new SheEcu(Buffer.from(uid, 'hex'), ecu).loadKey(Buffer.from(p.m1, 'hex'), Buffer.from(p.m2, 'hex'), Buffer.from(p.m3, 'hex'));
      proof = { m4: m.m4.toString('hex'), m5: m.m5.toString('hex') };
    }
    const c = await post<{ verified: boolean }>(pool, `/v1/she/packages/${encodeURIComponent(p.packageId)}/confirm`, proof);
    if (!c.verified) throw new Error('proof did not verify');
  };
}
