// A DoIP entity (ISO 13400-2): vehicle identification and announcements over UDP, the TCP data
// sockets on 13400 and TLS on 3496, routing activation with its socket rules, alive check,
// entity status, and diagnostic messages ACKed or NACKed before they reach a node. The nodes
// behind it (`resolve(targetAddress)`) answer UDS; the ECU simulator uses this, so it follows
// the standard's state machine closely enough that scapy and tshark agree with it.
import { createSocket, type Socket as UdpSocket, type RemoteInfo } from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { randomInt } from 'node:crypto';
import {
  ACTIVATION_TYPE,
  DIAG_NACK,
  DOIP_HEADER_LEN,
  DOIP_VERSION,
  DOIP_VERSION_2012,
  DoipDecodeError,
  DoipStream,
  HEADER_NACK,
  PT,
  ROUTING,
  decodeHeader,
  decodePayload,
  encode,
  type Message,
  type VehicleId,
} from './codec.js';
import { doipTimers, type DoipTimers } from './timers.js';

/** A node behind the entity: gets one UDS request, answers with `reply` (0..n times, e.g. 0x78 then the answer). */
export type DiagHandler = (req: { sourceAddress: number; data: Buffer; tls: boolean }, reply: (data: Buffer) => void) => void;

export interface EntityOptions {
  identity: Omit<VehicleId, 'furtherAction' | 'syncStatus'> & { furtherAction?: number };
  /** the node answering for a logical address, or undefined (NACK 0x03 unknown target) */
  resolve(targetAddress: number): DiagHandler | undefined;
  tcp?: { host: string; port: number };
  tls?: { host: string; port: number; key: string | Buffer; cert: string | Buffer; ca?: string | Buffer; requestCert?: boolean };
  udp?: { host: string; port: number; announce?: { address: string; port: number } };
  /** routing activation over plain TCP is answered 0x07 (TLS required) */
  requireTls?: boolean;
  maxSockets?: number;
  maxDataSize?: number;
  timers?: Partial<DoipTimers>;
  /** tester source addresses accepted (ISO 13400-2: external test equipment 0x0E00..0x0FFF) */
  testerRange?: [number, number];
  onError?: (e: Error) => void;
}

interface Conn {
  sock: net.Socket;
  tls: boolean;
  sa: number | undefined;
  /** the tester's protocol version: answers go out in it (scapy and 2012 testers match on it) */
  version: number;
  idle: NodeJS.Timeout;
  alive?: (sa: number) => void;
}

export interface DoipEntity {
  tcpPort: number | undefined;
  tlsPort: number | undefined;
  udpPort: number | undefined;
  connections(): number;
  close(): Promise<void>;
}

