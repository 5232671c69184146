// Alert mail delivery: renders queued alert mails and hands them to the plant's SMTP relay.
// A mail leaves the outbox only after the server accepted it; until then it is retried on
// each run with exponential backoff. Every header value is built from sanitised text and
// addresses are validated, so nothing an alert carries can add a header or a recipient.
// The Message-ID is derived from the outbox id, so a receiver can drop the duplicate that a
// crash between "accepted" and "removed from the outbox" could cause.
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import nodemailer from 'nodemailer';
import { pksError } from '../../appliance/errors.js';
import type { AlertMail, MailItem, MailOutbox, QueuedMail, Severity } from './alerts.js';
import { bodySafe, headerSafe, isMailAddress } from './text.js';

type Transport = ReturnType<typeof nodemailer.createTransport>;

export type StartTls = 'required' | 'opportunistic' | 'off';

export interface MailerConfig {
  host: string;
  port: number;
  /** Implicit TLS (SMTPS, usually port 465). */
  secure: boolean;
  starttls: StartTls;
  auth?: { user: string; pass: string };
  from: string;
  /** Warning mails go to `warning`; critical mails to `critical` and `warning` alike. */
  to: { warning: string[]; critical: string[] };
  site: string;
  box: string;
  tls?: { ca?: string | string[]; servername?: string };
  /** Connection, greeting and socket timeout. Default 15000. */
  timeoutMs?: number;
}

export interface RenderedMail {
  subject: string;
  text: string;
  to: string[];
  severity: Severity;
}

export interface FlushResult {
  sent: number;
  failed: number;
  pending: number;
}

export interface MailerOptions {
  /** First retry delay; doubles per attempt. Default 60000. */
  backoffBaseMs?: number;
  /** Longest retry delay. Default 3600000. */
  backoffMaxMs?: number;
}

const bad = (what: string): never => {
  throw pksError('PKS_CONFIG_INVALID', `mail.${what}`);
};

function isLoopback(host: string): boolean {
  return host === 'localhost' || (isIP(host) === 4 && host.startsWith('127.')) || host === '::1';
}

const HOST = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/;
const LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Validates and freezes the mail configuration; throws PKS_CONFIG_INVALID naming the field. */
export function validateMailerConfig(raw: unknown): Readonly<MailerConfig> {
  const c = raw as Partial<MailerConfig> | null;
  if (!c || typeof c !== 'object') bad('(not an object)');
  const host = c!.host;
  if (typeof host !== 'string' || !(HOST.test(host) || isIP(host) !== 0)) bad('host');
  if (!Number.isInteger(c!.port) || c!.port! < 1 || c!.port! > 65535) bad('port');
  if (typeof c!.secure !== 'boolean') bad('secure');
  if (!['required', 'opportunistic', 'off'].includes(c!.starttls as string)) bad('starttls');
  if (c!.auth !== undefined) {
    const a = c!.auth;
    if (!a || typeof a.user !== 'string' || a.user.length === 0 || /[\r\n\0]/.test(a.user)) bad('auth.user');
    if (typeof a.pass !== 'string' || a.pass.length === 0 || /[\r\n\0]/.test(a.pass)) bad('auth.pass');
    // A password is never offered where a stripped STARTTLS would send it in clear.
    if (!c!.secure && c!.starttls !== 'required' && !isLoopback(host!)) bad('auth (needs secure or starttls=required)');
  }
  if (!isMailAddress(c!.from)) bad('from');
  const lists = c!.to;
  if (!lists || typeof lists !== 'object') bad('to');
  for (const sev of ['warning', 'critical'] as const) {
    const l = lists![sev];
    if (!Array.isArray(l) || l.length > 50 || !l.every(isMailAddress)) bad(`to.${sev}`);
  }
  if (lists!.warning.length + lists!.critical.length === 0) bad('to (no recipient)');
  if (typeof c!.site !== 'string' || !LABEL.test(c!.site)) bad('site');
  if (typeof c!.box !== 'string' || !LABEL.test(c!.box)) bad('box');
  if (c!.tls !== undefined) {
    const t = c!.tls;
    if (!t || typeof t !== 'object') bad('tls');
    const ca = t!.ca;
    if (ca !== undefined && typeof ca !== 'string' && !(Array.isArray(ca) && ca.every((x) => typeof x === 'string'))) bad('tls.ca');
    if (t!.servername !== undefined && (typeof t!.servername !== 'string' || !HOST.test(t!.servername))) bad('tls.servername');
  }
  if (c!.timeoutMs !== undefined && (!Number.isInteger(c!.timeoutMs) || c!.timeoutMs < 100 || c!.timeoutMs > 300_000)) bad('timeoutMs');
  return Object.freeze({
    ...c!,
    to: Object.freeze({ warning: [...lists!.warning], critical: [...lists!.critical] }),
  }) as Readonly<MailerConfig>;
}

