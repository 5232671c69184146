// Issue 17.2 on the host: the dm-log-writes parser and replayer against logs written here in the
// kernel's exact format (a fake device, every flag), and a short replay of the small log recorded
// in the dev VM (fixture/: 20 ECUs through the box's tester API, keystore LMDB on ext4 over
// dm-log-writes): its states pass, and the checks are shown to bite (confirmations and packages
// required too early, an LMDB that does not open, an edited audit entry).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createPublicKey, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, writeSync, closeSync, ftruncateSync, statSync, existsSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DISCARD, FLUSH, FUA, LogFormatError, METADATA, readLog, writeLog, type NewEntry } from './format.js';
import { planStates, Replayer, durablePoints } from './replay.js';
import { checkCrashStates, samplesFor, toldEvents } from './crash-states.js';
import { checkState, stateOk } from './check-state.js';
import { CheckWorker } from './check-worker.js';
import { openDbs } from '../../../services/keystore/db.js';

const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixture');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'pks-logwrites-test-'));
const block = (b: number): Buffer => Buffer.alloc(4096, b);

test.after(() => rmSync(tmp, { recursive: true, force: true }));

// a device of 64 KiB in 512-byte sectors: W0 W1 FLUSH | W2 DISCARD M W3 FLUSH+FUA(data) | W4 FUA(data) | W5
const SS = 512;
const LOG: NewEntry[] = [
  { sector: 0, data: block(1) }, // 0
  { sector: 16, data: Buffer.concat([block(2), block(3)]) }, // 1
  { flags: FLUSH }, // 2
  { sector: 8, data: block(4), flags: METADATA }, // 3
  { sector: 16, nrSectors: 8, flags: DISCARD }, // 4
  { mark: 'c,pkg-1,20aa' }, // 5
  { sector: 0, data: block(5) }, // 6
  { sector: 64, data: block(6), flags: FLUSH | FUA }, // 7
  { sector: 32, data: block(7), flags: FUA }, // 8
  { sector: 40, data: block(8) }, // 9
];

/** What the device holds after applying `entries` of LOG, in memory. */
function model(indexes: number[]): Buffer {
  const dev = Buffer.alloc(128 * SS);
  for (const i of indexes) {
    const e = LOG[i]!;
    if (e.mark !== undefined || !(e.data?.length || e.flags! & DISCARD)) continue;
    if (e.flags! & DISCARD) dev.fill(0, e.sector! * SS, (e.sector! + e.nrSectors!) * SS);
    else e.data!.copy(dev, e.sector! * SS);
  }
  return dev;
}

test('format: a log in the kernel layout reads back entry by entry (flags, sectors, data offsets, marks)', () => {
  const f = path.join(tmp, 'a.log');
  writeLog(f, SS, LOG);
  const log = readLog(f);
  assert.is(log.sectorSize, SS);
  assert.is(log.entries.length, LOG.length);
  assert.equal(log.entries.map((e) => e.flags), [0, 0, FLUSH, METADATA, DISCARD, 8, 0, FLUSH | FUA, FUA, 0]);
  assert.equal(log.entries.map((e) => e.nrSectors), [8, 16, 0, 8, 8, 0, 8, 8, 8, 8]);
  assert.is(log.entries[5]!.mark, 'c,pkg-1,20aa');
  // super, then per entry one header sector and its data (none for the flush, discard, mark)
  assert.is(log.entries[0]!.dataOffset, 2 * SS);
  assert.is(log.entries[1]!.dataOffset, (1 + 1 + 8 + 1) * SS);
  assert.is(log.end, statSync(f).size);
  const raw = readFileSync(f);
  assert.is(raw.readBigUInt64LE(0), 0x6a736677736872n);
  assert.ok(raw.subarray(log.entries[1]!.dataOffset, log.entries[1]!.dataOffset + 4096).equals(block(2)));
  assert.equal(durablePoints(log), [2, 7, 8]);
});

test('format: a foreign file, a cut log and a bad sector size are refused', () => {
  const f = path.join(tmp, 'b.log');
  writeLog(f, SS, LOG);
  const raw = readFileSync(f);
  const bad = Buffer.from(raw);
  bad[0] ^= 1;
  writeFileSync(path.join(tmp, 'bad-magic.log'), bad);
  assert.throws(() => readLog(path.join(tmp, 'bad-magic.log')), (e: unknown) => e instanceof LogFormatError && /magic/.test((e as Error).message));
  writeFileSync(path.join(tmp, 'cut.log'), raw.subarray(0, raw.length - 100));
  assert.throws(() => readLog(path.join(tmp, 'cut.log')), (e: unknown) => e instanceof LogFormatError && /log ends|past the end/.test((e as Error).message));
  const ss = Buffer.from(raw);
  ss.writeUInt32LE(1000, 24);
  writeFileSync(path.join(tmp, 'ss.log'), ss);
  assert.throws(() => readLog(path.join(tmp, 'ss.log')), /sector size/);
  // 4 KiB sectors: the same entries, other offsets
  writeLog(path.join(tmp, 'c.log'), 4096, LOG.map((e) => ({ ...e, ...(e.sector !== undefined ? { sector: e.sector / 8 } : {}), ...(e.nrSectors ? { nrSectors: e.nrSectors / 8 } : {}) })));
  const l4 = readLog(path.join(tmp, 'c.log'));
  assert.equal(l4.entries.map((e) => e.nrSectors), [1, 2, 0, 1, 1, 0, 1, 1, 1, 1]);
  assert.is(l4.entries[1]!.dataOffset, (1 + 1 + 1 + 1) * 4096);
});

