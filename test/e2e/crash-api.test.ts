// Crash safety through the tester API: testers inject over mTLS while the tester API and the
// keystore are killed with SIGKILL at random points and restarted. No key goes to two ECUs,
// no confirmed injection is lost, LMDB opens cleanly and the audit chain verifies.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createPublicKey, randomBytes } from 'node:crypto';
import path from 'node:path';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { LOAD_QUOTAS, startBox } from '../../scripts/plant/box.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { call } from '../../scripts/plant/line.js';
import { startTesterApi } from '../../scripts/plant/tester-api.js';
import { verifyAudit } from '../../services/keystore/audit.js';
import { openDbs } from '../../services/keystore/db.js';

const POOL = 'oem1.ecuA.4';
const TOTAL = Number(process.env.PKS_CRASH_API_ISSUANCES ?? 1000);
const TESTERS = 8;

interface Pkg {
  packageId: string;
  m1: string;
  m2: string;
  m3: string;
}

test(`SIGKILL of tester-api and keystore during ${TOTAL} injections over mTLS: nothing twice, nothing lost`, async () => {
  const master = randomBytes(16);
  const box = await startBox({ pools: [{ pool: POOL, minimum: 1, reorder: 1 }], checkpointEvery: 200, quotas: LOAD_QUOTAS });
  try {
    await box.importChunks(box.batch('crash-api', { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys('ca', TOTAL + 200) }));
    const testers = Array.from({ length: TESTERS }, (_, i) => ({ cn: `t${i}`, station: `s${i}`, pools: [POOL] }));
    const api = await startTesterApi({
      dir: path.join(box.base, 'tester-api'),
      runDir: box.runDir,
      logDir: box.logDir,
      testers,
      keystoreAdmin: box.keystore.client('pksctl'),
      vault: box.vault.client('tester-api'),
      limits: { requestsPerSecond: 10_000, burst: 10_000, newReservationsPerHour: 1_000_000, handshakesPerWindow: 100_000 },
    });
    const pkgToUid = new Map<string, string>();
    const confirmed = new Set<string>();
    const gaveUp: string[] = [];
    let next = 0;
    let retries = 0;
    let kills = 0;

    const worker = async (w: number): Promise<void> => {
      const c = api.client(api.testers[w]!);
      while (next < TOTAL) {
        const n = ++next;
        const uid = Buffer.alloc(15);
        uid.writeUInt32BE(n, 11);
        uid[0] = 0x20;
        const ecu = new SheEcu(uid, master);
        let proof: { m4: Buffer; m5: Buffer } | undefined;
        let done = false;
        for (let attempt = 0; attempt < 300 && !done; attempt++) {
          try {
            const r = await call<Pkg>(c, 'POST', '/v1/she/packages', { pool: POOL, uid: uid.toString('hex') });
            // confirmed before a crash, the answer was lost: the retry is told, with the package id
            const already = (r.body as { code?: string; packageId?: string });
            if (r.status === 409 && already.code === 'PKS_ALREADY_INJECTED' && pkgToUid.get(already.packageId!) === uid.toString('hex')) {
              confirmed.add(already.packageId!);
              done = true;
              continue;
            }
            if (r.status !== 200) throw new Error(`reserve ${r.status}`);
            const prior = pkgToUid.get(r.body.packageId);
            assert.ok(!prior || prior === uid.toString('hex'), `DUPLICATE ${r.body.packageId}`);
            pkgToUid.set(r.body.packageId, uid.toString('hex'));
            // an ECU that already took this key (confirmation lost in a crash) answers with the same proof
            proof ??= ecu.loadKey(Buffer.from(r.body.m1, 'hex'), Buffer.from(r.body.m2, 'hex'), Buffer.from(r.body.m3, 'hex'));
            const k = await call<{ state: string; verified: boolean }>(c, 'POST', `/v1/she/packages/${r.body.packageId}/confirm`, { m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') });
            if (k.status !== 200) throw new Error(`confirm ${k.status}`);
            assert.ok(k.body.verified);
            confirmed.add(r.body.packageId);
            done = true;
          } catch (e) {
            if (String((e as Error).message).startsWith('DUPLICATE')) throw e;
            retries++;
            await new Promise((r) => setTimeout(r, 30));
          }
        }
        if (!done) gaveUp.push(uid.toString('hex'));
      }
    };
    const killer = (async () => {
      while (next < TOTAL * 0.9) {
        await new Promise((r) => setTimeout(r, 400 + Math.random() * 800));
        if (Math.random() < 0.5) {
          await api.proc.kill9();
          await api.restart();
        } else {
          await box.keystore.proc.kill9();
          await box.keystore.restart();
        }
        kills++;
      }
    })();
    await Promise.all([...Array.from({ length: TESTERS }, (_, w) => worker(w)), killer]);
    assert.equal(gaveUp, []);
    assert.ok(kills >= 2, `only ${kills} kills happened`);

    await box.keystore.client('uplink').call('checkpoint', {});
    const auditSpki = Buffer.from((await box.vault.client('pksctl').call<{ spki: string }>('public-key', { name: 'audit' })).spki, 'base64');
    await api.stop();
    await box.keystore.proc.stop();
    const dbs = openDbs(box.keystore.dataDir, { readOnly: true });
    try {
      const ecus = new Set<string>();
      let injected = 0;
      for (const { value: rec } of dbs.keys.getRange({})) {
        if (rec.state !== 'INJECTED' && rec.state !== 'REPORTED') continue;
        injected++;
        assert.not.ok(ecus.has(rec.uid!), `ECU ${rec.uid} holds two injected keys`);
        ecus.add(rec.uid!);
      }
      for (const id of confirmed) assert.ok(['INJECTED', 'REPORTED'].includes(dbs.keys.get(id)!.state), `confirmed ${id} was lost`);
      assert.is(injected, TOTAL);
      const report = verifyAudit(dbs, createPublicKey({ key: auditSpki, format: 'der', type: 'spki' }));
      assert.equal(report.problems, []);
      console.log(`  crash over mTLS: ${TOTAL} ECUs, ${kills} SIGKILLs (tester-api or keystore), ${retries} retried calls, duplicates 0, lost 0`);
    } finally {
      await dbs.root.close();
    }
  } finally {
    await box.stop();
  }
});

test.run();
