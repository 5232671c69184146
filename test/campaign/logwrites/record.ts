// Host side of the recording (issue 17.2): in a running dev-image VM (scripts/image/boot.sh, the
// box provisioned and its testers registered, test/vm/provision.ts), puts the guest recorder
// (guest/record.sh + guest/line.mjs) and the testers' credentials into the guest, runs it, and
// fetches what it made into OUT:
//   initial.img.gz  the data device before logging (ext4 with the keystore's LMDB)
//   log.img.gz      the dm-log-writes log of the recording
//   events.log      what the testers were told (also in the log as marks)
//   meta.json       the audit public key (SPKI, from the guest's vault), the pool, counts
// Usage: node --import tsx test/campaign/logwrites/record.ts --state VMSTATE --out DIR [--ecus N] [--workers W]
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { guest, type Guest } from '../../vm/guest.js';
import { POOL, TESTERS, masterKey, testerCred } from '../../vm/site.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const GDIR = '/var/tmp/pks-lw';

/** Copies a file out of the guest: the guest POSTs it to a one-shot server on the host's loopback (10.0.2.2 in the guest). */
export async function fetchFromGuest(g: Guest, file: string, dest: string, timeoutS = 900): Promise<number> {
  if (!/^\/[A-Za-z0-9._/-]+$/.test(file)) throw new Error(`guest fetch: bad path ${file}`);
  const token = randomBytes(16).toString('hex');
  let bytes = 0;
  let done: Promise<void> | undefined;
  const srv = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== `/${token}` || done) return void res.writeHead(404).end();
    req.on('data', (d: Buffer) => (bytes += d.length));
    done = pipeline(req, createWriteStream(dest)).then(() => void res.writeHead(200, { connection: 'close' }).end());
    done.catch(() => res.writeHead(500).end());
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  try {
    const js = `const fs = require('fs'); const { Readable } = require('stream'); const r = await fetch('http://10.0.2.2:${port}/${token}', { method: 'POST', body: Readable.toWeb(fs.createReadStream('${file}')), duplex: 'half' }); process.exit(r.ok ? 0 : 1);`;
    await g.sh(`node -e "(async () => { ${js.replace(/"/g, '\\"')} })().catch((e) => { console.error(e.message); process.exit(1); })"`, timeoutS);
    await done;
  } finally {
    srv.close();
  }
  return bytes;
}

export interface RecordOptions {
  state: string;
  out: string;
  ecus: number;
  workers?: number;
  fsMb?: number;
  logMb?: number;
  say?: (s: string) => void;
}

export interface RecordMeta {
  recordedAt: string;
  pool: string;
  auditSpki: string;
  entries: number;
  logBytes: number;
  line: { confirmed: number; retries: number; marks: number; seconds: number };
}

