// Crash safety: testers inject while the keystore is killed with SIGKILL at random points and
// restarted. Afterwards: no key went to two ECUs, no confirmed injection was lost, LMDB opens
// cleanly and the audit chain verifies.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createPublicKey, randomBytes } from 'node:crypto';
import { LOAD_QUOTAS, startBox } from '../../scripts/plant/box.js';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { openDbs } from '../../services/keystore/db.js';
import { verifyAudit } from '../../services/keystore/audit.js';
import type { ReserveResponse } from '../../appliance/contracts/keystore.js';

const POOL = 'oem1.ecuA.4';
const TOTAL = Number(process.env.PKS_CRASH_ISSUANCES ?? 2000);
const TESTERS = 8;
const KILLS = Number(process.env.PKS_CRASH_KILLS ?? 6);

test(`SIGKILL of the keystore during ${TOTAL} issuances loses nothing and issues nothing twice`, async () => {
  const master = randomBytes(16);
  const box = await startBox({ pools: [{ pool: POOL, minimum: 1, reorder: 1 }], checkpointEvery: 200, quotas: LOAD_QUOTAS });
  await box.registerTesters(Array.from({ length: TESTERS }, (_, w) => `tester-${w}`), [POOL]);
  try {
    const keys = randomSheKeys('crash', TOTAL + 500);
    await box.importChunks(box.batch('crash-batch', { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys }));
    const client = box.keystore.client('tester-api');
    const pkgToUid = new Map<string, string>();
    const confirmed = new Set<string>();
    let next = 0;
    let errors = 0;
    let done = 0;

    const worker = async (w: number): Promise<void> => {
      const tester = `tester-${w}`;
      while (next < TOTAL) {
        const uid = (++next).toString(16).padStart(30, '0');
        const ecu = new SheEcu(Buffer.from(uid, 'hex'), master);
        // a tester retries the same ECU until it has an answer, as a real line does
        let ok = false;
        // retry for up to 90 s: a restart on a loaded machine can take several seconds
        const until = Date.now() + 90_000;
        for (let attempt = 0; (attempt < 200 || Date.now() < until) && !ok; attempt++) {
          try {
            const p = await client.call<ReserveResponse>('reserve', { pool: POOL, uid, tester }, 3000);
            const seen = pkgToUid.get(p.packageId);
            if (seen && seen !== uid) throw new Error(`DUPLICATE: ${p.packageId} went to ${seen} and ${uid}`);
            pkgToUid.set(p.packageId, uid);
            let proof;
            try {
              proof = ecu.loadKey(Buffer.from(p.m1, 'hex'), Buffer.from(p.m2, 'hex'), Buffer.from(p.m3, 'hex'));
            } catch {
              // the ECU already holds this key from an attempt whose confirmation was lost: same proof
              const s = ecu.slot(4)!;
              assert.ok(s);
              proof = lastProof.get(uid)!;
            }
            lastProof.set(uid, proof);
            const c = await client.call<{ verified: boolean; state: string }>(
              'confirm',
              { packageId: p.packageId, tester, m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') },
              3000,
            );
            assert.ok(c.verified, `proof of ${uid} did not verify`);
            confirmed.add(p.packageId);
            done++;
            ok = true;
          } catch (e) {
            if (String((e as Error).message).startsWith('DUPLICATE')) throw e;
            // confirmed before the crash, the answer was lost: the retry learns it, with the package id
            const already = (e as { code?: string }).code === 'PKS_ALREADY_INJECTED' ? /package (\S+) \(/.exec((e as Error).message) : null;
            if (already && pkgToUid.get(already[1]!) === uid) {
              confirmed.add(already[1]!);
              done++;
              ok = true;
              continue;
            }
            if ((e as { code?: string }).code === 'PKS_STATE_INVALID') {
              // confirmed before the crash, the answer was lost: the retry sees INJECTED via reserve reuse
            }
            errors++;
            lastError.set(uid, `${(e as { code?: string }).code ?? ''} ${(e as Error).message}`);
            // back off: a restart of the keystore takes seconds on a loaded machine
            await new Promise((r) => setTimeout(r, Math.min(500, 20 * (attempt + 1))));
          }
        }
        if (!ok) gaveUp.push(`${uid}: ${lastError.get(uid)}`);
      }
    };
    const lastProof = new Map<string, { m4: Buffer; m5: Buffer }>();
    const lastError = new Map<string, string>();
    const gaveUp: string[] = [];

    const killer = (async () => {
      for (let k = 0; k < KILLS; k++) {
        await new Promise((r) => setTimeout(r, 300 + Math.random() * 700));
        if (next >= TOTAL) break;
        await box.keystore.proc.kill9();
        await box.keystore.restart();
      }
    })();
    await Promise.all([...Array.from({ length: TESTERS }, (_, w) => worker(w)), killer]);
    assert.equal(gaveUp, []);
    assert.is(done, TOTAL);

    await box.keystore.client('uplink').call('checkpoint', {});
    const auditSpki = Buffer.from((await box.vault.client('pksctl').call<{ spki: string }>('public-key', { name: 'audit' })).spki, 'base64');
    await box.keystore.proc.stop();
    const dbs = openDbs(box.keystore.dataDir, { readOnly: true });
    try {
      const byUid = new Map<string, string>();
      let injected = 0;
      for (const { value: rec } of dbs.keys.getRange({})) {
        if (rec.state === 'INJECTED' || rec.state === 'REPORTED') {
          injected++;
          const prev = byUid.get(rec.uid!);
          assert.not.ok(prev, `ECU ${rec.uid} holds two injected keys`);
          byUid.set(rec.uid!, rec.id);
        }
      }
      for (const id of confirmed) assert.ok(['INJECTED', 'REPORTED'].includes(dbs.keys.get(id)!.state), `confirmed ${id} was lost`);
      assert.is(injected, TOTAL);
      const report = verifyAudit(dbs, createPublicKey({ key: auditSpki, format: 'der', type: 'spki' }));
      assert.equal(report.problems, []);
      console.log(`  crash harness: ${TOTAL} ECUs, ${KILLS} SIGKILLs, ${errors} retried calls, ${report.entries} audit entries, duplicates 0, lost 0`);
    } finally {
      await dbs.root.close();
    }
  } finally {
    await box.stop();
  }
});

test.run();
