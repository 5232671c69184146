// Runs in the dev image's guest (node, no tsx): a production line against the box's own tester
// API on 127.0.0.1:8443 while dm-log-writes records the keystore's block writes. Every answer a
// tester got is put into the write log as a MARK (`dmsetup message DEV 0 mark ...`), sent only
// after the answer arrived, so that a mark sits after every write the box made durable before
// answering:
//   i,<packageId>,<uid>   the box handed this package out for this ECU
//   c,<packageId>,<uid>   the box confirmed the injection (INJECTED)
// events of one moment joined by ';' into one mark (the kernel keeps at most 479 bytes and
// splits its message at whitespace, so no spaces). The same lines go to DIR/events.log.
// Usage: node line.mjs --dir DIR --ecus N [--workers W] [--pool P] [--dev pks-lw] [--port 8443]
//   DIR holds box-ca.crt, master.key and <tester>.key/.crt for each --testers name.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { SheEcu } = await import('/usr/lib/pks/dist/scripts/plant/ecu-sim.js');
const { Client } = await import('/usr/lib/pks/node_modules/undici/index.js');

const { values: o } = parseArgs({
  options: {
    dir: { type: 'string' },
    ecus: { type: 'string', default: '200' },
    workers: { type: 'string', default: '4' },
    pool: { type: 'string', default: 'oem1.bcm.key4' },
    dev: { type: 'string', default: 'pks-lw' },
    port: { type: 'string', default: '8443' },
    testers: { type: 'string', default: 'tester-vm-1,tester-vm-2' },
  },
  strict: true,
});
if (!o.dir) throw new Error('usage: line.mjs --dir DIR --ecus N');
const dir = o.dir;
const ca = readFileSync(path.join(dir, 'box-ca.crt'), 'utf8');
const master = Buffer.from(readFileSync(path.join(dir, 'master.key'), 'utf8').trim(), 'hex');
const testers = o.testers.split(',');
const limit = Number(o.ecus);
const MARK_MAX = 470;

// one dmsetup at a time, events of the meantime packed into one mark
const queue = [];
let marking = null;
let marks = 0;
function mark(event) {
  appendFileSync(path.join(dir, 'events.log'), event + '\n');
  queue.push(event);
  if (!marking) marking = drain();
}
async function drain() {
  while (queue.length) {
    let text = queue.shift();
    while (queue.length && text.length + 1 + queue[0].length <= MARK_MAX) text += ';' + queue.shift();
    await new Promise((resolve, reject) =>
      execFile('dmsetup', ['message', o.dev, '0', 'mark', text], (e) => (e ? reject(e) : resolve())),
    );
    marks++;
  }
  marking = null;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let started = 0;
let confirmed = 0;
let retries = 0;

async function station(cn) {
  const key = readFileSync(path.join(dir, `${cn}.key`), 'utf8');
  const cert = readFileSync(path.join(dir, `${cn}.crt`), 'utf8');
  const newClient = () => new Client(`https://127.0.0.1:${o.port}`, { connect: { ca, key, cert, servername: 'localhost', timeout: 30_000 }, headersTimeout: 60_000, bodyTimeout: 60_000 });
  let c = newClient();
  const call = async (p, body) => {
    try {
      const r = await c.request({ method: 'POST', path: p, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const text = await r.body.text();
      return { status: r.statusCode, body: text ? JSON.parse(text) : {} };
    } catch (e) {
      await c.destroy().catch(() => undefined);
      c = newClient();
      throw e;
    }
  };
  while (started < limit) {
    started++;
    const uid = randomBytes(15);
    uid[0] = 0x20;
    const hex = uid.toString('hex');
    const ecu = new SheEcu(uid, master);
    let proof;
    for (;;) {
      try {
        const r = await call('/v1/she/packages', { pool: o.pool, uid: hex });
        if (r.status !== 200) throw new Error(`reserve ${r.status} ${r.body.code ?? ''}`);
        mark(`i,${r.body.packageId},${hex}`);
        proof ??= ecu.loadKey(Buffer.from(r.body.m1, 'hex'), Buffer.from(r.body.m2, 'hex'), Buffer.from(r.body.m3, 'hex'));
        const k = await call(`/v1/she/packages/${r.body.packageId}/confirm`, { m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') });
        if (k.status !== 200 || k.body.state !== 'INJECTED') throw new Error(`confirm ${k.status} ${k.body.code ?? k.body.state ?? ''}`);
        mark(`c,${r.body.packageId},${hex}`);
        confirmed++;
        break;
      } catch (e) {
        retries++;
        if (retries % 20 === 1) process.stderr.write(`line: ${cn}: ${e.message}\n`);
        await sleep(300);
      }
    }
  }
  await c.close().catch(() => undefined);
}

const t0 = Date.now();
const progress = setInterval(() => process.stderr.write(`line: ${confirmed} confirmed, ${marks} marks, ${((Date.now() - t0) / 1000).toFixed(0)} s\n`), 15_000);
await Promise.all(Array.from({ length: Number(o.workers) }, (_, w) => station(testers[w % testers.length])));
while (marking) await marking;
clearInterval(progress);
process.stdout.write(JSON.stringify({ confirmed, retries, marks, seconds: Math.round((Date.now() - t0) / 1000) }) + '\n');
