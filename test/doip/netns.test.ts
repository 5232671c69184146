// Vehicle identification over UDP as on a plant network, inside a network namespace this test
// makes (ip netns + a veth pair): the ECU simulator in the namespace announces itself by
// broadcast A_DoIP_Announce_Num times, answers broadcast and VIN/EID-filtered identification
// requests on the standard port 13400, and serves UDS over TCP 13400. Skipped with a message
// where namespaces cannot be made (not root, no iproute2).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { DoipClient, discover } from '../../appliance/doip/client.js';
import { DOIP_HEADER_LEN, PT, decodeHeader, decodePayload } from '../../appliance/doip/codec.js';
import { UdsClient } from '../../appliance/uds/client.js';
import { ROOT } from '../../scripts/plant/process.js';
import { freePort } from '../helpers/ports.js';

const tag = (process.pid % 10000).toString();
const NS = `pks-doip-${tag}`;
const HOST_IF = `pkd${tag}a`;
const NS_IF = `pkd${tag}b`;
const octet = 100 + (process.pid % 100);
const HOST_IP = `10.213.${octet}.1`;
const NS_IP = `10.213.${octet}.2`;
const BCAST = `10.213.${octet}.255`;
const VIN = 'WPKSNETNS00000001';

const ip = (...a: string[]): void => void execFileSync('ip', a, { stdio: 'pipe' });
function setup(): string | undefined {
  try {
    ip('netns', 'add', NS);
  } catch (e) {
    return `ip netns add failed: ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}`;
  }
  ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF);
  ip('link', 'set', NS_IF, 'netns', NS);
  ip('addr', 'add', `${HOST_IP}/24`, 'broadcast', BCAST, 'dev', HOST_IF);
  ip('link', 'set', HOST_IF, 'up');
  ip('-n', NS, 'addr', 'add', `${NS_IP}/24`, 'broadcast', BCAST, 'dev', NS_IF);
  ip('-n', NS, 'link', 'set', NS_IF, 'up');
  ip('-n', NS, 'link', 'set', 'lo', 'up');
  return undefined;
}
function teardown(): void {
  try {
    ip('link', 'del', HOST_IF);
  } catch {
    /* gone with the namespace */
  }
  try {
    ip('netns', 'del', NS);
  } catch {
    /* never made */
  }
}

test('vehicle announcement, identification by broadcast, VIN and EID, then UDS over TCP 13400, in a network namespace', async () => {
  const why = process.getuid?.() === 0 ? setup() : 'not root';
  if (why) {
    console.log(`  (skipped: no network namespace here: ${why})`);
    teardown();
    return;
  }
  let sim: ChildProcess | undefined;
  const announce = createSocket({ type: 'udp4', reuseAddr: true });
  try {
    const annPort = await freePort();
    const announcements: string[] = [];
    announce.on('message', (b: Buffer) => {
      const m = decodePayload(decodeHeader(b, 64), b.subarray(DOIP_HEADER_LEN));
      if (m.type === PT.VEHICLE_ANNOUNCEMENT) announcements.push(m.vin);
    });
    await new Promise<void>((r) => announce.bind(annPort, '0.0.0.0', () => r()));
    sim = spawn('ip', ['netns', 'exec', NS, process.execPath, '--import', 'tsx', 'scripts/plant/ecu-uds-serve.ts', '--host', '0.0.0.0', '--tcp', '13400', '--udp', '13400', '--announce', `${BCAST}:${annPort}`, '--vin', VIN, '--ecus', '0x1001:bcm'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    sim.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    const ready = await new Promise<{ ecus: { uid: string }[] }>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`simulator did not start: ${err}`)), 30_000);
      sim!.stdout!.on('data', (b: Buffer) => {
        out += b.toString();
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) {
          clearTimeout(t);
          resolve(JSON.parse(line));
        }
      });
      sim!.once('exit', (c) => reject(new Error(`simulator exited ${c}: ${err}`)));
    });
    // A_DoIP_Announce_Wait (<= 500 ms) + 2 x A_DoIP_Announce_Interval (500 ms)
    await new Promise((r) => setTimeout(r, 1700));
    assert.equal(announcements, [VIN, VIN, VIN], 'three vehicle announcements by broadcast');

    const all = await discover({ address: BCAST, port: 13400, bind: HOST_IP, broadcast: true, waitMs: 800 });
    assert.is(all.found.length, 1);
    assert.is(all.found[0]!.vin, VIN);
    assert.is(all.found[0]!.from, NS_IP);
    assert.is(all.found[0]!.logicalAddress, 0x1000);
    const byVin = await discover({ address: BCAST, port: 13400, bind: HOST_IP, broadcast: true, waitMs: 800, vin: VIN });
    assert.is(byVin.found.length, 1);
    const otherVin = await discover({ address: BCAST, port: 13400, bind: HOST_IP, broadcast: true, waitMs: 800, vin: 'WPKSNOTTHISONE000' });
    assert.is(otherVin.found.length, 0, 'a VIN filter that does not match gets no answer');
    const byEid = await discover({ address: NS_IP, port: 13400, bind: HOST_IP, waitMs: 800, eid: Buffer.from('02000000ee01', 'hex') });
    assert.is(byEid.found.length, 1);

    const c = await DoipClient.connect({ host: NS_IP, port: 13400, sourceAddress: 0x0e80 });
    try {
      await c.activate();
      const u = new UdsClient(c.link(0x1001));
      assert.is((await u.readDid(0xf1a0)).toString('hex'), ready.ecus[0]!.uid);
    } finally {
      c.close();
    }
  } finally {
    announce.close();
    if (sim && sim.exitCode === null) {
      sim.kill('SIGTERM');
      await new Promise((r) => sim!.once('exit', r));
    }
    teardown();
  }
});

test.run();