export async function startEntity(o: EntityOptions): Promise<DoipEntity> {
  const t = doipTimers(o.timers);
  const maxSockets = o.maxSockets ?? 8;
  const maxData = o.maxDataSize ?? 4096 + 4;
  const [loSa, hiSa] = o.testerRange ?? [0x0e00, 0x0fff];
  const conns = new Set<Conn>();
  // with the VIN/GID sync status byte: 33 bytes, as scapy and most testers expect
  const id: VehicleId = { furtherAction: 0x00, syncStatus: 0x00, ...o.identity };
  const err = (e: Error): void => o.onError?.(e);
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, f: () => void): void => {
    const h = setTimeout(() => {
      timers.delete(h);
      f();
    }, ms);
    timers.add(h);
  };

  const send = (c: Conn, m: Message): void => {
    if (!c.sock.destroyed) c.sock.write(encode(m, c.version));
  };
  const touch = (c: Conn, ms: number): void => {
    clearTimeout(c.idle);
    c.idle = setTimeout(() => c.sock.destroy(), ms);
  };

  /** Alive check of a socket holding `sa` (or any, for a free slot): true when it answered. */
  const aliveCheck = (c: Conn): Promise<boolean> =>
    new Promise((resolve) => {
      const h = setTimeout(() => {
        c.alive = undefined;
        c.sock.destroy();
        resolve(false);
      }, t.T_TCP_Alive_Check);
      c.alive = () => {
        clearTimeout(h);
        c.alive = undefined;
        resolve(true);
      };
      send(c, { type: PT.ALIVE_CHECK_REQ });
    });

  const activate = async (c: Conn, m: Extract<Message, { type: typeof PT.ROUTING_ACTIVATION_REQ }>): Promise<void> => {
    const answer = (code: number): void => send(c, { type: PT.ROUTING_ACTIVATION_RES, testerAddress: m.sourceAddress, entityAddress: id.logicalAddress, code });
    if (m.sourceAddress < loSa || m.sourceAddress > hiSa) {
      answer(ROUTING.UNKNOWN_SA);
      c.sock.end();
      return;
    }
    if (m.activationType !== ACTIVATION_TYPE.DEFAULT && m.activationType !== ACTIVATION_TYPE.WWH_OBD && m.activationType !== ACTIVATION_TYPE.CENTRAL_SECURITY) {
      answer(ROUTING.UNSUPPORTED_TYPE);
      c.sock.end();
      return;
    }
    if (o.requireTls && !c.tls) {
      answer(ROUTING.TLS_REQUIRED);
      c.sock.end();
      return;
    }
    if (c.sa !== undefined && c.sa !== m.sourceAddress) {
      answer(ROUTING.SA_MISMATCH);
      c.sock.end();
      return;
    }
    if (c.sa === m.sourceAddress) return answer(ROUTING.SUCCESS);
    // the same tester on another socket: if that one still lives, refuse; if not, take over
    const other = [...conns].find((x) => x !== c && x.sa === m.sourceAddress);
    if (other && (await aliveCheck(other))) {
      answer(ROUTING.SA_IN_USE);
      c.sock.end();
      return;
    }
    c.sa = m.sourceAddress;
    touch(c, t.T_TCP_General_Inactivity);
    answer(ROUTING.SUCCESS);
  };

  const onMessage = (c: Conn, m: Message): void => {
    if (c.sa !== undefined) touch(c, t.T_TCP_General_Inactivity);
    switch (m.type) {
      case PT.ROUTING_ACTIVATION_REQ:
        void activate(c, m).catch(err);
        return;
      case PT.ALIVE_CHECK_RES:
        c.alive?.(m.sourceAddress);
        return;
      case PT.ALIVE_CHECK_REQ:
        // testers may ask too (ISO 13400-2 allows it both ways)
        send(c, { type: PT.ALIVE_CHECK_RES, sourceAddress: id.logicalAddress });
        return;
      case PT.ENTITY_STATUS_REQ:
        send(c, { type: PT.ENTITY_STATUS_RES, nodeType: 0, maxSockets, openSockets: conns.size, maxDataSize: maxData });
        return;
      case PT.POWER_MODE_REQ:
        send(c, { type: PT.POWER_MODE_RES, mode: 0x01 });
        return;
      case PT.DIAG_MESSAGE: {
        const nack = (code: number): void => send(c, { type: PT.DIAG_NACK, sourceAddress: m.targetAddress, targetAddress: m.sourceAddress, code, previous: Buffer.alloc(0) });
        if (c.sa === undefined || c.sa !== m.sourceAddress) {
          // a diagnostic message from a source not activated on this socket: NACK and close
          nack(DIAG_NACK.INVALID_SA);
          c.sock.end();
          return;
        }
        const node = o.resolve(m.targetAddress);
        if (!node) return nack(DIAG_NACK.UNKNOWN_TA);
        send(c, { type: PT.DIAG_ACK, sourceAddress: m.targetAddress, targetAddress: m.sourceAddress, code: 0x00, previous: Buffer.alloc(0) });
        try {
          node({ sourceAddress: m.sourceAddress, data: m.data, tls: c.tls }, (data) => send(c, { type: PT.DIAG_MESSAGE, sourceAddress: m.targetAddress, targetAddress: m.sourceAddress, data }));
        } catch (e) {
          err(e as Error);
          nack(DIAG_NACK.TP_ERROR);
        }
        return;
      }
      case PT.DIAG_ACK:
      case PT.DIAG_NACK:
      case PT.GENERIC_NACK:
        return; // a tester's acknowledgements need no answer
      default:
        // messages that belong to UDP or to the other direction: unknown on this socket
        send(c, { type: PT.GENERIC_NACK, code: HEADER_NACK.UNKNOWN_TYPE });
    }
  };

  const accept = (sock: net.Socket, isTls: boolean): void => {
    sock.setNoDelay(true);
    const c: Conn = { sock, tls: isTls, sa: undefined, version: DOIP_VERSION, idle: setTimeout(() => sock.destroy(), t.T_TCP_Initial_Inactivity) };
    if (conns.size >= maxSockets) {
      // ISO 13400-2 checks free sockets at routing activation; with none left we refuse the
      // activation there, so the socket is accepted and answered 0x01 when it asks
      const full: Conn = c;
      const stream = new DoipStream(maxData, {
        message: (m) => {
          if (m.type === PT.ROUTING_ACTIVATION_REQ) {
            send(full, { type: PT.ROUTING_ACTIVATION_RES, testerAddress: m.sourceAddress, entityAddress: id.logicalAddress, code: ROUTING.NO_FREE_SOCKET });
            sock.end();
          }
        },
        error: () => sock.destroy(),
      });
      sock.on('data', (b: Buffer) => stream.push(b));
      sock.on('error', () => {});
      sock.on('close', () => clearTimeout(c.idle));
      return;
    }
    conns.add(c);
    const stream = new DoipStream(maxData, {
      message: (m, version) => {
        if (version === DOIP_VERSION || version === DOIP_VERSION_2012) c.version = version;
        onMessage(c, m);
      },
      error: (e: DoipDecodeError) => {
        send(c, { type: PT.GENERIC_NACK, code: e.nack });
        if (e.close) sock.end();
      },
    });
    sock.on('data', (b: Buffer) => {
      try {
        stream.push(b);
      } catch (e) {
        err(e as Error);
        sock.destroy();
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(c.idle);
      conns.delete(c);
    });
  };

  const closers: (() => Promise<void>)[] = [];
  const listen = (srv: net.Server, host: string, port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => {
        srv.off('error', reject);
        resolve((srv.address() as net.AddressInfo).port);
      });
      closers.push(() => new Promise((r) => srv.close(() => r())));
    });

  let tcpPort: number | undefined;
  let tlsPort: number | undefined;
  let udpPort: number | undefined;
  if (o.tcp) tcpPort = await listen(net.createServer((s) => accept(s, false)), o.tcp.host, o.tcp.port);
  if (o.tls) {
    const srv = tls.createServer({ key: o.tls.key, cert: o.tls.cert, ...(o.tls.ca ? { ca: o.tls.ca } : {}), requestCert: !!o.tls.requestCert, rejectUnauthorized: !!o.tls.requestCert, minVersion: 'TLSv1.2' }, (s) => accept(s, true));
    srv.on('tlsClientError', () => {});
    tlsPort = await listen(srv, o.tls.host, o.tls.port);
  }
  if (o.udp) {
    const u: UdpSocket = createSocket({ type: 'udp4', reuseAddr: true });
    let udpVersion = DOIP_VERSION;
    const udpAnswer = (m: Message, to: RemoteInfo): void => {
      u.send(encode(m, udpVersion), to.port, to.address);
    };
    u.on('message', (b: Buffer, from: RemoteInfo) => {
      let m: Message;
      try {
        const h = decodeHeader(b, maxData);
        udpVersion = h.version === DOIP_VERSION_2012 ? DOIP_VERSION_2012 : DOIP_VERSION;
        if (b.length !== DOIP_HEADER_LEN + h.length) throw new DoipDecodeError('PKS_DOIP_LENGTH', HEADER_NACK.INVALID_LENGTH, false, 'datagram length does not match the header');
        m = decodePayload(h, b.subarray(DOIP_HEADER_LEN));
      } catch (e) {
        // UDP has no socket to close: NACK and go on
        if (e instanceof DoipDecodeError) udpAnswer({ type: PT.GENERIC_NACK, code: e.nack }, from);
        return;
      }
      const identify = (): void => later(randomInt(0, t.A_DoIP_Announce_Wait + 1), () => udpAnswer({ type: PT.VEHICLE_ANNOUNCEMENT, ...id }, from));
      switch (m.type) {
        case PT.VEHICLE_ID_REQ:
          return identify();
        case PT.VEHICLE_ID_REQ_EID:
          if (m.eid.equals(id.eid)) identify();
          return;
        case PT.VEHICLE_ID_REQ_VIN:
          if (m.vin === id.vin) identify();
          return;
        case PT.ENTITY_STATUS_REQ:
          return udpAnswer({ type: PT.ENTITY_STATUS_RES, nodeType: 0, maxSockets, openSockets: conns.size, maxDataSize: maxData }, from);
        case PT.POWER_MODE_REQ:
          return udpAnswer({ type: PT.POWER_MODE_RES, mode: 0x01 }, from);
        case PT.GENERIC_NACK:
        case PT.VEHICLE_ANNOUNCEMENT:
          return;
        default:
          return udpAnswer({ type: PT.GENERIC_NACK, code: HEADER_NACK.UNKNOWN_TYPE }, from);
      }
    });
    await new Promise<void>((resolve, reject) => {
      u.once('error', reject);
      u.bind(o.udp!.port, o.udp!.host, () => {
        u.off('error', reject);
        resolve();
      });
    });
    udpPort = u.address().port;
    if (o.udp.announce) {
      const a = o.udp.announce;
      u.setBroadcast(true);
      // A_DoIP_Announce_Num announcements, the first after A_DoIP_Announce_Wait
      const first = randomInt(0, t.A_DoIP_Announce_Wait + 1);
      for (let i = 0; i < t.A_DoIP_Announce_Num; i++) later(first + i * t.A_DoIP_Announce_Interval, () => u.send(encode({ type: PT.VEHICLE_ANNOUNCEMENT, ...id }), a.port, a.address));
    }
    closers.push(() => new Promise((r) => u.close(() => r())));
  }

  return {
    tcpPort,
    tlsPort,
    udpPort,
    connections: () => conns.size,
    async close() {
      for (const h of timers) clearTimeout(h);
      for (const c of conns) {
        clearTimeout(c.idle);
        c.sock.destroy();
      }
      await Promise.all(closers.map((f) => f()));
    },
  };
}

