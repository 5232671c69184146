// The CI slice of the reliability campaign (issue 17): the same code as `./build.sh campaign`,
// short. A kill campaign of about 24 SIGKILLs over the vault, keystore, tester API and uplink
// during issuance over mTLS, then the drain to the KMS and the checks from the stores; a short
// fuzz pass over every parser of outside input (fixed seed); the regressions fuzzing found.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { isPksError } from '../../appliance/errors.js';
import { decodeToken, describeToken, encodeSigned, TOKEN_LEN } from '../../appliance/unlock-token.js';
import { runKillCampaign } from './kills.js';
import { runFuzz } from './fuzz/run.js';
import { summarise, table } from './run.js';

const KILLS = Number(process.env.PKS_CAMPAIGN_KILLS ?? 24);

test(`kill campaign slice: ${KILLS} SIGKILLs of vault, keystore, tester API and uplink during issuance; nothing twice, nothing lost, audit verifies, the KMS holds every record`, async () => {
  const base = await mkdtemp(path.join(os.tmpdir(), 'pks-campaign-ci-'));
  try {
    const k = await runKillCampaign({ base, seconds: 240, maxKills: KILLS });
    console.log(table(k, [], summarise(k, [], null)));
    assert.equal(k.problems, []);
    assert.ok(k.kills >= KILLS, `only ${k.kills} kills`);
    assert.ok(Object.values(k.killsBy).every((n) => n > 0), `every service killed: ${JSON.stringify(k.killsBy)}`);
    assert.ok(k.confirmed > 0);
    assert.is(k.duplicates, 0);
    assert.is(k.lost, 0);
    assert.is(k.stuck, 0);
    assert.ok(k.audit_ok);
    assert.is(k.injected, k.confirmed);
    assert.is(k.kms_missing, 0);
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});

test('fuzz slice: every parser of outside input, 0 crashes, 0 hangs (fixed seed)', async () => {
  const rs = await runFuzz({ inputs: 20_000, seconds: 3, seed: 17, silentMs: 20_000 });
  for (const r of rs) {
    assert.ok(r.inputs > 0, `${r.target} ran no input`);
    assert.equal(r.findings, [], `${r.target}: ${JSON.stringify(r.findings.slice(0, 2))}`);
  }
  assert.is(rs.length, 9);
});

test('regression (fuzzing): a token whose validity ends after the year 9999 is refused with a code, not a RangeError', () => {
  const good = Buffer.concat([encodeSigned({ keyId: Buffer.alloc(8), tokenId: randomBytes(16), ecuType: 'bcm', uid: Buffer.alloc(15, 1), challenge: randomBytes(32), permissions: 1n, notBefore: 1000, notAfter: 2000 }), Buffer.alloc(64)]);
  assert.is(good.length, TOKEN_LEN);
  describeToken(decodeToken(good));
  const far = Buffer.from(good);
  far.writeBigUInt64BE(2n ** 52n, 138); // notAfter: a safe integer, but no Date
  try {
    describeToken(decodeToken(far));
    assert.unreachable('decoded');
  } catch (e) {
    assert.ok(isPksError(e), String(e));
    assert.is((e as { code: string }).code, 'PKS_UNLOCK_TOKEN_INVALID');
  }
  assert.throws(() => encodeSigned({ ...decodeToken(good), notBefore: 253_402_300_000, notAfter: 253_402_300_800 }), /9999/);
});

test.run();