export async function recordInVm(o: RecordOptions): Promise<RecordMeta> {
  const say = o.say ?? (() => {});
  const g = guest(o.state);
  await mkdir(o.out, { recursive: true });
  await g.sh(`rm -rf ${GDIR} && mkdir -p ${GDIR} && chmod 700 ${GDIR}`);
  await g.put(`${GDIR}/record.sh`, await readFile(path.join(HERE, 'guest/record.sh')), '0700');
  await g.put(`${GDIR}/line.mjs`, await readFile(path.join(HERE, 'guest/line.mjs')));
  await g.put(`${GDIR}/box-ca.crt`, await readFile(path.join(o.state, 'box-ca.crt')));
  await g.put(`${GDIR}/master.key`, Buffer.from(masterKey(o.state).toString('hex') + '\n'));
  for (const cn of TESTERS) {
    const c = testerCred(cn);
    await g.put(`${GDIR}/${cn}.key`, Buffer.from(c.key));
    await g.put(`${GDIR}/${cn}.crt`, Buffer.from(c.cert));
  }
  const { spki } = await g.ipc<{ spki: string }>('vault', 'public-key', { name: 'audit' });
  say(`recording: ${o.ecus} ECUs through the guest's tester API, keystore LMDB on ext4 over dm-log-writes`);
  const t0 = Date.now();
  const out = await g.sh(`bash ${GDIR}/record.sh ${GDIR} ${o.ecus} ${o.fsMb ?? 64} ${o.logMb ?? 900} ${o.workers ?? 4} 2>${GDIR}/record.err || { tail -n 30 ${GDIR}/record.err; exit 1; }`, 4 * 3600);
  const r = JSON.parse(out.trim().split('\n').pop()!) as { entries: number; log_bytes: number; line: RecordMeta['line'] };
  say(`recorded in ${((Date.now() - t0) / 1000).toFixed(0)} s: ${r.entries} log entries, ${(r.log_bytes / 1048576).toFixed(1)} MiB, ${r.line.confirmed} injections confirmed`);
  await g.sh(`cd ${GDIR} && gzip -1 -f initial.img log.img`, 1800);
  for (const f of ['initial.img.gz', 'log.img.gz', 'events.log']) {
    const size = Number((await g.sh(`stat -c %s ${GDIR}/${f}`)).trim());
    // the command channel has lost an answer now and then: the copy is checked by its size and made again
    for (let attempt = 1; ; attempt++) {
      const n = await fetchFromGuest(g, `${GDIR}/${f}`, path.join(o.out, f), 300).catch((e: Error) => (say(`  fetch ${f}: ${e.message}`), -1));
      const got = n < 0 ? (await stat(path.join(o.out, f)).catch(() => ({ size: -1 }))).size : n;
      if (got === size) break;
      if (attempt >= 3) throw new Error(`fetching ${f} from the guest: ${got} of ${size} bytes`);
    }
    say(`  fetched ${f}: ${(size / 1048576).toFixed(1)} MiB`);
  }
  await g.sh(`rm -rf ${GDIR}`);
  const meta: RecordMeta = { recordedAt: new Date().toISOString(), pool: POOL, auditSpki: spki, entries: r.entries, logBytes: r.log_bytes, line: r.line };
  await writeFile(path.join(o.out, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
  return meta;
}

const ROOT = path.resolve(HERE, '../../..');

/**
 * The whole recording from a built dev image (`./build.sh campaign --record`): boots a VM of its
 * own (nice'd, fresh overlay and TPM on `disk`), lets the box provision itself, registers the
 * testers and imports keys (test/vm/provision.ts), records, and powers the VM off.
 */
export async function recordFromImage(o: { disk: string; state: string; out: string; ecus: number; say?: (s: string) => void }): Promise<RecordMeta> {
  const say = o.say ?? (() => {});
  const boot = (args: string[], timeoutMs: number): string => {
    const r = spawnSync('nice', ['-n', '10', path.join(ROOT, 'scripts/image/boot.sh'), ...args, '--state', o.state], { cwd: ROOT, encoding: 'utf8', timeout: timeoutMs });
    if (r.status !== 0) throw new Error(`boot.sh ${args[0]}: exit ${r.status}: ${(r.stderr ?? '').trim().slice(-400)}`);
    return r.stdout;
  };
  const port = await new Promise<number>((resolve) => {
    const s = http.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  say(`recording: booting the dev image ${o.disk} (first boot provisions the box; minutes under TCG)`);
  // qemu-img resolves a relative backing file against the overlay's directory
  boot(['start', '--fresh', '--disk', path.resolve(o.disk), '--port', String(port)], 120_000);
  try {
    boot(['wait', '--timeout', '900'], 960_000);
    const g = guest(o.state);
    for (let i = 0; ; i++) {
      const st = await g.sh('systemctl is-active pks-vault pks-keystore pks-tester-api | tr "\\n" " "').catch(() => '');
      if (!/activating|inactive|failed/.test(st) && /active/.test(st)) break;
      if (i > 200) throw new Error(`services not up: ${st}`);
      await new Promise((r) => setTimeout(r, 5000));
    }
    const keys = Math.max(500, o.ecus + 200);
    const p = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/vm/provision.ts'), '--state', o.state, '--keys', String(keys)], { cwd: ROOT, encoding: 'utf8', timeout: 900_000 });
    if (p.status !== 0) throw new Error(`provision: ${(p.stderr ?? '').trim().slice(-400)}`);
    say(`  box provisioned: ${p.stdout.trim()}`);
    return await recordInVm({ state: o.state, out: o.out, ecus: o.ecus, say });
  } finally {
    try {
      boot(['stop', '--timeout', '60'], 120_000);
    } catch {
      boot(['kill'], 60_000);
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { state: { type: 'string' }, out: { type: 'string' }, ecus: { type: 'string', default: '300' }, workers: { type: 'string', default: '4' }, 'fs-mb': { type: 'string', default: '64' } }, strict: true });
  if (!values.state || !values.out) throw new Error('usage: record.ts --state VMSTATE --out DIR [--ecus N] [--workers W] [--fs-mb M]');
  const meta = await recordInVm({ state: values.state, out: values.out, ecus: Number(values.ecus), workers: Number(values.workers), fsMb: Number(values['fs-mb']), say: (s) => process.stderr.write(s + '\n') });
  process.stdout.write(JSON.stringify({ entries: meta.entries, logBytes: meta.logBytes, ...meta.line }) + '\n');
}