const TITLES: Record<string, string> = {
  'cert-expiry': 'certificate expiring',
  'grant-expiry': 'tester grant expiring',
  'stock-low': 'stock low',
  storage: 'storage filling up',
  hsm: 'HSM not usable',
  'uplink-stale': 'KMS link stale',
  'auth-burst': 'failed tester logins',
  service: 'service unhealthy',
  collector: 'checks not running',
  tpm: 'measured boot or TPM problem',
  tamper: 'application tampered, vault closed',
};

const VERB: Record<MailItem['type'], string> = {
  raised: 'raised',
  escalated: 'escalated',
  deescalated: 'de-escalated',
  resolved: 'resolved',
  reminder: 'still open',
};

/** every alert kind the checks raise (the metrics show each, 0 when fine) */
export const ALERT_KINDS: readonly string[] = Object.freeze(Object.keys(TITLES));

const title = (i: MailItem): string => `${TITLES[i.alert.kind] ?? i.alert.kind} on ${i.alert.subject}`;

export function recipients(cfg: MailerConfig, severity: Severity): string[] {
  const list = severity === 'critical' ? [...cfg.to.critical, ...cfg.to.warning] : [...cfg.to.warning];
  return [...new Set(list.map((a) => a.toLowerCase()))];
}

function itemText(i: MailItem, cfg: MailerConfig): string {
  const a = i.alert;
  const level = i.type === 'resolved' ? 'RESOLVED' : a.severity.toUpperCase();
  const since = `${a.raisedAt}${a.resolvedAt ? `, resolved ${a.resolvedAt}` : a.updatedAt !== a.raisedAt ? `, level changed ${a.updatedAt}` : ''}`;
  const fields: Array<[string, string]> = [
    ['What', `${title(i)} (${level}, ${VERB[i.type]})`],
    ['Where', `site ${cfg.site}, box ${cfg.box}`],
    ['Since', since],
    ['Detail', a.message],
  ];
  if (i.type !== 'resolved' && a.action) fields.push(['To do', a.action]);
  fields.push(['Alert', a.key]);
  // One line per field: a value with line breaks could fake further fields or a signature.
  return fields.map(([k, v]) => `${`${k}:`.padEnd(9)}${headerSafe(v, 1000)}`).join('\n');
}

/** What a queued mail looks like on the wire: subject, body and envelope recipients. */
export function renderMail(mail: AlertMail, cfg: MailerConfig): RenderedMail {
  const tag = `[PKS ${cfg.site}/${cfg.box}]`;
  let subject: string;
  let text: string;
  if (mail.items.length === 1) {
    const i = mail.items[0]!;
    const head = i.type === 'resolved' ? 'RESOLVED' : `${i.alert.severity.toUpperCase()} ${VERB[i.type]}`;
    subject = `${tag} ${head}: ${title(i)}`;
    text = itemText(i, cfg);
  } else {
    subject = `${tag} ${mail.severity.toUpperCase()}: ${mail.items.length} alert changes`;
    text = [
      `${mail.items.length} alert changes at once on site ${cfg.site}, box ${cfg.box}; one mail instead of a flood.`,
      '',
      ...mail.items.map((i) => itemText(i, cfg) + '\n'),
    ].join('\n');
  }
  text += `\n\n-- \nPKS sentinel, site ${cfg.site}, box ${cfg.box}. Open alerts: pksctl alerts\n`;
  return { subject: headerSafe(subject, 250), text: bodySafe(text, 64_000), to: recipients(cfg, mail.severity), severity: mail.severity };
}

// Errors that say the server (or the way to it) is unusable right now: no point trying the
// rest of the queue in this run.
const CONNECTION_ERRORS = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ETLS', 'EAUTH', 'ECONNREFUSED', 'EGREETING']);

export class Mailer {
  private readonly cfg: Readonly<MailerConfig>;
  private readonly outbox: MailOutbox;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private running: Promise<FlushResult> | undefined;

  constructor(cfg: unknown, outbox: MailOutbox, opts: MailerOptions = {}) {
    this.cfg = validateMailerConfig(cfg);
    this.outbox = outbox;
    this.baseMs = opts.backoffBaseMs ?? 60_000;
    this.maxMs = opts.backoffMaxMs ?? 3_600_000;
  }

