// The VM test's CAN check, run inside the guest (its kernel has CAN, vcan and CAN_RAW): makes a
// vcan interface, puts UDS ECU simulators on it (ISO-TP, classic CAN and CAN FD alternating),
// and programs each with the key-programming sequence over ISO-TP through the SocketCAN link
// pks-inject uses (appliance/isotp/can-link.ts). Last line: {"can_injected":N,"of":M}.
//   node /usr/lib/pks/dist/scripts/plant/can-check.js [--ecus 20] [--iface vcan-pks]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { canBus, canLink } from '../../appliance/isotp/can-link.js';
import { sheMessages, sheVerify } from '../../appliance/she.js';
import { UdsClient } from '../../appliance/uds/client.js';
import { DEFAULT_MAPPING, devSecuritySecret, mappingFor, securityKey } from '../../appliance/uds/mapping.js';
import { UdsEcu, serveIsoTp } from './ecu-uds.js';

const { values } = parseArgs({ options: { ecus: { type: 'string', default: '20' }, iface: { type: 'string', default: 'vcan-pks' } }, strict: true });
const n = Number(values.ecus);
const ifc = values.iface!;
const sh = (c: string, ...a: string[]): void => void execFileSync(c, a, { stdio: 'pipe' });
try {
  sh('modprobe', 'vcan');
} catch {
  /* built in, or already loaded */
}
sh('ip', 'link', 'add', 'dev', ifc, 'type', 'vcan');
sh('ip', 'link', 'set', ifc, 'mtu', '72'); // CAN FD frames
sh('ip', 'link', 'set', ifc, 'up');
let ok = 0;
const master = randomBytes(16);
const m = mappingFor(DEFAULT_MAPPING, 'oem1.bcm.key4');
try {
  for (let i = 0; i < n; i++) {
    const fd = i % 2 === 1;
    const ecu = new UdsEcu({ type: m.type, mapping: m, uid: Buffer.concat([Buffer.from([0x40]), randomBytes(14)]), masterKey: master });
    const bus = await canBus(ifc, 0x7e0, fd);
    const srv = serveIsoTp(bus, ecu, { txId: 0x7e8, rxId: 0x7e0, fd, padding: 0xcc, blockSize: 4, stMin: 1 });
    const t = await canLink({ iface: ifc, tx: 0x7e0, rx: 0x7e8, fd });
    try {
      const u = new UdsClient(t.link);
      await u.session(m.session);
      await u.securityAccess(m.securityLevel!, (seed) => securityKey('aes128-cmac', devSecuritySecret(m.type, m.securityLevel!), seed));
      const uid = await u.readDid(m.uidDid);
      const s = { uid, keyId: 4, authKeyId: 1, authKey: master, newKey: randomBytes(16), counter: 1, flags: 0 };
      const x = sheMessages(s);
      const proof = await u.routine(0x0301, Buffer.concat([x.m1, x.m2, x.m3]));
      if (sheVerify(s, proof.subarray(0, 32), proof.subarray(32))) ok++;
      await u.ecuReset(1);
    } catch (e) {
      process.stderr.write(`can-check: ECU ${i} (${fd ? 'CAN FD' : 'classic'}): ${String(e)}\n`);
    } finally {
      t.close();
      srv.close();
      bus.close();
    }
  }
} finally {
  sh('ip', 'link', 'del', ifc);
}
process.stdout.write(JSON.stringify({ can_injected: ok, of: n }) + '\n');
process.exit(ok === n ? 0 : 1);
