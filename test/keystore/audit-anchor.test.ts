// Issue 9 item 5: the audit verifies against an anchor outside the store. Real LMDB on both
// sides: the box's keystore store, and the reference KMS's store taking verification files
// with real checkpoints (takeFile), answering signed anchors (signAnchors) that the box checks
// against its pinned KMS CA and keeps (storeAnchors). Then each attack on the box's store: an
// edit, a deletion, a reordering, a cut tail, and "delete the last checkpoints with their
// entries and re-point the head", found on the box (verifyAnchored, as pksctl audit verify)
// and at the KMS (checkAuditAtKms). An empty or unsigned history is never "verified".
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID, sign, type KeyObject } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { verificationFileMessage } from '../../appliance/signed-messages.js';
import { checkAuditAtKms, signAnchors } from '../../scripts/kms/audit-anchor.js';
import { keySigner } from '../../scripts/kms/signer.js';
import { KmsStore } from '../../scripts/kms/store.js';
import { takeFile } from '../../scripts/kms/verify.js';
import { appendAudit, auditHead, checkpointMessage, lastCheckpoint } from '../../services/keystore/audit.js';
import { storeAnchors, verifyAnchored } from '../../services/keystore/audit-anchor.js';
import { openDbs, type Dbs } from '../../services/keystore/db.js';
import { packFile } from '../../appliance/verification-file.js';
import { makeKmsCa, makeSigner, pair, spkiOf } from '../helpers/kms-pki.js';

const BOX = 'box-anchor-1';

interface World {
  dir: string;
  dbs: Dbs;
  kms: KmsStore;
  audit: { privateKey: KeyObject; publicKey: KeyObject };
  ca: Awaited<ReturnType<typeof makeKmsCa>>;
  signer: ReturnType<typeof keySigner>;
  cpCount: number;
}

async function entries(w: World, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await w.dbs.root.transaction(() => appendAudit(w.dbs, Date.now(), { ev: 'reserve', id: `k-${auditHead(w.dbs).seq + 1}` }));
  await w.dbs.root.flushed;
}