  /** Next try after `attempts` failures. */
  backoff(attempts: number): number {
    return Math.min(this.maxMs, this.baseMs * 2 ** Math.max(0, attempts - 1));
  }

  /**
   * Sends every queued mail that is due at `now`, oldest first. Never throws for SMTP trouble.
   * A mail the server refuses (bad recipient, message rejected) backs off on its own; a server
   * that cannot be reached or refuses us backs off the whole queue together, so the queue
   * keeps its order (a resolution never overtakes its raise).
   */
  flush(now: Date): Promise<FlushResult> {
    // Overlapping runs would send the same queued mail twice: they share one flush instead.
    this.running ??= this.drain(now).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async drain(now: Date): Promise<FlushResult> {
    const queue = this.outbox.pendingMails();
    const due = queue.filter((m) => Date.parse(m.nextAttemptAt) <= now.getTime());
    let sent = 0;
    let failed = 0;
    if (due.length > 0) {
      const transport = this.transport();
      try {
        for (const q of due) {
          try {
            await this.send(transport, q);
          } catch (e) {
            const code = errorCode(e);
            if (!CONNECTION_ERRORS.has(code.split(' ')[0]!)) {
              await this.deferred(q, now, code, q.attempts + 1);
              failed++;
              continue;
            }
            const attempts = q.attempts + 1;
            const left = this.outbox.pendingMails();
            for (const m of left) await this.deferred(m, now, code, attempts, Date.parse(m.nextAttemptAt) <= now.getTime());
            failed += left.filter((m) => Date.parse(m.nextAttemptAt) <= now.getTime()).length;
            break;
          }
          await this.outbox.removeMail(q.id);
          sent++;
        }
      } finally {
        transport.close();
      }
    }
    return { sent, failed, pending: queue.length - sent };
  }

  private transport(): Transport {
    const c = this.cfg;
    const timeout = c.timeoutMs ?? 15_000;
    // One pooled connection per flush: a queue drained after an outage goes over one session.
    return nodemailer.createTransport({
      pool: true,
      maxConnections: 1,
      host: c.host,
      port: c.port,
      secure: c.secure,
      requireTLS: !c.secure && c.starttls === 'required',
      ignoreTLS: !c.secure && c.starttls === 'off',
      ...(c.auth ? { auth: { user: c.auth.user, pass: c.auth.pass } } : {}),
      tls: {
        minVersion: 'TLSv1.2',
        ...(c.tls?.ca ? { ca: c.tls.ca } : {}),
        ...(c.tls?.servername ? { servername: c.tls.servername } : {}),
      },
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      socketTimeout: timeout,
      name: `${c.box}.${c.site}.pks`,
      logger: false,
      debug: false,
    });
  }

  private async send(transport: Transport, q: QueuedMail): Promise<void> {
    const r = renderMail(q.mail, this.cfg);
    if (r.to.length === 0) return; // nobody configured for this severity: nothing to deliver
    const digest = createHash('sha256').update(q.id).digest('hex').slice(0, 32);
    await transport.sendMail({
      from: { name: headerSafe(`PKS sentinel ${this.cfg.site}/${this.cfg.box}`, 100), address: this.cfg.from },
      to: r.to,
      envelope: { from: this.cfg.from, to: r.to },
      subject: r.subject,
      text: r.text,
      messageId: `<${digest}@${this.cfg.box}.${this.cfg.site}.pks.invalid>`,
      date: new Date(q.mail.createdAt),
      headers: {
        'X-PKS-Severity': r.severity,
        'Auto-Submitted': 'auto-generated',
      },
      disableFileAccess: true,
      disableUrlAccess: true,
    });
  }

  /** Puts a mail back with the backoff for `attempts` failures (counted only if it was tried). */
  private async deferred(m: QueuedMail, now: Date, code: string, attempts: number, tried = true): Promise<void> {
    const next = Math.max(Date.parse(m.nextAttemptAt), now.getTime() + this.backoff(attempts));
    await this.outbox.updateMail({
      ...m,
      attempts: tried ? m.attempts + 1 : m.attempts,
      nextAttemptAt: new Date(next).toISOString(),
      lastError: code,
    });
  }
}

/** A short, secret-free reason (nodemailer's messages can quote server replies). */
function errorCode(e: unknown): string {
  const err = e as { code?: unknown; responseCode?: unknown } | null;
  if (err && typeof err.code === 'string' && /^[A-Z_]{2,32}$/.test(err.code)) {
    return typeof err.responseCode === 'number' ? `${err.code} ${err.responseCode}` : err.code;
  }
  return 'EUNKNOWN';
}
