// Who may open a connection to the tester API, decided at accept time before any TLS work.
//  - Total and per-source caps on concurrent connections: idle sockets cannot grow our memory
//    without bound (each TLS connection costs ~50 KB).
//  - The handshake limit counts only FAILED or unauthenticated handshakes per source address
//    (a handshake error, or a connection that closes or times out before presenting a valid
//    tester certificate). Past the limit, new connections from that address are refused,
//    EXCEPT while the address holds an authenticated session or had one within the window:
//    a good tester behind the same NAT or proxy as an attacker keeps working, and the
//    attacker on that address stays bounded by the per-source cap and the handshake timeout.
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { SlidingWindow, type Clock } from './limits.js';

export interface ConnectionLimits {
  maxConnections: number;
  maxConnectionsPerSource: number;
  failuresPerWindow: number;
  windowMs: number;
  /** a connection that has not authenticated by then is closed (and counts as failed) */
  handshakeTimeoutMs: number;
}

export type Refusal = 'total' | 'per-source' | 'handshakes';

interface Source {
  open: number;
  authenticated: number;
  lastAuthAt: number;
}

interface Conn {
  source: string;
  authenticated: boolean;
  failed: boolean;
  timer: NodeJS.Timeout | null;
}

const MAX_SOURCES = 10_000;

export class ConnectionGuard {
  readonly #sources = new Map<string, Source>();
  readonly #conns = new WeakMap<Socket, Conn>();
  readonly #failures: SlidingWindow;
  #open = 0;

  constructor(
    readonly limits: ConnectionLimits,
    readonly now: Clock = Date.now,
  ) {
    this.#failures = new SlidingWindow(limits.failuresPerWindow, limits.windowMs, now);
  }

  get open(): number {
    return this.#open;
  }

  /** The raw socket's record; a server TLSSocket wraps the accepted socket as `_parent`. */
  #conn(sock: Socket): Conn | undefined {
    return this.#conns.get(sock) ?? this.#conns.get((sock as Socket & { _parent?: Socket })._parent as Socket);
  }

  /** The address a socket connected from, remembered at accept (it is gone once closed). */
  sourceOf(sock: Socket): string {
    return this.#conn(sock)?.source ?? sock.remoteAddress ?? 'unknown';
  }

  /** At accept: null when admitted (and tracked until it closes), else why it is refused. */
  admit(sock: Socket): Refusal | null {
    const source = sock.remoteAddress ?? 'unknown';
    const s = this.#sources.get(source);
    if (this.#open >= this.limits.maxConnections) return 'total';
    if (s && s.open >= this.limits.maxConnectionsPerSource) return 'per-source';
    const spared = s !== undefined && (s.authenticated > 0 || this.now() - s.lastAuthAt < this.limits.windowMs);
    if (!spared && this.#failures.over(source)) return 'handshakes';
    const src = s ?? this.#newSource(source);
    src.open++;
    this.#open++;
    const conn: Conn = { source, authenticated: false, failed: false, timer: null };
    conn.timer = setTimeout(() => {
      conn.timer = null;
      if (!conn.authenticated) sock.destroy();
    }, this.limits.handshakeTimeoutMs);
    conn.timer.unref();
    this.#conns.set(sock, conn);
    sock.once('close', () => {
      if (conn.timer) clearTimeout(conn.timer);
      this.#open--;
      src.open--;
      if (conn.authenticated) src.authenticated--;
      // closed without ever authenticating: a failed handshake as far as the limit goes
      else if (!conn.failed) this.#failures.hit(source);
      // a tlsClientError may still follow the close: counted once
      conn.failed = !conn.authenticated;
      if (src.open === 0 && src.authenticated === 0 && this.now() - src.lastAuthAt >= this.limits.windowMs) this.#sources.delete(source);
    });
    return null;
  }

  /** The TLS handshake finished with a verified tester certificate. */
  authenticated(sock: TLSSocket): void {
    const c = this.#conn(sock);
    const s = c && this.#sources.get(c.source);
    if (!c || !s || c.authenticated) return;
    c.authenticated = true;
    if (c.timer) clearTimeout(c.timer);
    c.timer = null;
    s.authenticated++;
    s.lastAuthAt = this.now();
  }

  /** The TLS handshake failed (foreign or no certificate, old protocol, garbage, timeout). */
  failed(sock: Socket): void {
    const c = this.#conn(sock);
    if (!c || c.failed || c.authenticated) return;
    c.failed = true;
    this.#failures.hit(c.source);
  }

  #newSource(source: string): Source {
    const s: Source = { open: 0, authenticated: 0, lastAuthAt: -Infinity };
    this.#sources.set(source, s);
    // bounded: drop the oldest source that holds nothing
    if (this.#sources.size > MAX_SOURCES)
      for (const [k, v] of this.#sources)
        if (v.open === 0) {
          this.#sources.delete(k);
          break;
        }
    return s;
  }
}
