// ISO-TP on a SocketCAN interface for pks-inject and the VM test: the frames go through a tiny
// CAN_RAW bridge (can-bridge.py: Node.js has no AF_CAN), ISO-TP itself is ours (transport.ts),
// so classic CAN and CAN FD, flow control, block size, STmin and padding behave the same on a
// real bus, on vcan in the VM and over the host's in-memory and UDP links.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pksError } from '../errors.js';
import type { UdsLink } from '../uds/client.js';
import type { CanFrame } from './frames.js';
import { decodeSocketCan, encodeSocketCan } from './socketcan.js';
import { IsoTp, type FrameLink, type IsoTpOptions } from './transport.js';

const here = path.dirname(fileURLToPath(import.meta.url));
// next to this module: in the checkout, and in dist/ (scripts/copy-assets.mjs copies it)
const BRIDGE = path.join(here, 'can-bridge.py');

export async function canBus(iface: string, rxId: number, fd: boolean): Promise<FrameLink & { close(): void }> {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(iface)) throw pksError('PKS_OUT_OF_RANGE', `CAN interface name '${iface}'`);
  if (!existsSync(`/sys/class/net/${iface}`)) throw pksError('PKS_CAN_UNAVAILABLE', `no network interface ${iface} (no CAN in this kernel, or not up)`);
  if (!existsSync(BRIDGE)) throw pksError('PKS_CAN_UNAVAILABLE', 'can-bridge.py is missing');
  const child = spawn('python3', [BRIDGE, iface, String(rxId), ...(fd ? ['fd'] : [])], { stdio: ['pipe', 'pipe', 'pipe'] });
  const subs = new Set<(f: CanFrame) => void>();
  let buf: Buffer = Buffer.alloc(0);
  let err = '';
  child.stderr.on('data', (b: Buffer) => void (err = (err + b.toString()).slice(-2000)));
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (c) => reject(pksError('PKS_CAN_UNAVAILABLE', `CAN bridge on ${iface} exited ${c}: ${err.trim().split('\n').pop() ?? ''}`)));
    child.stdout.once('data', (b: Buffer) => {
      buf = b.subarray(1);
      resolve();
    });
  });
  const drain = (): void => {
    while (buf.length > 0 && buf.length >= 1 + buf[0]!) {
      const n = buf[0]!;
      try {
        const f = decodeSocketCan(buf.subarray(1, 1 + n));
        for (const s of subs) s(f);
      } catch {
        /* a frame we cannot read is dropped, as a controller drops it */
      }
      buf = buf.subarray(1 + n);
    }
  };
  drain();
  child.stdout.on('data', (b: Buffer) => {
    buf = Buffer.concat([buf, b]);
    drain();
  });
  return {
    send(f) {
      const b = encodeSocketCan(f);
      child.stdin.write(Buffer.concat([Buffer.from([b.length]), b]));
    },
    onFrame(cb) {
      subs.add(cb);
      return () => subs.delete(cb);
    },
    close() {
      child.kill('SIGTERM');
    },
  };
}

export async function canLink(o: { iface: string; tx: number; rx: number; fd: boolean } & Partial<IsoTpOptions>): Promise<{ link: UdsLink; close(): void }> {
  const bus = await canBus(o.iface, o.rx, o.fd);
  const tp = new IsoTp(bus, { ...o, txId: o.tx, rxId: o.rx, fd: o.fd, padding: o.padding ?? 0xcc });
  return {
    link: tp,
    close() {
      tp.close();
      bus.close();
    },
  };
}
