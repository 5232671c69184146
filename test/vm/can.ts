// The VM test's CAN leg (issue 15), host side: hands the guest a tester's credentials, the box
// CA and the pool's master key (for the simulated ECUs) in a tmpfs directory, runs the guest's
// CAN check (scripts/plant/can-check.ts: pks-inject over ISO-TP on vcan against the box's own
// tester API, candump recording the bus), then has tshark's ISO-TP and UDS dissectors decode
// candump's log of the real kernel bus: every ISO-TP frame type and the key-programming services
// present, nothing malformed.
// Usage: node --import tsx test/vm/can.ts --state DIR [--ecus N]
// Prints one JSON line: {"can_injected":N,"of":M,"frames":F,"malformed":K,"dissected":bool}
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { CanFrame } from '../../appliance/isotp/frames.js';
import { haveTshark, malformed, tsharkFields } from '../helpers/capture.js';
import { writeCanPcap } from '../helpers/pcap.js';
import { guest } from './guest.js';
import { POOL, TESTERS, masterKey, testerCred } from './site.js';

const { values } = parseArgs({ options: { state: { type: 'string' }, ecus: { type: 'string', default: '20' } }, strict: true });
if (!values.state) throw new Error('usage: can.ts --state DIR [--ecus N]');
const state = values.state;
const ecus = Number(values.ecus);
if (!Number.isInteger(ecus) || ecus < 2 || ecus > 500) throw new Error('--ecus: 2..500');
const g = guest(state);
const dir = '/run/pks-can';
const cred = testerCred(TESTERS[0]);
await g.sh(`rm -rf ${dir} && mkdir -m 0700 ${dir}`);
await g.sh(`cp /etc/pks/tls/box-ca.crt ${dir}/box-ca.crt`);
await g.put(`${dir}/tester.crt`, Buffer.from(cred.cert));
await g.put(`${dir}/tester.key`, Buffer.from(cred.key));
await g.put(`${dir}/master.key`, Buffer.from(masterKey(state).toString('hex') + '\n'));

let line: { can_injected: number; of: number; frames: number; log: string };
try {
  const outp = await g.sh(`node /usr/lib/pks/dist/scripts/plant/can-check.js --box https://127.0.0.1:8443 --dir ${dir} --ecus ${ecus} --pool ${POOL} 2>&1`, 900);
  line = JSON.parse(outp.trim().split('\n').pop()!);
} catch (e) {
  process.stderr.write(`can: ${String(e)}\n`);
  process.stdout.write(JSON.stringify({ can_injected: 0, of: ecus, frames: 0, malformed: 0, dissected: false }) + '\n');
  process.exit(1);
}

// candump -L: "(1700000000.123456) vcan-pks 7E0#0210030000000000" classic, "7E0##1<data>" CAN FD
const frames: { t: number; f: CanFrame }[] = [];
const dump = await g.sh(`cat ${dir}/candump.log; rm -rf ${dir}`, 300);
for (const l of dump.split('\n')) {
  const m = /^\((\d+)\.(\d+)\) \S+ ([0-9A-F]{3,8})(##[0-9A-F]|#)([0-9A-F]*)$/.exec(l.trim());
  if (!m) continue;
  frames.push({ t: Number(m[1]) * 1000 + Number(m[2]) / 1000, f: { id: parseInt(m[3]!, 16), data: Buffer.from(m[5]!, 'hex'), ...(m[4]!.startsWith('##') ? { fd: true } : {}) } });
}
let bad = -1;
let dissected = false;
if (haveTshark && frames.length > 0) {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'pks-vmcan-'));
  try {
    const file = path.join(tmp, 'vcan.pcap');
    writeCanPcap(file, frames);
    const opts = ['-o', 'iso15765.can.ids:0x7e0,0x7e8', '-d', 'iso15765.subdissector,uds'];
    const rows = await tsharkFields(file, [], ['iso15765.message_type', 'uds.sid'], undefined, opts);
    const types = new Set(rows.flatMap((r) => r[0]!.split(',')).filter(Boolean).map(Number));
    const sids = new Set(rows.flatMap((r) => (r[1] ? r[1].split(',') : [])));
    bad = (await malformed(file, [], opts)).length;
    // SF, FF, CF, FC; session, security access, read UID, the load routine, reset
    dissected = [0, 1, 2, 3].every((t) => types.has(t)) && ['0x10', '0x27', '0x22', '0x31'].every((s) => sids.has(s)) && bad === 0;
    if (!dissected) process.stderr.write(`can: tshark saw ISO-TP types ${[...types]} UDS ${[...sids]}, malformed ${bad}\n`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
process.stdout.write(JSON.stringify({ can_injected: line.can_injected, of: line.of, frames: frames.length, malformed: bad, dissected }) + '\n');
process.exit(line.can_injected === line.of && dissected ? 0 : 1);
