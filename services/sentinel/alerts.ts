// The alert engine: turns what the checks observed into alert state, events for central ops
// and mail decisions. It never sends anything itself: mails are queued in the store (the same
// LMDB transaction as the state change that caused them), so a crash or a dead SMTP server
// can delay a mail but not lose it or make it twice.
//
// Mail rules, in one place:
//  - Ops are told about changes: one mail when an alert is raised, escalated (warning ->
//    critical), de-escalated (critical -> warning) and resolved. Unchanged state mails nothing.
//  - `notified` records what the last mail told ops. A mail is due whenever the alert's level
//    differs from it, so a change that was held back (below) or capped is sent later, once.
//  - Flapping: an alert that returns to a level it left less than `flapMinutes` ago (resolved
//    then raised again, critical -> warning -> critical, ...) holds its mail until it has
//    stayed at that level for `flapMinutes`. If it flips back to what ops already know in the
//    meantime, nothing is mailed at all. Events for central ops are not damped.
//  - Reminders: a critical alert that is still open is mailed again every `reminderMinutes`
//    (0 turns reminders off). Warnings are not repeated.
//  - At most `maxMailsPerRun` mails per evaluation: when more are due, the most urgent go out
//    one by one and the rest are folded into one digest mail.
//  - Hysteresis (every threshold alert): a check marks an observation `within` when its value
//    is back on the better side of a threshold by less than the check's margin (stock above
//    the minimum, but by less than the margin). Such an observation does not lower an open
//    alert (resolve, or critical -> warning) until the alert has been on the better side for
//    `resolveHoldMinutes`; past the margin it lowers at once. A value hovering at a threshold
//    is one alert, not a raise and a resolution per run.
import { pksError } from '../../appliance/errors.js';

export type Severity = 'warning' | 'critical';
export type Level = Severity | 'ok';

/** What one check saw about one subject in this run. */
export interface Observation {
  /** Stable identity, `${kind}:${subject}`. */
  key: string;
  kind: string;
  subject: string;
  severity: Level;
  message: string;
  /** What a person on site should do about it. */
  action: string;
  /** Back on the better side of a threshold by less than the check's margin (hysteresis). */
  within?: boolean;
}

export interface Alert {
  key: string;
  kind: string;
  subject: string;
  /** Last problem level; kept when resolved so the resolution mail can say what ended. */
  severity: Severity;
  message: string;
  action: string;
  /** Start of this episode (ISO 8601). */
  raisedAt: string;
  /** Last change of level: raise, escalation, de-escalation or resolution (ISO 8601). */
  updatedAt: string;
  resolvedAt?: string;
  lastMailAt?: string;
  /** The level the last mail told ops about ('ok': nothing open as far as ops know). */
  notified: Level;
  /** When each level was last left, to recognise a return to it as flapping. */
  leftAt: Partial<Record<Level, string>>;
  /** A due mail waits until then because the alert is flapping. */
  holdUntil?: string;
  /** Since then the checks see it on the better side of its threshold, inside the margin. */
  easingSince?: string;
}

export type EventType = 'raised' | 'escalated' | 'deescalated' | 'resolved';

export interface AlertEvent {
  /** Time-ordered unique id: `${at}#${key}#${type}`. */
  id: string;
  type: EventType;
  at: string;
  alert: Alert;
}

export type MailType = EventType | 'reminder';

export interface MailItem {
  type: MailType;
  /** Who must hear about it: the higher of what ops knew and what is now. */
  severity: Severity;
  alert: Alert;
}

/** One mail to send; a digest when it has more than one item. */
export interface AlertMail {
  id: string;
  createdAt: string;
  severity: Severity;
  items: MailItem[];
}

/** A mail waiting in the store's outbox until the SMTP server took it. */
export interface QueuedMail {
  id: string;
  mail: AlertMail;
  attempts: number;
  nextAttemptAt: string;
  lastError?: string;
}

