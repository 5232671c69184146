// LMDB implementation of the alert store: alert state, event history and the mail outbox in
// one environment, so one transaction covers a state change and the mail it decided.
// Every write awaits `flushed`: lmdb-js resolves writes before they reach the disk.
import { open, type Database, type RootDatabase } from 'lmdb';
import { pksError } from '../../appliance/errors.js';
import type { Alert, AlertChange, AlertEvent, AlertStore, QueuedMail } from './alerts.js';

export interface LmdbAlertStoreOptions {
  path: string;
  /** History entries kept; older ones are dropped at commit. Default 5000. */
  historyLimit?: number;
  /**
   * Also queue every event for central ops in the same transaction as the state change, so
   * the forwarder (pendingEvents/removeEvent) can deliver it later without ever losing one.
   */
  eventOutbox?: boolean;
}

export class LmdbAlertStore implements AlertStore {
  private readonly root: RootDatabase;
  private readonly alerts: Database<Alert, string>;
  private readonly events: Database<AlertEvent, string>;
  private readonly mails: Database<QueuedMail, string>;
  private readonly historyLimit: number;
  private readonly outbound: Database<AlertEvent, string> | undefined;

  constructor(opts: LmdbAlertStoreOptions) {
    if (typeof opts.path !== 'string' || opts.path.length === 0) throw pksError('PKS_CONFIG_INVALID', 'alert store path');
    this.historyLimit = opts.historyLimit ?? 5000;
    try {
      this.root = open({ path: opts.path, maxDbs: 8 });
      this.alerts = this.root.openDB<Alert, string>({ name: 'alerts' });
      this.events = this.root.openDB<AlertEvent, string>({ name: 'history' });
      this.mails = this.root.openDB<QueuedMail, string>({ name: 'mail-outbox' });
      this.outbound = opts.eventOutbox ? this.root.openDB<AlertEvent, string>({ name: 'event-outbox' }) : undefined;
    } catch (e) {
      throw pksError('PKS_STORE_FAILURE', 'alert store cannot be opened', e);
    }
  }

  load(): Alert[] {
    return [...this.alerts.getRange()].map((e) => e.value);
  }

  async save(a: Alert): Promise<void> {
    await this.write(() => this.alerts.put(a.key, a));
  }

  history(limit: number): AlertEvent[] {
    return [...this.events.getRange({ reverse: true, limit: Math.max(0, Math.floor(limit)) })].map((e) => e.value);
  }

  async appendHistory(evt: AlertEvent): Promise<void> {
    await this.write(() => this.events.put(evt.id, evt));
  }

  async commit(change: AlertChange): Promise<void> {
    await this.write(() =>
      this.root.transaction(() => {
        for (const a of change.alerts) this.alerts.put(a.key, a);
        for (const k of change.removed) this.alerts.remove(k);
        for (const e of change.events) this.events.put(e.id, e);
        if (this.outbound) for (const e of change.events) this.outbound.put(e.id, e);
        // ifNoExists semantics by hand: re-queuing an id must not reset its retry state.
        for (const m of change.mails) if (this.mails.get(m.id) === undefined) this.mails.put(m.id, m);
        const excess = this.events.getCount() - this.historyLimit;
        if (excess > 0) for (const k of this.events.getKeys({ limit: excess })) this.events.remove(k);
      }),
    );
  }

  pendingMails(): QueuedMail[] {
    return [...this.mails.getRange()].map((e) => e.value);
  }

  async updateMail(m: QueuedMail): Promise<void> {
    await this.write(() => this.mails.put(m.id, m));
  }

  async removeMail(id: string): Promise<void> {
    await this.write(() => this.mails.remove(id));
  }

  /** Events not yet handed to central ops' outbox, oldest first (needs `eventOutbox`). */
  pendingEvents(limit = 100): AlertEvent[] {
    if (!this.outbound) return [];
    return [...this.outbound.getRange({ limit: Math.max(0, Math.floor(limit)) })].map((e) => e.value);
  }

  async removeEvent(id: string): Promise<void> {
    const db = this.outbound;
    if (db) await this.write(() => db.remove(id));
  }

  /** lmdb-js stats of the store's environment, for its own storage check. */
  getStats(): unknown {
    return this.root.getStats();
  }

  async close(): Promise<void> {
    await this.root.close();
  }

  private async write(op: () => Promise<unknown>): Promise<void> {
    try {
      await op();
      await this.root.flushed;
    } catch (e) {
      throw pksError('PKS_STORE_FAILURE', 'alert store write failed', e);
    }
  }
}
