// The tester's side of DoIP (ISO 13400-2): vehicle discovery over UDP, one TCP (13400) or TLS
// (3496) data socket with routing activation, alive check answers, and diagnostic messages
// that wait for the entity's ACK/NACK before the UDS answer. Every failure is a coded error
// (PKS_DOIP_*); a peer that breaks the protocol closes the socket, it never throws past us.
import { createSocket } from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { pksError, type PksError } from '../errors.js';
import { ACTIVATION_TYPE, DOIP_HEADER_LEN, DoipDecodeError, DoipStream, PT, ROUTING, decodeHeader, decodePayload, encode, type EntityStatus, type Message, type VehicleId } from './codec.js';
import type { UdsLink } from '../uds/client.js';
import { doipTimers, type DoipTimers } from './timers.js';

/** a UDS link to one node: send waits for the entity's ACK (NACK: PKS_DOIP_NACK) */
export type DiagLink = UdsLink;

export interface ClientOptions {
  host: string;
  port: number;
  /** TLS (port 3496 in a vehicle): server CA, and the tester's certificate when the entity asks for one */
  tls?: { ca: string | Buffer; cert?: string | Buffer; key?: string | Buffer; servername?: string };
  sourceAddress: number;
  activationType?: number;
  timers?: Partial<DoipTimers>;
  maxPayload?: number;
}

interface Waiter<T> {
  resolve(v: T): void;
  reject(e: PksError): void;
}

export class DoipClient {
  readonly timers: DoipTimers;
  entityAddress: number | undefined;
  private stream: DoipStream;
  private ctrl: { type: number; w: Waiter<Message> } | undefined;
  private acks = new Map<number, Waiter<void>[]>();
  private inbox = new Map<number, Buffer[]>();
  private readers = new Map<number, Waiter<Buffer>[]>();
  private closed: PksError | undefined;
  /** bytes sent and received, in order, for captures (tshark conformance, the bench) */
  tap?: (dir: 'out' | 'in', bytes: Buffer) => void;

  private constructor(
    private readonly sock: net.Socket,
    private readonly o: ClientOptions,
  ) {
    this.timers = doipTimers(o.timers);
    this.stream = new DoipStream(o.maxPayload ?? 64 * 1024, {
      message: (m) => this.onMessage(m),
      error: (e: DoipDecodeError) => {
        this.write(encode({ type: PT.GENERIC_NACK, code: e.nack }));
        if (e.close) this.fail(e.toPks());
      },
    });
    sock.on('data', (b: Buffer) => {
      this.tap?.('in', b);
      this.stream.push(b);
    });
    sock.on('error', (e) => this.fail(pksError('PKS_DOIP_CLOSED', `socket: ${e.message}`)));
    sock.on('close', () => this.fail(pksError('PKS_DOIP_CLOSED', 'the entity closed the connection')));
  }

