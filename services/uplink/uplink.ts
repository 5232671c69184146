// The box's side of the KMS link. Owns nothing durable but a small state file (state.ts): key
// stock and the outbox live in the keystore, keys in the vault. This file wires the parts, each
// in its own module:
//  - link.ts: the one MQTT connection, with a persistent session, and everything published;
//  - sync-schedule.ts: on the broker always, or only in cron-scheduled sync windows;
//  - stock-feed.ts: re-orders (once per pool, repeated with the same requestId) and batch chunks
//    fed to the keystore, missing ones asked for again;
//  - outbox-sync.ts: the outbox as signed verification files, deleted only on the KMS's signed ack;
//  - command-runner.ts: signed ops commands and their results; safe mode after a lost state file;
//  - cert-rotation.ts: rotate-cert;
//  - alerts.ts: rate-limited alerts, per code, so junk costs no disk;
//  - attestation.ts: TPM quote + the vault's gate report, before re-orders and periodically;
// and keeps a retained status document on the broker. Junk from the KMS side (unsigned acks,
// chunks that do not verify) is refused at bounded cost: counted, alerted, nothing written.
import { readFileSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { loadTrustAnchor } from '../../appliance/batch-format.js';
import { asPksError, pksError } from '../../appliance/errors.js';
import type { IpcClient } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import type { StatsResponse } from '../../appliance/contracts/keystore.js';
import { parseTopic } from '../../appliance/contracts/topics.js';
import { Alerts } from './alerts.js';
import { Attestation } from './attestation.js';
import { CertRotation } from './cert-rotation.js';
import { CommandRunner } from './command-runner.js';
import type { Schedule, UplinkConfig } from './config.js';
import { newCounters, type UplinkContext } from './context.js';
import { loadStoredIdentity, serialOf } from './identity.js';
import { KmsAnswers } from './kms-answers.js';
import { Link, type Identity } from './link.js';
import { OutboxSync } from './outbox-sync.js';
import { StateFile } from './state.js';
import { StockFeed } from './stock-feed.js';
import { SyncSchedule } from './sync-schedule.js';
import type { UpdateRelay } from './update-relay.js';

export interface UplinkDeps {
  cfg: UplinkConfig;
  keystore: IpcClient;
  vault: IpcClient;
  opsKey: KeyObject;
  mqttKey: string;
  log: Logger;
  version: string;
  /** the updater's relay (update-relay.ts); absent on a box without an updater */
  updates?: UpdateRelay;
}

export class Uplink {
  readonly state: StateFile;
  /** counts for tests and status: what happened since start */
  readonly counters = newCounters();
  /** issue 12: remote attestation, when the config asks for it */
  readonly attestation: Attestation | null;
  private readonly startedAt = new Date();
  private readonly link: Link;
  private readonly sched: SyncSchedule;
  private readonly alerts: Alerts;
  private readonly feed: StockFeed;
  private readonly outbox: OutboxSync;
  private readonly commands: CommandRunner;
  private readonly rotation: CertRotation;
  private tickTimer: NodeJS.Timeout | null = null;
  private statusTimer: NodeJS.Timeout | null = null;
  private syncing: Promise<void> | null = null;
  private stopped = false;
  private health: Record<string, boolean> = { keystore: false, vault: false };

  constructor(private readonly d: UplinkDeps) {
    this.state = new StateFile(d.cfg.stateDir);
    let caPem: string;
    try {
      caPem = readFileSync(d.cfg.kmsCaFile, 'utf8');
    } catch {
      throw pksError('PKS_CONFIG_INVALID', 'KMS CA certificate file cannot be read');
    }
    const trust = loadTrustAnchor(caPem);
    const answers = new KmsAnswers(trust, d.cfg.boxId);
    if (this.state.lost) d.log.error('uplink state lost; safe mode until the KMS re-synchronises', { code: this.state.lost.code, detail: this.state.lost.detail });
    this.link = new Link(d.cfg, this.identityAtStart(), { message: (t, p) => this.onMessage(t, p), connect: () => void this.syncIfConnected() }, d.log);
    this.alerts = new Alerts(d.cfg.timing.alertIntervalSeconds ?? 60, this.state, d.keystore, this.link, d.log, () => void this.counters.alertsHeld++);
    const c: UplinkContext = { cfg: d.cfg, keystore: d.keystore, vault: d.vault, log: d.log, state: this.state, link: this.link, counters: this.counters, raise: (code, detail, outbox) => this.raise(code, detail, outbox) };
    const refuse = (what: string, err: unknown) => this.refuseMessage(what, err);
    this.attestation = d.cfg.attest
      ? new Attestation(d.cfg.attest, d.cfg.boxId, trust, d.vault, async (body) => {
          if (!this.connected) throw pksError('PKS_UPLINK_DOWN', 'not connected to the broker');
          await this.link.publish('attest', JSON.stringify(body));
        }, d.log)
      : null;
    this.sched = new SyncSchedule(d.cfg, this.state, this.link);
    this.feed = new StockFeed(c, trust, this.attestation ? () => this.attest('re-order') : null);
    this.outbox = new OutboxSync(c, answers, refuse);
    this.rotation = new CertRotation(c, answers, this.sched, refuse);
    this.commands = new CommandRunner(c, { opsKey: d.opsKey, answers, schedule: this.sched, syncNow: () => this.syncIfConnected(), rotateCert: (cmd, report) => this.rotation.rotate(cmd, report), refuse });
  }

  /** The setup identity, or the one the last rotate-cert stored. */
  private identityAtStart(): Identity {
    const setup = { cert: readFileSync(this.d.cfg.mqtt.certFile, 'utf8'), key: this.d.mqttKey };
    const override = this.state.state.identity;
    if (!override) return setup;
    const id = loadStoredIdentity(override);
    if (id) return { cert: id.cert, key: id.key };
    // the setup identity is still issued by the same CA; better that than no link at all
    this.d.log.warn('rotated MQTT identity cannot be read; using the one in the config', { serial: override.serial });
    return setup;
  }

  /** Serial of the client certificate the uplink presents (hex, as node prints it). */
  get identitySerial(): string | null {
    return serialOf(this.link.identity.cert);
  }
  /** Serial of the client certificate on the live TLS connection, null when not connected. */
  get linkCertSerial(): string | null {
    return this.link.certSerial;
  }
  get cfg(): UplinkConfig {
    return this.d.cfg;
  }
  get connected(): boolean {
    return this.link.connected;
  }
  /** a broker connection held or being made (in windows mode: only inside a window) */
  get linkOpen(): boolean {
    return this.link.open;
  }
  get schedule(): Schedule {
    return this.sched.current;
  }
  get safeMode(): boolean {
    return this.commands.safeMode;
  }

  async start(): Promise<void> {
    if (this.state.lost) void this.raise('PKS_SAFE_MODE', `${this.state.lost.detail}; commands refused until the KMS re-synchronises`);
    this.sched.apply();
    this.tickTimer = setInterval(() => void this.syncIfConnected(), this.d.cfg.timing.tickSeconds * 1000);
    this.statusTimer = setInterval(() => void this.publishStatus().catch(() => undefined), this.d.cfg.timing.statusSeconds * 1000);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    if (this.statusTimer) clearInterval(this.statusTimer);
    // no new connection from here; the current one ends after the sync round in progress
    await this.link.close(this.sched.stop().then(() => this.syncing));
  }

  /** A sync window now (sync-now, and tests). */
  openWindow(): void {
    this.sched.openWindow();
  }

  // ---- inbound

  private async onMessage(topic: string, payload: Buffer): Promise<void> {
    const t = parseTopic(topic);
    if (!t || t.boxCn !== this.d.cfg.boxId) return;
    if (t.name === 'batch') return this.feed.onChunk(payload);
    if (t.name === 'cmd') return this.commands.onCommand(payload);
    if (t.name === 'ack') return this.outbox.onAck(payload);
    if (t.name === 'cert') return this.rotation.onCert(payload);
    if (t.name === 'sync') return this.commands.onSync(payload);
    if (t.name === 'update' || t.name === 'update-chunk') return this.d.updates?.onMessage(t.name, payload);
    if (t.name === 'attest-answer') {
      try {
        this.attestation?.onAnswer(payload);
      } catch (err) {
        return this.refuseMessage('attest answer', err);
      }
    }
  }

  /** A KMS message whose signature or shape fails: counted, alert rate-limited, nothing else. */
  private refuseMessage(what: string, err: unknown): Promise<void> {
    const e = asPksError(err);
    this.counters.refusedMessages++;
    this.d.log.warn(`${what} refused`, { code: e.code, detail: e.detail });
    return this.raise(e.code, `${what} refused: ${e.detail}`);
  }

  // ---- decommissioning (issue 16 §3, appliance/pksctl/zeroize.ts)

  /**
   * Step 1 of zeroize: a zeroize-begin event (with the current client certificate, so the KMS
   * can revoke it) and a final audit checkpoint go into the outbox, then sync rounds until the
   * KMS acknowledged everything. Refused while the KMS link is down.
   */
  async finalSync(nonce: string, timeoutMs: number): Promise<{ drained: boolean }> {
    if (!this.connected) throw pksError('PKS_UPLINK_DOWN', 'not connected to the broker');
    await this.d.keystore.call('outbox-put', { kind: 'event', body: { type: 'zeroize-begin', nonce, cert: this.link.identity.cert, source: 'uplink' } });
    await this.d.keystore.call('checkpoint', {});
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      await this.syncIfConnected();
      const { items } = await this.d.keystore.call<{ items: unknown[] }>('outbox-peek', { limit: 1 });
      if (items.length === 0) return { drained: true };
      await new Promise((r) => setTimeout(r, 200));
    }
    return { drained: false };
  }

  /** Step 4 of zeroize: tells the KMS the keys and data are gone; it revokes the certificate. */
  async reportZeroized(nonce: string): Promise<{ reported: boolean }> {
    if (!this.connected) throw pksError('PKS_UPLINK_DOWN', 'not connected to the broker');
    await this.link.publish('event', JSON.stringify({ type: 'zeroized', nonce, at: new Date().toISOString() }));
    return { reported: true };
  }

  // ---- alerts and status

  raise(code: string, detail: string, outbox = true): Promise<void> {
    return this.alerts.raise(code, detail, outbox);
  }

  async statusDoc(): Promise<Record<string, unknown>> {
    let stock: StatsResponse['pools'] | null = null;
    try {
      stock = (await this.d.keystore.call<StatsResponse>('stats', {})).pools;
      this.health.keystore = true;
    } catch {
      this.health.keystore = false;
    }
    try {
      await this.d.vault.call('public-key', { name: 'audit' });
      this.health.vault = true;
    } catch {
      this.health.vault = false;
    }
    const ok = this.health.keystore && this.health.vault;
    const open = this.alerts.open();
    return {
      boxId: this.d.cfg.boxId,
      version: this.d.version,
      startedAt: this.startedAt.toISOString(),
      uptimeS: Math.round((Date.now() - this.startedAt.getTime()) / 1000),
      mode: this.schedule.mode,
      schedule: this.schedule,
      stock: stock ?? {},
      pendingReorders: this.state.state.pending,
      safeMode: this.safeMode,
      lastSync: this.state.state.lastSync,
      openAlerts: open,
      health: ok ? (open.length > 0 ? 'degraded' : 'ok') : 'failing',
      checks: { ...this.health, mqtt: this.connected },
      ...(this.d.updates?.last ? { update: this.d.updates.last } : {}),
      ...(this.attestation ? { attestation: this.attestation.last } : {}),
      at: new Date().toISOString(),
    };
  }

  /** update-status for the updater's relay; dropped while the link is down (the status document keeps the last one) */
  async publishUpdateStatus(body: string): Promise<void> {
    if (this.connected) await this.link.publish('update-status', body);
  }

  async publishStatus(): Promise<void> {
    if (!this.connected) return;
    await this.link.publish('status', JSON.stringify(await this.statusDoc()), true);
  }

  // ---- sync

  /** One sync round; concurrent callers share the round in progress. */
  syncIfConnected(): Promise<void> {
    if (!this.connected || this.stopped) return Promise.resolve();
    if (!this.syncing) {
      this.syncing = this.syncRound()
        .catch((err) => {
          const e = asPksError(err);
          this.d.log.warn('sync round failed', { code: e.code, detail: e.detail });
        })
        .finally(() => {
          this.syncing = null;
        });
    }
    return this.syncing;
  }

  private async syncRound(): Promise<void> {
    await this.commands.requestResync();
    if (this.attestation?.due) await this.attest('periodic');
    await this.feed.reorders();
    await this.feed.missingChunks();
    const drained = await this.outbox.flush();
    if (drained) this.state.update((s) => void (s.lastSync = new Date().toISOString()));
    await this.publishStatus().catch(() => undefined);
  }

  /** One attestation round; a refusal is raised as an alert (the KMS then sends no stock). */
  private async attest(why: string): Promise<void> {
    const r = await this.attestation!.round(why);
    if (!r.ok && r.error) await this.raise(r.error.code, `attestation refused: ${r.error.detail}`);
  }
}
