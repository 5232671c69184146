// ISO-TP (ISO 15765-2:2016) in TypeScript: segmentation and reassembly over any CAN frame link
// (SocketCAN in the VM, an in-memory or UDP link on the host), flow control with block size and
// STmin both ways, FC WAIT up to N_WFTmax, overflow, and the N_Bs / N_Cr timers. It is also a
// UDS link (send/receive), so the UDS client and the ECU simulator run on it unchanged.
// Frames that do not fit the state (a CF out of sequence, an unexpected FC) abort the message
// in progress with a coded error on `onError`; nothing here throws at the link.
import { pksError, type PksError } from '../errors.js';
import type { UdsLink } from '../uds/client.js';
import { FC, decodeFrame, encodeCF, encodeFC, encodeFF, encodeSF, ffCapacity, sfCapacity, stMinMs, type CanFrame, type FrameFormat } from './frames.js';

export interface FrameLink {
  send(f: CanFrame): void;
  onFrame(cb: (f: CanFrame) => void): () => void;
}

export interface IsoTpOptions extends Partial<FrameFormat> {
  txId: number;
  rxId: number;
  /** what we ask the sender for: frames per block (0: all) and STmin byte */
  blockSize?: number;
  stMin?: number;
  /** largest message we reassemble (FC OVFLW beyond) */
  maxMessage?: number;
  /** N_Bs (wait for FC) and N_Cr (wait for the next CF), ms; ISO 15765-2 defaults 1000 */
  nBs?: number;
  nCr?: number;
  /** FC WAIT frames accepted in a row */
  wftMax?: number;
  onError?: (e: PksError) => void;
  /** every reassembled message goes here instead of the receive() queue (servers) */
  onMessage?: (msg: Buffer) => void;
}

interface Rx {
  length: number;
  parts: Buffer[];
  got: number;
  sn: number;
  inBlock: number;
  timer: NodeJS.Timeout;
}

export class IsoTp implements UdsLink {
  readonly format: FrameFormat;
  private rx: Rx | undefined;
  private fcWaiter: ((fc: { status: number; bs: number; stMin: number }) => void) | undefined;
  private inbox: Buffer[] = [];
  private readers: { resolve(b: Buffer): void; reject(e: PksError): void }[] = [];
  private off: () => void;
  private sending: Promise<unknown> = Promise.resolve();
  /** frames and messages, for tests and the bench */
  stats = { framesIn: 0, framesOut: 0, messagesIn: 0, messagesOut: 0, errors: 0 };

  constructor(
    private readonly link: FrameLink,
    private readonly o: IsoTpOptions,
  ) {
    const fd = o.fd ?? false;
    const txDl = o.txDl ?? (fd ? 64 : 8);
    if (!fd && txDl !== 8) throw pksError('PKS_OUT_OF_RANGE', 'classic CAN has TX_DL 8');
    if (fd && ![8, 12, 16, 20, 24, 32, 48, 64].includes(txDl)) throw pksError('PKS_OUT_OF_RANGE', `CAN FD TX_DL ${txDl}`);
    this.format = { fd, txDl, ...(o.padding !== undefined ? { padding: o.padding } : {}) };
    this.off = link.onFrame((f) => {
      if (f.id !== o.rxId) return;
      this.stats.framesIn++;
      try {
        this.onFrame(f.data);
      } catch (e) {
        this.error(e as PksError);
      }
    });
  }

  private error(e: PksError): void {
    this.stats.errors++;
    this.o.onError?.(e);
  }

  private out(data: Buffer): void {
    this.stats.framesOut++;
    this.link.send({ id: this.o.txId, data, ...(this.format.fd ? { fd: true } : {}) });
  }

  private deliver(msg: Buffer): void {
    this.stats.messagesIn++;
    if (this.o.onMessage) return this.o.onMessage(msg);
    const r = this.readers.shift();
    if (r) r.resolve(msg);
    else if (this.inbox.length < 64) this.inbox.push(msg);
  }

  private abortRx(e: PksError): void {
    if (!this.rx) return;
    clearTimeout(this.rx.timer);
    this.rx = undefined;
    this.error(e);
  }

  private armCr(): void {
    const rx = this.rx!;
    clearTimeout(rx.timer);
    rx.timer = setTimeout(() => this.abortRx(pksError('PKS_ISOTP_TIMEOUT', `N_Cr: no consecutive frame within ${this.o.nCr ?? 1000} ms`)), this.o.nCr ?? 1000);
  }

