// The bench's memory figure (memory.ts) on real node processes: the shared node binary is
// counted once, not once per process, and the figure still holds each one's own heap.
import { spawn, type ChildProcess } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { memoryOf } from './memory.js';

const idle = (): ChildProcess => spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000); process.stdout.write("up")'], { stdio: ['ignore', 'pipe', 'ignore'] });
const up = (c: ChildProcess): Promise<void> => new Promise((r) => c.stdout!.once('data', () => r()));

test('three node processes: file pages once, anonymous memory each, well under the VmRSS sum', async () => {
  const kids = [idle(), idle(), idle()];
  try {
    await Promise.all(kids.map(up));
    const one = memoryOf({ a: kids[0]!.pid! });
    const three = memoryOf(Object.fromEntries(kids.map((k, i) => [`p${i}`, k.pid!])));
    for (const v of Object.values(three.anonMb)) assert.ok(v > 1, `each has its own heap (${v} MB)`);
    assert.ok(three.vmRssSumMb > 2.5 * one.vmRssSumMb, 'the VmRSS sum counts the binary three times');
    if (three.method === 'pagemap') {
      // the same binary, the same page cache: three processes add at most a little to one's file pages
      assert.ok(three.sharedFileMb < 1.5 * one.sharedFileMb, `file pages ${three.sharedFileMb} MB vs ${one.sharedFileMb} MB for one`);
      assert.ok(three.totalMb < 0.7 * three.vmRssSumMb, `together ${three.totalMb} MB vs VmRSS sum ${three.vmRssSumMb} MB`);
    } else console.log('  (page frames hidden here: file pages counted by PSS)');
    assert.equal(memoryOf({ gone: 2 ** 22 + 7 }).totalMb, 0, 'a process that is gone counts 0');
  } finally {
    for (const k of kids) k.kill('SIGKILL');
  }
});

test.run();
