// A production line against the VM: each tester (own mTLS connection, certificates from the dev
// site) asks the tester API at 127.0.0.1:PORT for an ECU's SHE package, loads it into a
// simulated ECU and confirms with the ECU's proof, until it is killed (the power cut) or
// --ecus are done. Everything the box answered goes to the state directory, appended and
// flushed line by line so that a kill loses nothing the box said:
//   issued.log     "<packageId> <uid>"          every package the box handed out
//   confirmed.log  "<uid> <pool> <packageId>"   every package the box confirmed as INJECTED
// A request that fails (box rebooting, service restarting) is retried for the same ECU, which
// must get the same package back (idempotent reservation); a different one counts in
// reissued.log. A confirm whose answer was lost is sent again with the same proof.
// Usage: node --import tsx test/vm/inject.ts --state DIR --port P [--ecus N]
import { randomBytes } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from 'undici';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { POOL, TESTERS, masterKey, testerCred } from './site.js';

const { values } = parseArgs({ options: { state: { type: 'string' }, port: { type: 'string' }, ecus: { type: 'string' } }, strict: true });
if (!values.state || !values.port) throw new Error('usage: inject.ts --state DIR --port P [--ecus N]');
const state = values.state;
const url = `https://127.0.0.1:${Number(values.port)}`;
const ca = readFileSync(path.join(state, 'box-ca.crt'), 'utf8');
const master = masterKey(state);
const limit = values.ecus ? Number(values.ecus) : Infinity;
const log = (file: string, line: string): void => appendFileSync(path.join(state, file), line + '\n');

interface Pkg {
  packageId: string;
  m1: string;
  m2: string;
  m3: string;
  code?: string;
}

let started = 0;
let injected = 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function station(cn: string): Promise<void> {
  const cred = testerCred(cn);
  const newClient = () => new Client(url, { connect: { ca, key: cred.key, cert: cred.cert, servername: 'localhost', timeout: 10_000 }, keepAliveTimeout: 30_000, headersTimeout: 30_000, bodyTimeout: 30_000 });
  let c = newClient();
  const call = async <T>(p: string, body: unknown): Promise<{ status: number; body: T }> => {
    try {
      const r = await c.request({ method: 'POST', path: p, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const text = await r.body.text();
      return { status: r.statusCode, body: (text ? JSON.parse(text) : {}) as T };
    } catch (e) {
      await c.destroy().catch(() => undefined);
      c = newClient();
      throw e;
    }
  };
  while (started < limit) {
    started++;
    const uid = randomBytes(15);
    uid[0] = 0x10;
    const hex = uid.toString('hex');
    const ecu = new SheEcu(uid, master);
    let first: string | undefined;
    // the key is in the ECU once loaded: from then on only its confirm is left, sent again with
    // the same proof until the box answers (a lost answer to a confirm is a retry, as a real
    // tester does; loading the package again would be refused by the SHE: its slot moved on)
    let held: { packageId: string; m4: string; m5: string } | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        if (!held) {
          const r = await call<Pkg>('/v1/she/packages', { pool: POOL, uid: hex });
          if (r.status === 409 && r.body.code === 'PKS_ALREADY_INJECTED' && r.body.packageId) {
            // the box recorded this ECU's injection and says so (a confirm whose answer was lost)
            log('confirmed.log', `${hex} ${POOL} ${r.body.packageId}`);
            injected++;
            break;
          }
          if (r.status !== 200) {
            if (attempt > 0 && attempt % 20 === 0) process.stderr.write(`inject: ${cn}: reserve ${r.status} ${r.body.code ?? ''}\n`);
            await sleep(r.body.code === 'PKS_POOL_EMPTY' ? 1000 : 300);
            continue;
          }
          if (typeof r.body.packageId !== 'string' || ![r.body.m1, r.body.m2, r.body.m3].every((m) => typeof m === 'string' && /^[0-9a-f]+$/i.test(m))) {
            // a 200 that is not a package is the box's fault, and worth seeing: not logged as issued
            process.stderr.write(`inject: ${cn}: reserve 200 without a package: ${JSON.stringify(r.body).slice(0, 300)}\n`);
            await sleep(300);
            continue;
          }
          log('issued.log', `${r.body.packageId} ${hex}`);
          if (first && first !== r.body.packageId) log('reissued.log', `${hex} ${first} ${r.body.packageId}`);
          first ??= r.body.packageId;
          let proof;
          try {
            proof = ecu.loadKey(Buffer.from(r.body.m1, 'hex'), Buffer.from(r.body.m2, 'hex'), Buffer.from(r.body.m3, 'hex'));
          } catch (e) {
            // the SHE refused the load: a real tester reports it, and the ECU gets a fresh package
            process.stderr.write(`inject: ${cn}: ECU ${hex} refused ${r.body.packageId}: ${(e as Error).message}\n`);
            await call(`/v1/she/packages/${r.body.packageId}/fail`, { reason: 'ECU refused the load' });
            continue;
          }
          held = { packageId: r.body.packageId, m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') };
        }
        const k = await call<{ state?: string; verified?: boolean; code?: string }>(`/v1/she/packages/${held.packageId}/confirm`, { m4: held.m4, m5: held.m5 });
        if (k.status === 200 && k.body.state === 'INJECTED') {
          log('confirmed.log', `${hex} ${POOL} ${held.packageId}`);
          injected++;
          break;
        }
        process.stderr.write(`inject: ${cn}: confirm ${held.packageId} ${k.status} ${k.body.code ?? k.body.state ?? ''}\n`);
        // final for this package (burned, or not this tester's): the ECU gets a fresh one
        if (k.status === 404 || k.status === 409 || k.body.code === 'PKS_SHE_PROOF_MISMATCH') held = undefined;
        await sleep(300);
      } catch {
        await sleep(500); // the box is away (power cut, restart): same ECU, same step again
      }
    }
  }
  await c.close().catch(() => undefined);
}

const timer = setInterval(() => process.stderr.write(`inject: ${injected} injected\n`), 10_000);
timer.unref();
await Promise.all(TESTERS.map((cn) => station(cn)));
process.stderr.write(`inject: done, ${injected} injected\n`);
