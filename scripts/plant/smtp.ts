// A real SMTP server for tests: smtp-server in-process on 127.0.0.1, a free port, optional
// AUTH and STARTTLS (self-signed P-256 certificate for localhost/127.0.0.1 made by openssl).
// down() closes the listener (clients get ECONNREFUSED) and up() listens again on the same
// port, to test queued delivery. Messages are recorded with the envelope and the raw text;
// subject and headers are parsed here on purpose (no mail parser between test and wire).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';

export interface ReceivedMail {
  from: string;
  to: string[];
  raw: string;
  subject: string;
  /** Lower-cased header name -> unfolded value; repeated headers are joined with '\n'. */
  headers: Map<string, string>;
  /** Body of a single-part message, transfer encoding (quoted-printable, base64) undone. */
  text: string;
  /** The session was encrypted (STARTTLS) when the message came. */
  secure: boolean;
  /** The authenticated user, if any. */
  user?: string;
}

export interface SmtpOptions {
  auth?: { user: string; pass: string };
  starttls?: boolean;
  /** a fixed port (the VM's site names one); default a free one */
  port?: number;
  /** called with each message as it arrives */
  onMail?: (m: ReceivedMail) => void;
}

export interface TestSmtp {
  port: number;
  mails: ReceivedMail[];
  /** PEM of the self-signed server certificate (STARTTLS only), for the client's CA list. */
  ca?: string;
  stop(): Promise<void>;
  down(): Promise<void>;
  up(): Promise<void>;
}

function decodeWords(s: string): string {
  // RFC 2047: adjacent encoded words separated by whitespace only are joined.
  return s
    .replace(/(=\?[^?]+\?[BbQq]\?[^?]*\?=)\s+(?==\?)/g, '$1')
    .replace(/=\?([^?]+)\?([BbQq])\?([^?]*)\?=/g, (_m, charset: string, enc: string, text: string) => {
      const buf =
        enc.toUpperCase() === 'B'
          ? Buffer.from(text, 'base64')
          : Buffer.from(
              text.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (_x, h: string) => String.fromCharCode(parseInt(h, 16))),
              'latin1',
            );
      return buf.toString(/^utf-?8$/i.test(charset) ? 'utf8' : 'latin1');
    });
}

export function parseHeaders(raw: string): Map<string, string> {
  const end = raw.search(/\r?\n\r?\n/);
  const head = end < 0 ? raw : raw.slice(0, end);
  const headers = new Map<string, string>();
  let current: string | undefined;
  for (const line of head.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && current !== undefined) {
      current += ' ' + line.trim();
      continue;
    }
    if (current !== undefined) add(current);
    current = line;
  }
  if (current !== undefined) add(current);
  return headers;

  function add(h: string): void {
    const i = h.indexOf(':');
    if (i <= 0) return;
    const name = h.slice(0, i).trim().toLowerCase();
    const value = decodeWords(h.slice(i + 1).trim());
    headers.set(name, headers.has(name) ? `${headers.get(name)}\n${value}` : value);
  }
}

/** Undoes the Content-Transfer-Encoding of a single-part message body. */
export function bodyText(raw: string, headers: Map<string, string>): string {
  const m = /\r?\n\r?\n/.exec(raw);
  const body = m ? raw.slice(m.index + m[0].length) : '';
  const enc = (headers.get('content-transfer-encoding') ?? '7bit').toLowerCase();
  let buf: Buffer;
  if (enc === 'base64') buf = Buffer.from(body.replace(/\s+/g, ''), 'base64');
  else if (enc === 'quoted-printable') {
    const bin = body.replace(/=\r?\n/g, '').replace(/=([0-9A-Fa-f]{2})/g, (_x, h: string) => String.fromCharCode(parseInt(h, 16)));
    buf = Buffer.from(bin, 'latin1');
  } else buf = Buffer.from(body, 'utf8');
  return buf.toString('utf8').replace(/\r\n/g, '\n');
}

function selfSigned(dir: string): { key: string; cert: string } {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-days', '2', '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  return { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') };
}

export async function startSmtp(opts: SmtpOptions = {}): Promise<TestSmtp> {
  const dir = mkdtempSync(path.join(tmpdir(), 'pks-smtp-'));
  let tls: { key: string; cert: string } | undefined;
  try {
    if (opts.starttls) tls = selfSigned(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const mails: ReceivedMail[] = [];
  const options: SMTPServerOptions = {
    logger: false,
    banner: 'pks test smtp',
    disableReverseLookup: true,
    disabledCommands: opts.starttls ? [] : ['STARTTLS'],
    authOptional: !opts.auth,
    allowInsecureAuth: !opts.starttls,
    size: 1024 * 1024,
    ...(tls ? { key: tls.key, cert: tls.cert } : {}),
    onAuth(auth, _session, cb) {
      if (opts.auth && auth.username === opts.auth.user && auth.password === opts.auth.pass) cb(null, { user: auth.username });
      else cb(new Error('invalid credentials'));
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const headers = parseHeaders(raw);
        const m: ReceivedMail = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          raw,
          subject: headers.get('subject') ?? '',
          headers,
          text: bodyText(raw, headers),
          secure: session.secure,
          ...(typeof session.user === 'string' ? { user: session.user } : {}),
        };
        mails.push(m);
        opts.onMail?.(m);
        cb(null);
      });
    },
  };

  let server: SMTPServer | undefined;
  let port = opts.port ?? 0;
  const listen = async (): Promise<void> => {
    const s = new SMTPServer(options);
    s.on('error', () => {}); // client resets are expected when tests take the server down
    await new Promise<void>((resolve, reject) => {
      s.server.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        s.server.off('error', reject);
        resolve();
      });
    });
    port = (s.server.address() as { port: number }).port;
    server = s;
  };
  const close = async (): Promise<void> => {
    const s = server;
    server = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };

  await listen();
  return {
    get port() {
      return port;
    },
    mails,
    ...(tls ? { ca: tls.cert } : {}),
    stop: close,
    down: close,
    async up() {
      if (!server) await listen();
    },
  };
}
