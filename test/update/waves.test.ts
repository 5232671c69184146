// Wave rollouts (scripts/fleet/waves.ts): canary first, equal waves after, the first failure
// stops everything after it; the KMS signs a manifest the box accepts (scripts/kms/updates.ts
// with a key-file signer, checked by the box's verifyManifest).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { planWaves, rollout, stateFor, type BoxUpdateState } from '../../scripts/fleet/waves.js';
import { kmsUpdateVerbs } from '../../scripts/kms/updates.js';
import { keySigner } from '../../scripts/kms/signer.js';
import { silentLogger } from '../../appliance/log.js';
import { verifyManifest } from '../../services/updater/manifest.js';
import type { SignedManifest } from '../../appliance/contracts/update.js';
import { sh } from './rauc-host.js';

const boxes = Array.from({ length: 20 }, (_, i) => `box-${String(i).padStart(2, '0')}`);

test('plan: 10 % canary (at least one box), then equal waves, every box once', () => {
  const p = planWaves(boxes, 0.1, 3);
  assert.equal(p.waves.map((w) => w.length), [2, 6, 6, 6]);
  assert.equal(p.waves.flat().sort(), boxes);
  assert.equal(planWaves(['a'], 0.1, 3).waves, [['a']]);
});

test('rollout stops at the first failure: later waves never get the manifest', async () => {
  const announced: string[] = [];
  const outcome = new Map<string, BoxUpdateState>(boxes.map((b) => [b, 'ok']));
  outcome.set('box-05', 'failed');
  const r = await rollout(planWaves(boxes, 0.1, 3), {
    announce: async (b) => void announced.push(b),
    state: async (b) => ({ state: announced.includes(b) ? outcome.get(b)! : 'pending', detail: 'PKS_UPDATE_HEALTH_FAILED: fell back' }),
    pollMs: 1,
    timeoutMs: 1000,
  });
  assert.is(r.ok, false);
  assert.equal(r.failed, { boxId: 'box-05', detail: 'PKS_UPDATE_HEALTH_FAILED: fell back' });
  assert.equal(announced.length, 8, 'canary + first wave only');
  assert.equal(r.notStarted.length, 12);
});

test('rollout: a box that never reports stops it at the wave deadline; all ok completes', async () => {
  const r = await rollout(planWaves(['a', 'b'], 0.5, 1), { announce: async () => undefined, state: async (b) => ({ state: b === 'a' ? 'ok' : 'pending' }), pollMs: 5, timeoutMs: 50 });
  assert.equal([r.ok, r.failed?.boxId, r.done], [false, 'b', ['a']]);
  const ok = await rollout(planWaves(boxes, 0.2, 2), { announce: async () => undefined, state: async () => ({ state: 'ok' }), pollMs: 1, timeoutMs: 100 });
  assert.is(ok.ok, true);
  assert.is(ok.done.length, 20);
});

test('box state from update-status: only a result after the announcement counts', () => {
  const t = Date.now();
  assert.is(stateFor(null, '1.2.0', t).state, 'pending');
  assert.is(stateFor({ type: 'update-result', ok: true, version: '1.2.0', at: new Date(t - 5000).toISOString() }, '1.2.0', t).state, 'pending');
  assert.is(stateFor({ type: 'update-progress', phase: 'installing', at: new Date(t + 1).toISOString() }, '1.2.0', t).state, 'pending');
  assert.is(stateFor({ type: 'update-result', ok: true, version: '1.2.0', at: new Date(t + 1).toISOString() }, '1.2.0', t).state, 'ok');
  assert.is(stateFor({ type: 'update-result', ok: false, code: 'PKS_UPDATE_DOWNGRADE', at: new Date(t + 1).toISOString() }, '1.2.0', t).state, 'failed');
});

test('the KMS signs a manifest with its signer; the box verifies it against the pinned KMS CA', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-kms-up-'));
  try {
    sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${dir}/ca.key`, '-out', `${dir}/ca.pem`, '-days', '30', '-subj', '/CN=KMS CA']);
    sh('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${dir}/s.key`, '-out', `${dir}/s.csr`, '-subj', '/CN=KMS signer']);
    sh('openssl', ['x509', '-req', '-in', `${dir}/s.csr`, '-CA', `${dir}/ca.pem`, '-CAkey', `${dir}/ca.key`, '-CAcreateserial', '-days', '30', '-out', `${dir}/s.pem`]);
    let sent: SignedManifest | null = null;
    const verbs = kmsUpdateVerbs({ signer: keySigner(createPrivateKey(readFileSync(`${dir}/s.key`)), readFileSync(`${dir}/s.pem`, 'utf8')), box: () => ({}), publish: async (_b, m) => void (sent = m) });
    const r = (await verbs['send-update']!.handler({ boxId: 'box-3', version: '1.2.0', svn: 3, size: 5000, sha256: 'ef'.repeat(32), url: 'http://10.0.0.5/b/pks-1.2.0.raucb', install: 'now' }, { caller: 'pks-fleet', log: silentLogger })) as { id: string };
    const m = verifyManifest(JSON.stringify(sent), { kmsCa: new X509Certificate(readFileSync(`${dir}/ca.pem`)), boxId: 'box-3', compatible: 'pks-appliance', maxBytes: 1 << 30 });
    assert.equal([m.id, m.version, m.svn, m.install], [r.id, '1.2.0', 3, 'now']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
