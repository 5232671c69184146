// CAN frames in Linux SocketCAN's wire layout (struct can_frame, 16 bytes; struct canfd_frame,
// 72 bytes): what a CAN_RAW socket reads and writes, what a pcap with LINKTYPE_CAN_SOCKETCAN
// holds (there with can_id big-endian), and what our UDP frame link carries between processes
// on a host without CAN. One layout, so the same bytes are tested on the host and used in the VM.
import { createSocket, type Socket } from 'node:dgram';
import { pksError } from '../errors.js';
import { fdLength, type CanFrame } from './frames.js';
import type { FrameLink } from './transport.js';

export const CAN_MTU = 16;
export const CANFD_MTU = 72;
export const CAN_EFF_FLAG = 0x80000000;
const CANFD_BRS = 0x01;
const CANFD_FDF = 0x04;

export function encodeSocketCan(f: CanFrame, bigEndianId = false): Buffer {
  const fd = !!f.fd;
  if (f.data.length > (fd ? 64 : 8)) throw pksError('PKS_OUT_OF_RANGE', `CAN${fd ? ' FD' : ''} frame of ${f.data.length} bytes`);
  if (fd && fdLength(f.data.length) !== f.data.length) throw pksError('PKS_OUT_OF_RANGE', `CAN FD frame of ${f.data.length} bytes is no DLC length`);
  const b = Buffer.alloc(fd ? CANFD_MTU : CAN_MTU);
  const id = (f.id > 0x7ff ? CAN_EFF_FLAG | f.id : f.id) >>> 0;
  if (bigEndianId) b.writeUInt32BE(id, 0);
  else b.writeUInt32LE(id, 0);
  b[4] = f.data.length;
  if (fd) b[5] = CANFD_BRS | CANFD_FDF;
  f.data.copy(b, 8);
  return b;
}

export function decodeSocketCan(b: Buffer, bigEndianId = false): CanFrame {
  if (b.length !== CAN_MTU && b.length !== CANFD_MTU) throw pksError('PKS_ISOTP_FRAME', `SocketCAN frame of ${b.length} bytes`);
  const fd = b.length === CANFD_MTU;
  const raw = bigEndianId ? b.readUInt32BE(0) : b.readUInt32LE(0);
  const len = b[4]!;
  if (len > (fd ? 64 : 8)) throw pksError('PKS_ISOTP_FRAME', `CAN frame length ${len}`);
  const id = raw & CAN_EFF_FLAG ? raw & 0x1fffffff : raw & 0x7ff;
  return { id, data: Buffer.from(b.subarray(8, 8 + len)), ...(fd ? { fd: true } : {}) };
}

/**
 * A CAN bus between processes on a host without CAN: each datagram one SocketCAN frame, sent
 * to every peer. Malformed datagrams are dropped and counted, as a CAN controller drops bad frames.
 */
export async function udpBus(o: { port: number; peers: number[]; host?: string }): Promise<FrameLink & { port: number; dropped: number; close(): void }> {
  const s: Socket = createSocket('udp4');
  const subs = new Set<(f: CanFrame) => void>();
  const host = o.host ?? '127.0.0.1';
  await new Promise<void>((r, j) => {
    s.once('error', j);
    s.bind(o.port, host, () => r());
  });
  const link = {
    port: s.address().port,
    dropped: 0,
    send(f: CanFrame) {
      const b = encodeSocketCan(f);
      for (const p of o.peers) s.send(b, p, host);
    },
    onFrame(cb: (f: CanFrame) => void) {
      subs.add(cb);
      return () => subs.delete(cb);
    },
    close() {
      s.close();
    },
  };
  s.on('message', (b: Buffer) => {
    let f: CanFrame;
    try {
      f = decodeSocketCan(b);
    } catch {
      link.dropped++;
      return;
    }
    for (const cb of subs) cb(f);
  });
  return link;
}