export interface AlertChange {
  alerts: Alert[];
  removed: string[];
  events: AlertEvent[];
  mails: QueuedMail[];
}

export interface MailOutbox {
  /** Queued mails in creation order. */
  pendingMails(): QueuedMail[];
  updateMail(m: QueuedMail): Promise<void>;
  removeMail(id: string): Promise<void>;
}

export interface AlertStore extends MailOutbox {
  /** Every alert the store keeps: open ones and recently resolved ones. */
  load(): Alert[];
  save(a: Alert): Promise<void>;
  /** Newest first. */
  history(limit: number): AlertEvent[];
  appendHistory(evt: AlertEvent): Promise<void>;
  /** Applies one evaluation atomically and durably (state, events and queued mails). */
  commit(change: AlertChange): Promise<void>;
}

export interface AlertEngineOptions {
  store: AlertStore;
  /** Reminder interval for open critical alerts; 0 disables. Default 240. */
  reminderMinutes?: number;
  /** Damping window for flapping alerts. Default 15. */
  flapMinutes?: number;
  /** Cap on mails per evaluation (>= 1); the rest go into one digest. Default 10. */
  maxMailsPerRun?: number;
  /** Hysteresis: how long an observation inside the margin must last to lower an alert. Default 10. */
  resolveHoldMinutes?: number;
  /**
   * Every state change, after it is durable. Meant for the uplink's LMDB outbox; it must
   * itself be durable, because the engine does not emit an event twice.
   */
  onEvent?: (evt: AlertEvent) => void | Promise<void>;
}

export interface EvaluateOptions {
  /**
   * Kinds whose observation list is complete in this run: an open alert of such a kind that
   * was not observed is resolved (its subject is gone, e.g. a pool or certificate removed).
   */
  complete?: string[];
}

export interface EvaluateResult {
  events: AlertEvent[];
  mails: AlertMail[];
  open: Alert[];
  /** Due mails held back because their alert is flapping. */
  held: number;
  /** onEvent failures (the events are in the history regardless). */
  eventErrors: number;
}

const LEVELS: readonly Level[] = ['ok', 'warning', 'critical'];
const KIND = /^[a-z0-9][a-z0-9-]{0,63}$/;
const MINUTE = 60_000;

const rank = (l: Level): number => LEVELS.indexOf(l);
const higher = (a: Level, b: Level): Severity => (rank(a) >= rank(b) ? a : b) as Severity;
const ms = (iso: string): number => Date.parse(iso);

function validate(obs: unknown, seen: Set<string>): Observation {
  const o = obs as Partial<Observation> | null;
  const bad = (what: string): never => {
    throw pksError('PKS_BAD_REQUEST', `observation: ${what}`);
  };
  if (!o || typeof o !== 'object') bad('not an object');
  if (typeof o!.kind !== 'string' || !KIND.test(o!.kind)) bad('kind');
  if (typeof o!.subject !== 'string' || o!.subject.length === 0 || o!.subject.length > 256) bad('subject');
  if (o!.key !== `${o!.kind}:${o!.subject}`) bad('key must be kind:subject');
  if (!LEVELS.includes(o!.severity as Level)) bad('severity');
  if (typeof o!.message !== 'string' || typeof o!.action !== 'string') bad('message/action');
  if (seen.has(o!.key!)) bad(`duplicate key ${o!.key}`);
  seen.add(o!.key!);
  return o as Observation;
}

const PRIORITY: Record<MailType, number> = { escalated: 0, raised: 1, deescalated: 2, resolved: 3, reminder: 4 };

export class AlertEngine {
  private readonly store: AlertStore;
  private readonly reminderMs: number;
  private readonly flapMs: number;
  private readonly maxMails: number;
  private readonly holdMs: number;
  private readonly onEvent: AlertEngineOptions['onEvent'];

