// A classic pcap file of CAN frames (LINKTYPE_CAN_SOCKETCAN, can_id big-endian as that link
// type wants), for tshark to decode what our ISO-TP sent on a bus we cannot capture here.
import { writeFileSync } from 'node:fs';
import type { CanFrame } from '../../appliance/isotp/frames.js';
import { encodeSocketCan } from '../../appliance/isotp/socketcan.js';

export function writeCanPcap(file: string, frames: { t: number; f: CanFrame }[]): void {
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0xa1b2c3d4, 0);
  head.writeUInt16LE(2, 4);
  head.writeUInt16LE(4, 6);
  head.writeUInt32LE(0xffff, 16);
  head.writeUInt32LE(227, 20);
  const recs = frames.map(({ t, f }) => {
    const d = encodeSocketCan(f, true);
    const r = Buffer.alloc(16);
    r.writeUInt32LE(Math.floor(t / 1000), 0);
    r.writeUInt32LE(Math.floor((t % 1000) * 1000), 4);
    r.writeUInt32LE(d.length, 8);
    r.writeUInt32LE(d.length, 12);
    return Buffer.concat([r, d]);
  });
  writeFileSync(file, Buffer.concat([head, ...recs]));
}
