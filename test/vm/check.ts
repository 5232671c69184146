// After a reboot: what the box has on disk against what the testers were told.
//   duplicates: a package that went to two ECUs (two uids for one package id, on the testers'
//               side or between a tester's confirmation and the box's record)
//   lost:       a package the box confirmed as INJECTED that it no longer records as INJECTED
//               or REPORTED for that ECU
//   audit_ok:   `pksctl audit verify` in the guest
// Usage: node --import tsx test/vm/check.ts --state DIR; prints one JSON line.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseArgs } from 'node:util';
import { guest } from './guest.js';

const { values } = parseArgs({ options: { state: { type: 'string' } }, strict: true });
if (!values.state) throw new Error('usage: check.ts --state DIR');
const state = values.state;
const g = guest(state);
const lines = (f: string): string[] => (existsSync(path.join(state, f)) ? readFileSync(path.join(state, f), 'utf8').split('\n').filter(Boolean) : []);

// the testers' logs first, then the box: the line keeps running, and a package confirmed after the
// box's records were read would count as lost (it did: 16 of them once, right after an update)
const issuedLines = lines('issued.log');
const confirmed = lines('confirmed.log');
const dump = gunzipSync(Buffer.from((await g.sh('node /usr/lib/pks-dev/keys.mjs | gzip -c | base64 -w0', 300)).trim(), 'base64')).toString();
const box = new Map<string, { state: string; uid: string }>();
let counters: unknown = {};
for (const l of dump.split('\n')) {
  if (l.startsWith('#counters ')) counters = JSON.parse(l.slice(10));
  else if (l) {
    const [id, st, uid] = l.split(' ');
    box.set(id!, { state: st!, uid: uid! });
  }
}
let duplicates = 0;
// what each duplicate is, for the run's record (duplicates.json in the state directory)
const detail: unknown[] = [];
const issuedTo = new Map<string, Set<string>>();
for (const l of issuedLines) {
  const [id, uid] = l.split(' ');
  const s = issuedTo.get(id!) ?? new Set<string>();
  s.add(uid!);
  issuedTo.set(id!, s);
}
for (const [id, s] of issuedTo) if (s.size > 1) {
  duplicates++;
  detail.push({ kind: 'one package, two ECUs on the testers\' side', id, uids: [...s], box: box.get(id) });
}
let lost = 0;
for (const l of confirmed) {
  const [uid, , id] = l.split(' ');
  const rec = box.get(id!);
  if (!rec || !['INJECTED', 'REPORTED'].includes(rec.state)) lost++;
  else if (rec.uid !== uid) {
    duplicates++;
    detail.push({ kind: 'confirmed for one ECU, recorded for another', id, uid, box: rec });
  }
}
// every package the box records for an ECU must be one the testers could have had for it
for (const [id, uids] of issuedTo) {
  const rec = box.get(id);
  if (rec && rec.uid !== '-' && !uids.has(rec.uid)) {
    duplicates++;
    detail.push({ kind: 'recorded for an ECU no tester had it for', id, uids: [...uids], box: rec });
  }
}
if (detail.length) writeFileSync(path.join(state, 'duplicates.json'), JSON.stringify(detail, null, 1) + '\n');
let auditOk = false;
let audit: unknown;
// the verification needs the vault's audit key: a vault that is (re)starting right then (a busy
// emulated guest after a power cut) is waited for, up to a minute; a chain that does not verify
// is never retried
for (let attempt = 1; attempt <= 6; attempt++) {
  try {
    // exit 3 is "intact but NOT VERIFIED": no checkpoint anchored at a KMS yet, which a VM without a
    // KMS cannot have; the chain and its signed checkpoints are what is checked here (ok: true)
    audit = JSON.parse(await g.sh('pksctl audit verify --json; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 3 ]', 300));
    auditOk = (audit as { ok?: boolean }).ok === true;
    break;
  } catch (e) {
    audit = { error: (e as Error).message.slice(0, 300) };
    if (!/PKS_IPC_UNAVAILABLE|did not answer/.test((e as Error).message) || attempt === 6) break;
    await new Promise((r) => setTimeout(r, 10_000));
  }
}
const injectedOnBox = [...box.values()].filter((r) => r.state === 'INJECTED' || r.state === 'REPORTED').length;
process.stdout.write(
  JSON.stringify({ issued: injectedOnBox, confirmed: confirmed.length, duplicates, ...(detail.length ? { duplicate: detail[0] } : {}), lost, reissued: lines('reissued.log').length, audit_ok: auditOk, counters, audit }) + '\n',
);