  constructor(opts: AlertEngineOptions) {
    const num = (v: number | undefined, def: number, min: number, name: string): number => {
      const n = v ?? def;
      if (!Number.isFinite(n) || n < min) throw pksError('PKS_CONFIG_INVALID', `sentinel.${name}`);
      return n;
    };
    this.store = opts.store;
    this.reminderMs = num(opts.reminderMinutes, 240, 0, 'reminderMinutes') * MINUTE;
    this.flapMs = num(opts.flapMinutes, 15, 0, 'flapMinutes') * MINUTE;
    this.maxMails = Math.floor(num(opts.maxMailsPerRun, 10, 1, 'maxMailsPerRun'));
    this.holdMs = num(opts.resolveHoldMinutes, 10, 0, 'resolveHoldMinutes') * MINUTE;
    this.onEvent = opts.onEvent;
  }

  open(): Alert[] {
    return this.store.load().filter((a) => !a.resolvedAt);
  }

  async evaluate(observations: Observation[], now: Date, opts: EvaluateOptions = {}): Promise<EvaluateResult> {
    if (!(now instanceof Date) || Number.isNaN(now.getTime())) throw pksError('PKS_BAD_REQUEST', 'now');
    if (!Array.isArray(observations)) throw pksError('PKS_BAD_REQUEST', 'observations');
    const seen = new Set<string>();
    const valid = observations.map((o) => validate(o, seen));
    const at = now.toISOString();
    const alerts = new Map(this.store.load().map((a) => [a.key, structuredClone(a)]));
    const dirty = new Set<string>();
    const events: AlertEvent[] = [];

    const emit = (type: EventType, a: Alert): void => {
      events.push({ id: `${at}#${a.key}#${type}`, type, at, alert: structuredClone(a) });
    };
    const changeLevel = (a: Alert, from: Level, to: Level): void => {
      a.leftAt[from] = at;
      a.updatedAt = at;
      const left = a.leftAt[to];
      if (left !== undefined && now.getTime() - ms(left) < this.flapMs) a.holdUntil = new Date(now.getTime() + this.flapMs).toISOString();
      else delete a.holdUntil;
    };

    const apply = (o: Observation): void => {
      let a = alerts.get(o.key);
      if (!a) {
        if (o.severity === 'ok') return;
        a = {
          key: o.key, kind: o.kind, subject: o.subject, severity: o.severity, message: o.message, action: o.action,
          raisedAt: at, updatedAt: at, notified: 'ok', leftAt: {},
        };
        alerts.set(o.key, a);
        dirty.add(o.key);
        emit('raised', a);
        return;
      }
      const current: Level = a.resolvedAt ? 'ok' : a.severity;
      // hysteresis: inside the margin, an open alert is lowered only after the hold time
      if (rank(o.severity) < rank(current) && o.within) {
        if (!a.easingSince) {
          a.easingSince = at;
          dirty.add(o.key);
        }
        if (now.getTime() - ms(a.easingSince) < this.holdMs) return;
      }
      // held long enough, past the margin, or worse again: the easing episode ends here
      if (a.easingSince) {
        delete a.easingSince;
        dirty.add(o.key);
      }
      if (o.severity === 'ok') {
        if (current === 'ok') return;
        a.message = o.message;
        a.resolvedAt = at;
        changeLevel(a, current, 'ok');
        dirty.add(o.key);
        emit('resolved', a);
        return;
      }
      if (a.message !== o.message || a.action !== o.action) {
        a.message = o.message;
        a.action = o.action;
        dirty.add(o.key);
      }
      if (current === o.severity) return;
      dirty.add(o.key);
      a.severity = o.severity;
      changeLevel(a, current, o.severity);
      if (current === 'ok') {
        delete a.resolvedAt;
        // Ops never heard it ended: to them this is still the old episode.
        if (a.notified === 'ok') a.raisedAt = at;
        emit('raised', a);
      } else {
        emit(o.severity === 'critical' ? 'escalated' : 'deescalated', a);
      }
    };

    for (const o of valid) apply(o);
    const complete = new Set(opts.complete ?? []);
    for (const a of alerts.values()) {
      if (complete.has(a.kind) && !a.resolvedAt && !seen.has(a.key)) {
        apply({ key: a.key, kind: a.kind, subject: a.subject, severity: 'ok', message: `${a.subject} is no longer monitored`, action: '' });
      }
    }

    // Mail decisions over every alert, not only the observed ones: held and capped mails
    // become due in later runs whatever the checks report then.
    let held = 0;
    const due: MailItem[] = [];
    // A reminder repeats what a queued mail already says: while SMTP is down they would pile up
    // (one per interval per alert) and go out as a storm when it returns. One waiting is enough.
    const waiting = new Set(this.store.pendingMails().flatMap((m) => m.mail.items.map((i) => i.alert.key)));
    for (const a of alerts.values()) {
      const desired: Level = a.resolvedAt ? 'ok' : a.severity;
      if (desired !== a.notified) {
        if (a.holdUntil && now.getTime() < ms(a.holdUntil)) {
          held++;
          continue;
        }
        const type: MailType =
          a.notified === 'ok' ? 'raised' : desired === 'ok' ? 'resolved' : desired === 'critical' ? 'escalated' : 'deescalated';
        due.push({ type, severity: higher(a.notified, desired), alert: a });
      } else if (
        desired === 'critical' && this.reminderMs > 0 && !waiting.has(a.key) &&
        now.getTime() - ms(a.lastMailAt ?? a.updatedAt) >= this.reminderMs
      ) {
        due.push({ type: 'reminder', severity: 'critical', alert: a });
      }
    }
    due.sort((x, y) => rank(y.severity) - rank(x.severity) || PRIORITY[x.type] - PRIORITY[y.type] || x.alert.key.localeCompare(y.alert.key));

    for (const item of due) {
      const a = item.alert;
      a.notified = a.resolvedAt ? 'ok' : a.severity;
      a.lastMailAt = at;
      delete a.holdUntil;
      dirty.add(a.key);
    }
    const snap = (i: MailItem): MailItem => ({ ...i, alert: structuredClone(i.alert) });
    const groups: MailItem[][] =
      due.length <= this.maxMails
        ? due.map((i) => [snap(i)])
        : [...due.slice(0, this.maxMails - 1).map((i) => [snap(i)]), due.slice(this.maxMails - 1).map(snap)];
    // The sequence number keeps the outbox (ordered by id) in urgency order.
    const mails: AlertMail[] = groups.map((items, n) => ({
      id: `${at}#${String(n).padStart(4, '0')}#${items.length === 1 ? `${items[0]!.alert.key}#${items[0]!.type}` : 'digest'}`,
      createdAt: at,
      severity: items.some((i) => i.severity === 'critical') ? 'critical' : 'warning',
      items,
    }));

    // Resolved alerts are kept only while they can still flap or owe a mail.
    const removed: string[] = [];
    for (const a of alerts.values()) {
      if (a.resolvedAt && a.notified === 'ok' && !a.holdUntil && now.getTime() - ms(a.resolvedAt) >= this.flapMs) {
        removed.push(a.key);
        alerts.delete(a.key);
        dirty.delete(a.key);
      }
    }

    await this.store.commit({
      alerts: [...dirty].map((k) => alerts.get(k)!),
      removed,
      events,
      mails: mails.map((mail) => ({ id: mail.id, mail, attempts: 0, nextAttemptAt: at })),
    });

    let eventErrors = 0;
    if (this.onEvent) {
      for (const e of events) {
        try {
          await this.onEvent(e);
        } catch {
          eventErrors++;
        }
      }
    }
    return { events, mails, open: [...alerts.values()].filter((a) => !a.resolvedAt), held, eventErrors };
  }
}