/** The keystore's checkpoint: signed by the box's audit key, into a verification file. */
async function checkpoint(w: World): Promise<Record<string, unknown>> {
  const head = auditHead(w.dbs);
  const last = lastCheckpoint(w.dbs);
  const body = { seq: head.seq, hash: head.hash, prevSeq: last?.seq ?? 0, prevHash: last?.hash ?? '0'.repeat(64), at: new Date().toISOString() };
  const sig = sign('sha256', checkpointMessage(body), { key: w.audit.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64');
  await w.dbs.checkpoints.put(body.seq, { ...body, sig });
  w.cpCount++;
  return { seq: w.cpCount, prev: body.prevHash, head: body.hash, auditSeq: body.seq, prevAuditSeq: body.prevSeq, at: body.at, sig };
}

/** The box sends the checkpoints, the KMS takes them and answers anchors, the box keeps them. */
async function report(w: World, cps: Record<string, unknown>[]): Promise<{ rejected: { code: string }[] }> {
  const items = cps.map((body, i) => ({ id: String(Date.now() * 10 + i).padStart(16, '0'), kind: 'checkpoint' as const, at: new Date().toISOString(), body }));
  const { text } = packFile(`vf-${randomUUID()}`, BOX, items);
  const sig = sign('sha256', verificationFileMessage(text), { key: w.audit.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64');
  const r = takeFile(w.kms, BOX, JSON.stringify({ v: 1, payload: text, sig }));
  const anchors = signAnchors(BOX, r.anchors ?? [], w.signer);
  if (anchors.length) await storeAnchors(w.dbs, anchors, w.ca.trust, BOX);
  return { rejected: r.rejected };
}

const refused = async (p: () => Promise<unknown>): Promise<string> => {
  try {
    await p();
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return 'accepted';
};

const exported = (w: World) => [...w.dbs.audit.getRange({})].map((e) => ({ seq: e.key, line: e.value.line }));
const onBox = (w: World) => verifyAnchored(w.dbs, spkiOf(w.audit.publicKey), w.ca.trust, BOX);
const atKms = (w: World) => checkAuditAtKms(w.kms, BOX, exported(w));

async function world(): Promise<World> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-anchor-'));
  const dbs = openDbs(path.join(dir, 'box'), { mapSizeMb: 64 });
  const kms = new KmsStore(path.join(dir, 'kms'));
  const audit = pair();
  const ca = await makeKmsCa();
  const s = await makeSigner(ca.key);
  const w: World = { dir, dbs, kms, audit, ca, signer: keySigner(s.key, s.certPem), cpCount: 0 };
  const z = spkiOf(pair().publicKey).toString('base64');
  kms.boxes.putSync(BOX, { boxId: BOX, identity: z, transport: z, audit: spkiOf(audit.publicKey).toString('base64'), registeredAt: '', alerts: [], events: [], cmdResults: [], counters: { batches: 0, keysSent: 0, verified: 0, burned: 0, rejected: 0, files: 0 } });
  return w;
}

/** 30 entries, checkpoints at 10, 20 and 30 all anchored by the KMS, 5 more entries. */
async function anchored(): Promise<World> {
  const w = await world();
  for (let i = 0; i < 3; i++) {
    await entries(w, 10);
    const cp = await checkpoint(w);
    assert.equal((await report(w, [cp])).rejected, []);
  }
  await entries(w, 5);
  return w;
}

const t = suite<{ worlds: World[] }>('audit anchored at the KMS (issue 9 item 5)', { worlds: [] });
const keep = (ctx: { worlds: World[] }, w: World): World => (ctx.worlds.push(w), w);
t.after.each(async (ctx) => {
  for (const w of ctx.worlds.splice(0)) {
    await w.dbs.root.close();
    await w.kms.close();
    await rm(w.dir, { recursive: true, force: true });
  }
});

t('an intact history is verified only up to the last anchor; what follows is counted', async (ctx) => {
  const w = keep(ctx, await anchored());
  const r = onBox(w);
  assert.equal([r.ok, r.verified, r.anchors, r.anchoredSeq, r.notAnchored, r.headSeq], [true, true, 3, 30, 5, 35], r.problems.join('; '));
  const k = atKms(w);
  assert.ok(k.ok, k.problems.join('; '));
  assert.is(k.anchoredSeq, 30);
});

t('an empty history, or one signed by the box alone, is never "verified"', async (ctx) => {
  const empty = keep(ctx, await world());
  const e = onBox(empty);
  assert.equal([e.verified, e.unverified], [false, 'the audit log is empty']);
  assert.not.ok(atKms(empty).ok);
  const unsigned = keep(ctx, await world());
  await entries(unsigned, 12);
  await checkpoint(unsigned); // signed by the box's own key, never acknowledged
  const u = onBox(unsigned);
  assert.equal([u.ok, u.verified, u.anchoredSeq, u.notAnchored, u.unverified], [true, false, 0, 12, 'no checkpoint is anchored at the KMS yet']);
});

t('an anchor the box did not get from the KMS signer is refused', async (ctx) => {
  const w = keep(ctx, await world());
  await entries(w, 10);
  const cp = await checkpoint(w);
  const items = [{ id: '0000000000000001', kind: 'checkpoint' as const, at: new Date().toISOString(), body: cp }];
  const { text } = packFile(`vf-${randomUUID()}`, BOX, items);
  const r = takeFile(w.kms, BOX, JSON.stringify({ v: 1, payload: text, sig: sign('sha256', verificationFileMessage(text), { key: w.audit.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64') }));
  // the box's own audit key as "signer" (whoever controls the vault), and a TLS cert of the KMS CA
  const selfSigned = signAnchors(BOX, r.anchors!, keySigner(w.audit.privateKey, (await makeSigner(pair().privateKey)).certPem));
  assert.is(await refused(() => storeAnchors(w.dbs, selfSigned, w.ca.trust, BOX)), 'PKS_BATCH_SIGNATURE');
  const tls = await makeSigner(w.ca.key, { eku: ['1.3.6.1.5.5.7.3.2'] });
  assert.is(await refused(() => storeAnchors(w.dbs, signAnchors(BOX, r.anchors!, keySigner(tls.key, tls.certPem)), w.ca.trust, BOX)), 'PKS_BATCH_SIGNATURE');
  const forged = signAnchors(BOX, r.anchors!, w.signer).map((a) => ({ ...a, auditSeq: a.auditSeq + 1 }));
  assert.is(await refused(() => storeAnchors(w.dbs, forged, w.ca.trust, BOX)), 'PKS_AUDIT_BROKEN');
  assert.is(onBox(w).anchors, 0);
});

const attacks: [string, (w: World) => Promise<void>][] = [
  [
    'an edited entry',
    async (w) => {
      const e = w.dbs.audit.get(15)!;
      await w.dbs.audit.put(15, { ...e, line: e.line.replace('"k-15"', '"k-99"') });
    },
  ],
  ['a deleted entry', async (w) => void (await w.dbs.audit.remove(12))],
  [
    'two entries swapped',
    async (w) => {
      const [a, b] = [w.dbs.audit.get(13)!, w.dbs.audit.get(14)!];
      await w.dbs.audit.put(13, b);
      await w.dbs.audit.put(14, a);
    },
  ],
  [
    'a cut tail (entries 18.. gone, head re-pointed)',
    async (w) => {
      for (let s = 18; s <= 35; s++) await w.dbs.audit.remove(s);
      for (const s of [20, 30]) await w.dbs.checkpoints.remove(s);
      await w.dbs.meta.put('audit-head', { seq: 17, hash: w.dbs.audit.get(17)!.h });
    },
  ],
  [
    'the last two checkpoints deleted with their entries, the head re-pointed',
    async (w) => {
      for (let s = 11; s <= 35; s++) await w.dbs.audit.remove(s);
      for (const s of [20, 30]) await w.dbs.checkpoints.remove(s);
      await w.dbs.meta.put('audit-head', { seq: 10, hash: w.dbs.audit.get(10)!.h });
    },
  ],
];

for (const [name, attack] of attacks) {
  t(`${name}: found on the box and at the KMS`, async (ctx) => {
    const w = keep(ctx, await anchored());
    await attack(w);
    await w.dbs.root.flushed;
    const r = onBox(w);
    assert.is(r.ok, false, `box: ${name}`);
    assert.is(r.verified, false);
    const k = atKms(w);
    assert.is(k.ok, false, `KMS: ${name}`);
    assert.ok(k.problems.length > 0);
  });
}

t('the same cut with the anchors deleted too: the box claims no more than entry 10, the KMS finds it', async (ctx) => {
  const w = keep(ctx, await anchored());
  for (let s = 11; s <= 35; s++) await w.dbs.audit.remove(s);
  for (const s of [20, 30]) {
    await w.dbs.checkpoints.remove(s);
    await w.dbs.anchors.remove(s);
  }
  await w.dbs.meta.put('audit-head', { seq: 10, hash: w.dbs.audit.get(10)!.h });
  await w.dbs.root.flushed;
  const r = onBox(w);
  assert.is(r.anchoredSeq, 10, 'nothing past what is still anchored is called verified');
  const k = atKms(w);
  assert.is(k.ok, false);
  assert.match(k.problems.join('; '), /names entry 30, which the log no longer has/);
  // and the re-pointed box's next checkpoint is refused at intake: it does not extend checkpoint 3
  w.cpCount = 1;
  await entries(w, 4);
  const next = await checkpoint(w);
  const { rejected } = await report(w, [next]);
  assert.equal(rejected.map((x) => x.code), ['PKS_AUDIT_BROKEN']);
});

t.run();
