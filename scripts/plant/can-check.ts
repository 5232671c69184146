// The VM test's CAN check, run inside the guest (its kernel has CAN_RAW and vcan): makes a vcan
// interface, puts UDS ECU simulators on it (ISO-TP, classic CAN and CAN FD alternating, block
// size 4, STmin 1 ms, padding), and programs each the way a tester station does: pks-inject's
// library gets the ECU's package from the box's own tester API over mTLS, carries M1-M3 over
// ISO-TP through the SocketCAN link (appliance/isotp/can-link.ts), reads M4/M5 and confirms
// them with the box, which verifies the proof in its HSM. The last ECU goes through the
// pks-inject CLI itself. candump (can-utils, code nobody here wrote) records the bus; its log is
// kept for the host, which has tshark decode it (test/vm/can.ts).
// Last line: {"can_injected":N,"of":M,"frames":F,"log":"/run/pks-can/candump.log"}.
//   node /usr/lib/pks/dist/scripts/plant/can-check.js --box https://127.0.0.1:8443 --dir DIR
//     [--ecus 20] [--iface vcan-pks] [--pool oem1.bcm.key4]
//   DIR holds box-ca.crt, tester.crt, tester.key and master.key (the pool's MASTER_ECU_KEY, hex)
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { boxClient } from '../../appliance/inject/box.js';
import { injectEcu } from '../../appliance/inject/inject.js';
import { canBus, canLink } from '../../appliance/isotp/can-link.js';
import { parseHex } from '../../appliance/she.js';
import { DEFAULT_MAPPING, devSecuritySecret, mappingFor } from '../../appliance/uds/mapping.js';
import { UdsEcu, serveIsoTp } from './ecu-uds.js';

const { values } = parseArgs({
  options: {
    box: { type: 'string' },
    dir: { type: 'string' },
    ecus: { type: 'string', default: '20' },
    iface: { type: 'string', default: 'vcan-pks' },
    pool: { type: 'string', default: 'oem1.bcm.key4' },
  },
  strict: true,
});
if (!values.box || !values.dir) throw new Error('usage: can-check --box URL --dir DIR [--ecus N] [--iface IF] [--pool POOL]');
const n = Number(values.ecus);
const ifc = values.iface!;
const dir = values.dir;
const file = (f: string): string => readFileSync(path.join(dir, f), 'utf8');
const master = parseHex(file('master.key').trim(), 16, 'master.key');
const pool = values.pool!;
const m = mappingFor(DEFAULT_MAPPING, pool);
const sh = (c: string, ...a: string[]): void => void execFileSync(c, a, { stdio: 'pipe' });
const log = path.join(dir, 'candump.log');
try {
  sh('modprobe', 'vcan');
} catch {
  /* built in, or already loaded */
}
sh('ip', 'link', 'add', 'dev', ifc, 'type', 'vcan');
sh('ip', 'link', 'set', ifc, 'mtu', '72'); // CAN FD frames
sh('ip', 'link', 'set', ifc, 'up');
// -L: one "(time) iface id#data" line per frame (## for CAN FD), what the host converts to a pcap
const dump = spawn('sh', ['-c', `exec candump -L ${ifc} > ${log}`], { stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 300));

let ok = 0;
const box = boxClient({ url: values.box, ca: file('box-ca.crt'), cert: file('tester.crt'), key: file('tester.key') });
const cliMain = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../appliance/inject/main.js');
try {
  for (let i = 0; i < n; i++) {
    const fd = i % 2 === 1;
    const viaCli = i === n - 1;
    const uid = Buffer.concat([Buffer.from([0x40]), randomBytes(14)]);
    const ecu = new UdsEcu({ type: m.type, mapping: m, uid, masterKey: master });
    const bus = await canBus(ifc, 0x7e0, fd);
    const srv = serveIsoTp(bus, ecu, { txId: 0x7e8, rxId: 0x7e0, fd, padding: 0xcc, blockSize: 4, stMin: 1 });
    try {
      if (viaCli) {
        // the station's own command line, as maintenance would run it at a line
        const args = [cliMain, '--box', values.box, '--ca', path.join(dir, 'box-ca.crt'), '--cert', path.join(dir, 'tester.crt'), '--key', path.join(dir, 'tester.key')];
        args.push('--pool', pool, '--can', ifc, '--tx', '0x7e0', '--rx', '0x7e8', '--json', ...(fd ? ['--fd'] : []));
        const { stdout } = await promisify(execFile)(process.execPath, args, { timeout: 120_000 });
        const r = JSON.parse(stdout.trim().split('\n')[0]!) as { ok: boolean; verified?: boolean; uid?: string };
        if (r.ok && r.verified && r.uid === uid.toString('hex')) ok++;
        else process.stderr.write(`can-check: ECU ${i} via pks-inject: ${stdout.trim()}\n`);
      } else {
        const t = await canLink({ iface: ifc, tx: 0x7e0, rx: 0x7e8, fd });
        try {
          const r = await injectEcu({ box, link: t.link, pool, mapping: DEFAULT_MAPPING, securitySecret: devSecuritySecret, attempts: 3 });
          if (r.ok && r.verified && r.uid === uid.toString('hex')) ok++;
          else process.stderr.write(`can-check: ECU ${i} (${fd ? 'CAN FD' : 'classic'}): ${r.error?.code ?? '?'}: ${r.error?.detail ?? JSON.stringify(r)}\n`);
        } finally {
          t.close();
        }
      }
    } catch (e) {
      process.stderr.write(`can-check: ECU ${i} (${fd ? 'CAN FD' : 'classic'}): ${String(e)}\n`);
    } finally {
      srv.close();
      bus.close();
    }
  }
} finally {
  await box.close();
  await new Promise((r) => setTimeout(r, 300));
  dump.kill('SIGTERM');
  await new Promise((r) => dump.once('exit', r));
  sh('ip', 'link', 'del', ifc);
}
const frames = readFileSync(log, 'utf8').split('\n').filter(Boolean).length;
process.stdout.write(JSON.stringify({ can_injected: ok, of: n, frames, log }) + '\n');
process.exit(ok === n ? 0 : 1);