  static async connect(o: ClientOptions): Promise<DoipClient> {
    const t = doipTimers(o.timers);
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = o.tls
        ? tls.connect({ host: o.host, port: o.port, ca: o.tls.ca, ...(o.tls.cert ? { cert: o.tls.cert, key: o.tls.key } : {}), servername: o.tls.servername ?? 'localhost', minVersion: 'TLSv1.2' })
        : net.connect({ host: o.host, port: o.port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(pksError('PKS_DOIP_TIMEOUT', `connect to ${o.host}:${o.port}`));
      }, t.A_DoIP_Ctrl);
      s.once(o.tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(pksError('PKS_DOIP_CLOSED', `connect to ${o.host}:${o.port}: ${e.message}`));
      });
    });
    sock.setNoDelay(true);
    return new DoipClient(sock, o);
  }

  private write(b: Buffer): void {
    if (this.sock.destroyed) return;
    this.tap?.('out', b);
    this.sock.write(b);
  }

  private fail(e: PksError): void {
    if (this.closed) return;
    this.closed = e;
    this.ctrl?.w.reject(e);
    this.ctrl = undefined;
    for (const ws of this.acks.values()) for (const w of ws) w.reject(e);
    for (const ws of this.readers.values()) for (const w of ws) w.reject(e);
    this.acks.clear();
    this.readers.clear();
    this.sock.destroy();
  }

  private onMessage(m: Message): void {
    switch (m.type) {
      case PT.ALIVE_CHECK_REQ:
        this.write(encode({ type: PT.ALIVE_CHECK_RES, sourceAddress: this.o.sourceAddress }));
        return;
      case PT.DIAG_ACK:
      case PT.DIAG_NACK: {
        const w = this.acks.get(m.sourceAddress)?.shift();
        if (!w) return;
        if (m.type === PT.DIAG_ACK) w.resolve();
        else w.reject(pksError('PKS_DOIP_NACK', `diagnostic message to 0x${m.sourceAddress.toString(16)} refused, NACK code 0x${m.code.toString(16).padStart(2, '0')}`));
        return;
      }
      case PT.DIAG_MESSAGE: {
        if (m.targetAddress !== this.o.sourceAddress) return;
        const r = this.readers.get(m.sourceAddress)?.shift();
        if (r) r.resolve(m.data);
        else {
          const q = this.inbox.get(m.sourceAddress) ?? [];
          if (q.length < 64) q.push(m.data); // a chatty entity cannot make us buffer without end
          this.inbox.set(m.sourceAddress, q);
        }
        return;
      }
      case PT.GENERIC_NACK:
        // the entity did not understand us: fail the control request or the pending sends
        this.fail(pksError('PKS_DOIP_NACK', `generic header NACK 0x${m.code.toString(16).padStart(2, '0')}`));
        return;
      default:
        if (this.ctrl && this.ctrl.type === m.type) {
          const c = this.ctrl;
          this.ctrl = undefined;
          c.w.resolve(m);
        }
    }
  }

  private control<T extends Message>(req: Message, answer: number): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    if (this.ctrl) return Promise.reject(pksError('PKS_CONFLICT', 'a DoIP control request is already pending'));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.ctrl = undefined;
        reject(pksError('PKS_DOIP_TIMEOUT', `no answer of type 0x${answer.toString(16).padStart(4, '0')} within A_DoIP_Ctrl ${this.timers.A_DoIP_Ctrl} ms`));
      }, this.timers.A_DoIP_Ctrl);
      this.ctrl = {
        type: answer,
        w: {
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m as T);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        },
      };
      this.write(encode(req));
    });
  }

  /** Routing activation; anything but 0x10 is PKS_DOIP_ROUTING_DENIED with the code. */
  async activate(): Promise<number> {
    const r = await this.control<Extract<Message, { type: typeof PT.ROUTING_ACTIVATION_RES }>>(
      { type: PT.ROUTING_ACTIVATION_REQ, sourceAddress: this.o.sourceAddress, activationType: this.o.activationType ?? ACTIVATION_TYPE.DEFAULT, oem: Buffer.alloc(4) },
      PT.ROUTING_ACTIVATION_RES,
    );
    if (r.code !== ROUTING.SUCCESS) throw pksError('PKS_DOIP_ROUTING_DENIED', `routing activation answered 0x${r.code.toString(16).padStart(2, '0')}`);
    if (r.testerAddress !== this.o.sourceAddress) throw pksError('PKS_DOIP_ROUTING_DENIED', 'routing activation answered for another tester address');
    this.entityAddress = r.entityAddress;
    return r.entityAddress;
  }

  async entityStatus(): Promise<EntityStatus> {
    return await this.control<Extract<Message, { type: typeof PT.ENTITY_STATUS_RES }>>({ type: PT.ENTITY_STATUS_REQ }, PT.ENTITY_STATUS_RES);
  }

  async aliveCheck(): Promise<number> {
    return (await this.control<Extract<Message, { type: typeof PT.ALIVE_CHECK_RES }>>({ type: PT.ALIVE_CHECK_REQ }, PT.ALIVE_CHECK_RES)).sourceAddress;
  }

  /** A UDS link to one node behind the entity. */
  link(targetAddress: number): DiagLink {
    return {
      send: (data) => this.sendDiag(targetAddress, data),
      receive: (ms) => this.receive(targetAddress, ms),
    };
  }

  sendDiag(ta: number, data: Buffer): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const q = this.acks.get(ta);
        const i = q?.indexOf(w) ?? -1;
        if (i >= 0) q!.splice(i, 1);
        reject(pksError('PKS_DOIP_TIMEOUT', `no diagnostic message ACK within A_DoIP_Diagnostic_Message ${this.timers.A_DoIP_Diagnostic_Message} ms`));
      }, this.timers.A_DoIP_Diagnostic_Message);
      const w: Waiter<void> = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const q = this.acks.get(ta) ?? [];
      q.push(w);
      this.acks.set(ta, q);
      this.write(encode({ type: PT.DIAG_MESSAGE, sourceAddress: this.o.sourceAddress, targetAddress: ta, data }));
    });
  }

  receive(sa: number, timeoutMs: number): Promise<Buffer> {
    const q = this.inbox.get(sa);
    if (q?.length) return Promise.resolve(q.shift()!);
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<Buffer>((resolve, reject) => {
      const w: Waiter<Buffer> = {
        resolve: (b) => {
          clearTimeout(timer);
          resolve(b);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const r = this.readers.get(sa);
        const i = r?.indexOf(w) ?? -1;
        if (i >= 0) r!.splice(i, 1);
        reject(pksError('PKS_UDS_TIMEOUT', `no diagnostic message from 0x${sa.toString(16)} within ${timeoutMs} ms`));
      }, timeoutMs);
      const r = this.readers.get(sa) ?? [];
      r.push(w);
      this.readers.set(sa, r);
    });
  }

  close(): void {
    this.fail(pksError('PKS_DOIP_CLOSED', 'closed by the tester'));
  }
}

/**
 * Vehicle identification over UDP: sends the request (broadcast when `broadcast`) and collects
 * the answers for `waitMs` (default A_DoIP_Ctrl). Malformed datagrams are ignored and counted.
 */
export async function discover(o: { address: string; port: number; bind?: string; broadcast?: boolean; waitMs?: number; vin?: string; eid?: Buffer }): Promise<{ found: (VehicleId & { from: string })[]; malformed: number }> {
  const u = createSocket({ type: 'udp4' });
  const found: (VehicleId & { from: string })[] = [];
  let malformed = 0;
  await new Promise<void>((r, j) => {
    u.once('error', j);
    u.bind(0, o.bind ?? '0.0.0.0', () => r());
  });
  try {
    if (o.broadcast) u.setBroadcast(true);
    u.on('message', (b: Buffer, from) => {
      try {
        const h = decodeHeader(b, 64);
        const m = decodePayload(h, b.subarray(DOIP_HEADER_LEN));
        if (m.type === PT.VEHICLE_ANNOUNCEMENT) {
          const { type: _t, ...v } = m;
          found.push({ ...v, from: from.address });
        }
      } catch {
        malformed++;
      }
    });
    const req: Message = o.vin ? { type: PT.VEHICLE_ID_REQ_VIN, vin: o.vin } : o.eid ? { type: PT.VEHICLE_ID_REQ_EID, eid: o.eid } : { type: PT.VEHICLE_ID_REQ };
    u.send(encode(req), o.port, o.address);
    await new Promise((r) => setTimeout(r, o.waitMs ?? doipTimers().A_DoIP_Ctrl));
    return { found, malformed };
  } finally {
    u.close();
  }
}
