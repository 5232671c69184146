// The wire format of the local IPC: length-prefixed frames on a stream (unix socket), bodies
// in msgpack. Many requests share one connection; each carries an id its answer repeats, so
// a slow (durable) request never holds up a quick one behind it.
//   request  u32 length | u32 id | u8 verb length | verb (ASCII) | msgpack body
//   answer   u32 length | u32 id | u8 status (0 ok, 1 problem)  | msgpack body
// `length` counts the bytes after itself. The verb sits before the body so that the server
// checks the caller and the verb's size limit before it decodes a byte of the body.
import { Packr } from 'msgpackr';

export const OK = 0;
export const PROBLEM = 1;
const REQ_HEAD = 9; // id + verb length, after the length field

// plain maps and arrays only: no records, no structure sharing, no extension types on the way out
const packr = new Packr({ useRecords: false, moreTypes: false, bundleStrings: false, mapsAsObjects: true, structuredClone: false });

export function encodeRequest(id: number, verb: string, body: unknown): Buffer {
  const payload = packr.pack(jsonPlain(body));
  const vlen = Buffer.byteLength(verb, 'latin1');
  const frame = Buffer.allocUnsafe(REQ_HEAD + vlen + payload.length);
  frame.writeUInt32BE(frame.length - 4, 0);
  frame.writeUInt32BE(id, 4);
  frame.writeUInt8(vlen, 8);
  frame.write(verb, REQ_HEAD, 'latin1');
  payload.copy(frame, REQ_HEAD + vlen);
  return frame;
}

export function encodeAnswer(id: number, status: number, body: unknown): Buffer {
  const payload = packr.pack(jsonPlain(body));
  const frame = Buffer.allocUnsafe(9 + payload.length);
  frame.writeUInt32BE(frame.length - 4, 0);
  frame.writeUInt32BE(id, 4);
  frame.writeUInt8(status, 8);
  payload.copy(frame, 9);
  return frame;
}

export interface RequestFrame {
  id: number;
  verb: string;
  /** the msgpack body, not yet decoded */
  body: Buffer;
}

export function splitRequest(frame: Buffer): RequestFrame | null {
  if (frame.length < 5) return null;
  const vlen = frame.readUInt8(4);
  if (frame.length < 5 + vlen) return null;
  return { id: frame.readUInt32BE(0), verb: frame.toString('latin1', 5, 5 + vlen), body: frame.subarray(5 + vlen) };
}

export function splitAnswer(frame: Buffer): { id: number; status: number; body: Buffer } | null {
  if (frame.length < 5) return null;
  return { id: frame.readUInt32BE(0), status: frame.readUInt8(4), body: frame.subarray(5) };
}

export const decode = (b: Buffer): unknown => (b.length ? packr.unpack(b) : {});

/**
 * Frames out of a byte stream. A frame longer than `max` is not buffered: the reader reports
 * its id (the first 4 bytes after the length) and skips its bytes as they come.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private skip = 0;

  constructor(
    private readonly max: number,
    private readonly onFrame: (frame: Buffer) => void,
    private readonly onOversize: (id: number) => void,
  ) {}

  /** bytes of an incomplete frame held right now */
  get pending(): number {
    return this.have;
  }

  push(data: Buffer): void {
    if (this.skip) {
      const n = Math.min(this.skip, data.length);
      this.skip -= n;
      if (n === data.length) return;
      data = data.subarray(n);
    }
    if (this.have) {
      this.chunks.push(data);
      this.have += data.length;
      data = Buffer.concat(this.chunks, this.have);
      this.chunks = [];
      this.have = 0;
    }
    let off = 0;
    while (data.length - off >= 4) {
      const len = data.readUInt32BE(off);
      if (len > this.max) {
        if (data.length - off < 8) break;
        this.onOversize(data.readUInt32BE(off + 4));
        const avail = data.length - off - 4;
        if (avail >= len) {
          off += 4 + len;
          continue;
        }
        this.skip = len - avail;
        return;
      }
      if (data.length - off - 4 < len) break;
      this.onFrame(data.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
    if (off < data.length) {
      const rest = data.subarray(off);
      this.chunks.push(rest);
      this.have = rest.length;
    }
  }
}

/**
 * True when `v` is what JSON could have carried: objects with the plain prototype, arrays,
 * strings, finite numbers, booleans, null. A request body must be; an answer is made so.
 */
export function isJsonPlain(v: unknown, depth = 0): boolean {
  if (v === null) return true;
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(v);
    case 'object': {
      if (depth > 64) return false;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) if (!isJsonPlain(v[i], depth + 1)) return false;
        return true;
      }
      if (Object.getPrototypeOf(v) !== Object.prototype) return false;
      for (const k in v) if (!isJsonPlain((v as Record<string, unknown>)[k], depth + 1)) return false;
      return true;
    }
    default:
      return false;
  }
}

/** What JSON would have made of `v` (Dates as strings, undefined dropped, toJSON called). */
export function jsonPlain(v: unknown): unknown {
  if (v === undefined) return {};
  return isJsonPlain(v) ? v : JSON.parse(JSON.stringify(v) ?? '{}');
}
