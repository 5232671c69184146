// Runs UDS ECU simulators behind one DoIP entity as its own process, so a test can put it in a
// network namespace (vehicle identification over real broadcast) or the VM can run it on CAN.
//   node --import tsx scripts/plant/ecu-uds-serve.ts --host 0.0.0.0 [--tcp 13400] [--udp 13400]
//     [--announce 10.0.0.255:13400] [--vin VIN] [--ecus 0x1001:bcm,0x1002:gateway] [--master HEX32]
// Prints one JSON line {"ready":true,"tcp":P,"udp":P,"ecus":[{"address","type","uid"}]}; SIGTERM stops it.
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { parseHex } from '../../appliance/she.js';
import { DEFAULT_MAPPING, mappingFor } from '../../appliance/uds/mapping.js';
import { UdsEcu, serveDoip } from './ecu-uds.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    tcp: { type: 'string', default: '0' },
    udp: { type: 'string' },
    announce: { type: 'string' },
    vin: { type: 'string', default: 'WPKS0000000000009' },
    ecus: { type: 'string', default: '0x1001:bcm' },
    master: { type: 'string' },
  },
  strict: true,
});
const master = values.master ? parseHex(values.master, 16, '--master') : randomBytes(16);
const ecus = new Map<number, UdsEcu>();
for (const spec of values.ecus!.split(',')) {
  const [a, type] = spec.split(':');
  const m = mappingFor(DEFAULT_MAPPING, `x.${type}.x`);
  ecus.set(parseInt(a!, 16), new UdsEcu({ type: m.type, mapping: m, uid: Buffer.concat([Buffer.from([0x10]), randomBytes(14)]), masterKey: master }));
}
const ann = values.announce?.split(':');
const entity = await serveDoip({
  identity: { vin: values.vin!, logicalAddress: 0x1000, eid: Buffer.from('02000000ee01', 'hex'), gid: Buffer.from('02000000ee01', 'hex') },
  ecus: (a) => ecus.get(a),
  tcp: { host: values.host!, port: Number(values.tcp) },
  ...(values.udp !== undefined ? { udp: { host: values.host!, port: Number(values.udp), ...(ann ? { announce: { address: ann[0]!, port: Number(ann[1]) } } : {}) } } : {}),
});
process.stdout.write(JSON.stringify({ ready: true, tcp: entity.tcpPort, udp: entity.udpPort, ecus: [...ecus].map(([address, e]) => ({ address, type: e.type, uid: e.uid.toString('hex') })) }) + '\n');
process.once('SIGTERM', () => void entity.close().then(() => process.exit(0)));