  private onFrame(b: Buffer): void {
    const p = decodeFrame(this.format, b);
    switch (p.kind) {
      case 'SF':
        if (this.rx) this.abortRx(pksError('PKS_ISOTP_SEQUENCE', 'single frame during a segmented message: the old one is dropped'));
        this.deliver(p.data);
        return;
      case 'FF': {
        if (this.rx) this.abortRx(pksError('PKS_ISOTP_SEQUENCE', 'first frame during a segmented message: the old one is dropped'));
        if (p.length > (this.o.maxMessage ?? 4095)) {
          this.out(encodeFC(this.format, FC.OVFLW, 0, 0));
          this.error(pksError('PKS_ISOTP_OVERFLOW', `first frame for ${p.length} bytes`));
          return;
        }
        this.rx = { length: p.length, parts: [p.data], got: p.data.length, sn: 1, inBlock: 0, timer: setTimeout(() => {}, 0) };
        this.armCr();
        this.out(encodeFC(this.format, FC.CTS, this.o.blockSize ?? 0, this.o.stMin ?? 0));
        return;
      }
      case 'CF': {
        const rx = this.rx;
        if (!rx) return this.error(pksError('PKS_ISOTP_SEQUENCE', 'consecutive frame without a first frame: ignored'));
        if (p.sn !== rx.sn) return this.abortRx(pksError('PKS_ISOTP_SEQUENCE', `consecutive frame SN ${p.sn}, expected ${rx.sn}`));
        const take = Math.min(p.data.length, rx.length - rx.got);
        rx.parts.push(p.data.subarray(0, take));
        rx.got += take;
        rx.sn = (rx.sn + 1) & 0x0f;
        if (rx.got >= rx.length) {
          clearTimeout(rx.timer);
          this.rx = undefined;
          this.deliver(Buffer.concat(rx.parts).subarray(0, rx.length));
          return;
        }
        this.armCr();
        const bs = this.o.blockSize ?? 0;
        if (bs > 0 && ++rx.inBlock >= bs) {
          rx.inBlock = 0;
          this.out(encodeFC(this.format, FC.CTS, bs, this.o.stMin ?? 0));
        }
        return;
      }
      case 'FC':
        if (!this.fcWaiter) return this.error(pksError('PKS_ISOTP_SEQUENCE', 'flow control while not sending: ignored'));
        this.fcWaiter(p);
        return;
    }
  }

  private waitFc(): Promise<{ status: number; bs: number; stMin: number }> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.fcWaiter = undefined;
        reject(pksError('PKS_ISOTP_TIMEOUT', `N_Bs: no flow control within ${this.o.nBs ?? 1000} ms`));
      }, this.o.nBs ?? 1000);
      this.fcWaiter = (fc) => {
        clearTimeout(t);
        this.fcWaiter = undefined;
        resolve(fc);
      };
    });
  }

  /** Sends one message (SF, or FF + CFs paced by the receiver's flow control). */
  send(data: Buffer): Promise<void> {
    const run = this.sending.then(() => this.transmit(data));
    this.sending = run.catch(() => {});
    return run;
  }

  private async transmit(data: Buffer): Promise<void> {
    const f = this.format;
    if (data.length === 0) throw pksError('PKS_OUT_OF_RANGE', 'ISO-TP message of 0 bytes');
    if (data.length > 0xffffffff) throw pksError('PKS_OUT_OF_RANGE', 'ISO-TP message too long');
    this.stats.messagesOut++;
    if (data.length <= sfCapacity(f)) return this.out(encodeSF(f, data));
    let off = ffCapacity(f, data.length);
    this.out(encodeFF(f, data.length, data.subarray(0, off)));
    let sn = 1;
    const per = f.txDl - 1;
    let waits = 0;
    while (off < data.length) {
      const fc = await this.waitFc();
      if (fc.status === FC.WAIT) {
        if (++waits > (this.o.wftMax ?? 10)) throw pksError('PKS_ISOTP_TIMEOUT', `more than N_WFTmax ${this.o.wftMax ?? 10} FC WAIT frames`);
        continue;
      }
      if (fc.status === FC.OVFLW) throw pksError('PKS_ISOTP_OVERFLOW', `receiver cannot take ${data.length} bytes`);
      waits = 0;
      const gap = stMinMs(fc.stMin);
      for (let n = 0; off < data.length && (fc.bs === 0 || n < fc.bs); n++) {
        if (n > 0 || sn > 1) if (gap > 0) await new Promise((r) => setTimeout(r, Math.max(1, Math.ceil(gap))));
        this.out(encodeCF(f, sn, data.subarray(off, off + per)));
        off += per;
        sn = (sn + 1) & 0x0f;
      }
    }
  }

  receive(timeoutMs: number): Promise<Buffer> {
    const q = this.inbox.shift();
    if (q) return Promise.resolve(q);
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (b: Buffer) => {
          clearTimeout(t);
          resolve(b);
        },
        reject,
      };
      const t = setTimeout(() => {
        const i = this.readers.indexOf(w);
        if (i >= 0) this.readers.splice(i, 1);
        reject(pksError('PKS_UDS_TIMEOUT', `no ISO-TP message on 0x${this.o.rxId.toString(16)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.readers.push(w);
    });
  }

  close(): void {
    this.off();
    if (this.rx) clearTimeout(this.rx.timer);
    this.rx = undefined;
  }
}

/** Two ends of an in-memory CAN bus (frames delivered asynchronously, in order); `tap` sees every frame. */
export function memoryBus(tap?: (f: CanFrame) => CanFrame | undefined): FrameLink {
  const subs = new Set<(f: CanFrame) => void>();
  return {
    send(f) {
      const g = tap ? tap(f) : f;
      if (!g) return;
      setImmediate(() => {
        for (const s of subs) s(g);
      });
    },
    onFrame(cb) {
      subs.add(cb);
      return () => subs.delete(cb);
    },
  };
}