test('replay: durable points, prefixes and subsets between them; every state is exactly its writes on the starting image', () => {
  const f = path.join(tmp, 'r.log');
  writeLog(f, SS, LOG);
  const log = readLog(f);
  const init = path.join(tmp, 'init.img');
  writeFileSync(init, Buffer.alloc(128 * SS)); // all holes to begin with
  const states = planStates(log, { samplesPerInterval: 6, seed: 5 });
  // the starting image, the state at each durable point (2, 7, 8) and the whole log
  assert.equal(states.filter((s) => s.kind === 'durable').map((s) => s.base), [-1, 2, 7, 8]);
  // the whole log once (here the tail's one prefix)
  assert.is(states.filter((s) => s.base === 8 && s.extra.join() === '9').length, 1);
  assert.equal(planStates(log, { samplesPerInterval: 0, seed: 5 }).at(-1), { base: 8, extra: [9], bound: 10, kind: 'end' });
  // after every single write: each prefix of each interval
  const every = planStates(log, { samplesPerInterval: 0, seed: 5, everyWrite: true });
  assert.equal(every.filter((s) => s.kind === 'prefix').map((s) => [s.base, s.extra]), [[-1, [0]], [-1, [0, 1]], [2, [3]], [2, [3, 4]], [2, [3, 4, 6]], [8, [9]]]);
  assert.equal(every.at(-1), { base: 8, extra: [9], bound: 10, kind: 'prefix' });
  for (const s of states) {
    // a state holds writes of its own interval only, never the durable point that ends it
    for (const i of s.extra) assert.ok(i > s.base && i < s.bound && log.entries[i]!.mark === undefined, JSON.stringify(s));
    if (s.kind === 'prefix') assert.equal(s.extra, log.entries.slice(s.base + 1, s.bound).filter((e) => e.mark === undefined).slice(0, s.extra.length).map((e) => e.index));
  }
  assert.ok(states.some((s) => s.kind === 'subset' && s.extra.length < 3 && s.base === 2));
  assert.equal(planStates(log, { samplesPerInterval: 6, seed: 5 }), states, 'reproducible');
  assert.ok(samplesFor(log, 20) >= 1);

  const r = new Replayer(log, f, init, path.join(tmp, 'work.img'));
  try {
    for (const s of states) {
      const out = path.join(tmp, 'state.img');
      r.materialise(s, out);
      const expect = model([...Array.from({ length: s.base + 1 }, (_, i) => i), ...s.extra]);
      assert.ok(readFileSync(out).equals(expect), `state ${JSON.stringify(s)}`);
      // the copy is sparse: only blocks that were ever written hold data
      assert.ok(statSync(out).blocks * 512 <= 8 * 4096, `${statSync(out).blocks} blocks`);
    }
  } finally {
    r.close();
  }
});

test('replay: a starting image with data keeps it where the log does not write', () => {
  const f = path.join(tmp, 's.log');
  writeLog(f, SS, [{ sector: 8, data: block(9) }, { flags: FLUSH }]);
  const log = readLog(f);
  const init = path.join(tmp, 'init2.img');
  const fd = openSync(init, 'w');
  ftruncateSync(fd, 64 * 1024);
  const junk = randomBytes(4096);
  writeSync(fd, junk, 0, 4096, 12 * 4096 - 4096);
  closeSync(fd);
  const r = new Replayer(log, f, init, path.join(tmp, 'work2.img'));
  try {
    r.materialise(planStates(log, { samplesPerInterval: 0, seed: 1 }).at(-1)!, path.join(tmp, 'st2.img'));
  } finally {
    r.close();
  }
  const img = readFileSync(path.join(tmp, 'st2.img'));
  assert.ok(img.subarray(4096, 8192).equals(block(9)));
  assert.ok(img.subarray(11 * 4096, 12 * 4096).equals(junk));
});

test('marks: the answers the line wrote are read back; any other mark is refused', () => {
  const f = path.join(tmp, 'm.log');
  writeLog(f, SS, [{ mark: 'start' }, { mark: 'i,vm-1-2-0,20ab;c,vm-1-2-0,20ab' }, { mark: 'dm-log-writes-end' }]);
  assert.equal(toldEvents(readLog(f)), [
    { index: 1, kind: 'issued', packageId: 'vm-1-2-0', uid: '20ab' },
    { index: 1, kind: 'confirmed', packageId: 'vm-1-2-0', uid: '20ab' },
  ]);
  writeLog(f, SS, [{ mark: 'c,x y,20' }]);
  assert.throws(() => toldEvents(readLog(f)), /not an answer/);
});

