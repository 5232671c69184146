// The uplink's state file (issue 9, item 6): written through appliance/durable-file.ts, so the
// directory entry is on disk too (seen with strace: fsync of the directory after the rename);
// a corrupt or unreadable file gives a coded error and safe mode, never a service that cannot
// start.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StateFile } from '../../services/uplink/state.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
let dir = '';
test.before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pks-uplink-state-'));
});
test.after(() => rmSync(dir, { recursive: true, force: true }));

const hasStrace = spawnSync('strace', ['-V'], { stdio: 'ignore' }).status === 0;
if (!hasStrace) console.log('SKIP uplink state: strace is missing (scripts/deps.sh test); the directory fsync is not observed');

(hasStrace ? test : test.skip)('a state update fsyncs the file, renames it into place, then fsyncs the directory', () => {
  const d = path.join(dir, 'strace');
  mkdirSync(d);
  const script = `import { StateFile } from ${JSON.stringify(path.join(root, 'services/uplink/state.ts'))};
const s = new StateFile(${JSON.stringify(d)});
process.stderr.write('--mark--\\n');
s.update((x) => void (x.lastSeq = 42));`;
  const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=openat,fsync,fdatasync,rename,renameat,renameat2,write', '-o', path.join(dir, 'trace'), process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, r.stderr);
  const lines = readFileSync(path.join(dir, 'trace'), 'utf8').split('\n') as string[];
  const from = lines.findIndex((l) => l.includes('--mark--'));
  assert.ok(from >= 0, 'mark not found in the trace');
  const after = lines.slice(from);
  const rename = after.findIndex((l) => /rename/.test(l) && l.includes('uplink-state.json'));
  assert.ok(rename > 0, 'no rename of the state file');
  const before = after.slice(0, rename);
  assert.ok(before.some((l) => /fsync|fdatasync/.test(l)), 'the temp file is not fsynced before the rename');
  const dirOpen = after.slice(rename).map((l) => new RegExp(`openat\\(AT_FDCWD, "${d.replace(/[/.-]/g, '\\$&')}", O_RDONLY[^)]*\\) = (\\d+)`).exec(l)).find(Boolean);
  assert.ok(dirOpen, 'the directory is not opened after the rename');
  assert.ok(after.slice(rename).some((l) => new RegExp(`fsync\\(${dirOpen![1]}\\)`).test(l)), 'the directory is not fsynced after the rename');
});

test('a corrupt state file: coded error, kept aside, safe mode, and the next start is clean', () => {
  const d = path.join(dir, 'corrupt');
  mkdirSync(d);
  writeFileSync(path.join(d, 'uplink-state.json'), '{"lastSeq": 17, "pend');
  const s = new StateFile(d);
  assert.is(s.lost?.code, 'PKS_STORE_FAILURE');
  assert.ok(s.state.safeMode);
  assert.is(s.state.lastSeq, 0);
  assert.ok(readdirSync(d).some((f) => f.startsWith('uplink-state.json.corrupt-')), 'corrupt file not kept aside');
  // safe mode itself is durable: a restart before the KMS answered stays in it
  const again = new StateFile(d);
  assert.is(again.lost, null);
  assert.ok(again.state.safeMode);
});

test('valid JSON of the wrong shape and an unreadable file are lost state too, not a crash', () => {
  const d = path.join(dir, 'shape');
  mkdirSync(d);
  writeFileSync(path.join(d, 'uplink-state.json'), '[]');
  assert.ok(new StateFile(d).state.safeMode);
  const e = path.join(dir, 'unreadable');
  mkdirSync(path.join(e, 'uplink-state.json'), { recursive: true }); // EISDIR on read
  const s = new StateFile(e);
  assert.ok(s.state.safeMode);
  assert.is(s.lost?.code, 'PKS_STORE_FAILURE');
  assert.ok(existsSync(path.join(e, 'uplink-state.json')));
});

test.run();