const haveFixture = existsSync(path.join(FIXTURE, 'log.img.gz'));

test('recorded in the VM: a short replay of the committed log, every state passes', async () => {
  if (!haveFixture) throw new Error(`no recording in ${FIXTURE}`);
  const r = await checkCrashStates({ dir: FIXTURE, samplesPerInterval: 2, seed: 17, maxStates: 40 });
  assert.is(r.crash_states_checked, 40);
  assert.equal(r.problems, []);
  assert.is(r.failed, 0);
  assert.ok(r.durable_points > 50, `${r.durable_points} durable points`);
  assert.ok(r.confirmed >= 20 && r.issued >= 20, `told ${r.issued}/${r.confirmed}`);
  assert.ok(r.journal_replays > 0, 'the states had journals to recover');
});

test('recorded in the VM: the checks bite (answers required before they were given: lost and back in stock)', async () => {
  // every answer of the recording moved to its very start: the early states cannot hold them
  const { readLog: rl } = await import('./format.js');
  const { gunzipSync } = await import('node:zlib');
  const logFile = path.join(tmp, 'fixture-log.img');
  writeFileSync(logFile, gunzipSync(readFileSync(path.join(FIXTURE, 'log.img.gz'))));
  const events = toldEvents(rl(logFile)).map((e) => ({ ...e, index: 0 }));
  const lost = await checkCrashStates({ dir: FIXTURE, samplesPerInterval: 0, seed: 17, maxStates: 6, events: events.filter((e) => e.kind === 'confirmed') });
  assert.ok(lost.failed >= 1, JSON.stringify(lost));
  assert.match(lost.problems.join('\n'), /confirmed vm-\S+ for ECU \S+ is (RESERVED|AVAILABLE)/);
  const twice = await checkCrashStates({ dir: FIXTURE, samplesPerInterval: 0, seed: 17, maxStates: 6, events: events.filter((e) => e.kind === 'issued') });
  assert.ok(twice.failed >= 1, JSON.stringify(twice));
  assert.match(twice.problems.join('\n'), /handed out for ECU \S+ is back in the AVAILABLE queue/);
});

test('recorded in the VM: an LMDB that does not open and an edited audit entry fail the state', async () => {
  const { gunzipSync } = await import('node:zlib');
  const meta = JSON.parse(readFileSync(path.join(FIXTURE, 'meta.json'), 'utf8')) as { auditSpki: string };
  const key = createPublicKey({ key: Buffer.from(meta.auditSpki, 'base64'), format: 'der', type: 'spki' });
  const img = path.join(tmp, 'fx.img');
  writeFileSync(img, gunzipSync(readFileSync(path.join(FIXTURE, 'initial.img.gz'))));
  const told = { issued: new Map<string, string>(), confirmed: new Map<string, string>() };
  const good = await checkState(img, path.join(tmp, 'w0'), told, key);
  assert.ok(stateOk(good), JSON.stringify(good));

  const dir = path.join(tmp, 'ex');
  mkdirSync(dir, { recursive: true });
  spawnSync('/usr/sbin/debugfs', ['-R', `dump /data.mdb ${dir}/data.mdb`, img]);
  writeFileSync(path.join(dir, 'good.mdb'), readFileSync(path.join(dir, 'data.mdb')));
  const swap = (file: string): void => {
    const r = spawnSync('/usr/sbin/debugfs', ['-w', '-f', '-', img], { input: `rm /data.mdb\nwrite ${file} /data.mdb\n`, encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
  };
  // an audit entry edited in place: the chain no longer verifies
  const dbs = openDbs(dir, { mapSizeMb: 1024 });
  const first = dbs.audit.get(1)!;
  await dbs.audit.put(1, { ...first, line: first.line.replace('"seq":1', '"seq":1,"x":1') });
  await dbs.root.close();
  swap(path.join(dir, 'data.mdb'));
  const edited = await checkState(img, path.join(tmp, 'w1'), told, key);
  assert.not.ok(edited.auditOk);
  assert.ok(edited.lmdbOpens);
  assert.match(edited.problems.join('\n'), /audit: entry 1 was edited/);

  // both meta pages gone: LMDB does not open
  const raw = readFileSync(path.join(dir, 'data.mdb'));
  raw.fill(0, 0, 8192);
  writeFileSync(path.join(dir, 'broken.mdb'), raw);
  swap(path.join(dir, 'broken.mdb'));
  // lmdb-js dies of SIGSEGV on this file rather than throw: the checker's process is the one to go
  const worker = new CheckWorker(meta.auditSpki);
  try {
    const broken = await worker.check(img, path.join(tmp, 'w2'));
    assert.not.ok(broken.lmdbOpens);
    assert.not.ok(stateOk(broken));
    // and the next state is checked by a fresh checker
    swap(path.join(tmp, 'ex', 'good.mdb'));
    const after = await worker.check(img, path.join(tmp, 'w3'));
    assert.ok(after.lmdbOpens, JSON.stringify(after));
  } finally {
    worker.close();
  }
});

test.run();
