// The box's side of the KMS link. Owns nothing durable but a small state file: key stock and
// the outbox live in the keystore, keys in the vault. What it does:
//  - connects (always, or in cron-scheduled sync windows) with a persistent MQTT session;
//  - re-orders once per pool when available < minimum, and not again until a batch for that
//    pool has arrived (the pending requestId is persisted; an unanswered request is repeated
//    with the same requestId, which the KMS answers with the same batch, never a second one);
//  - feeds batch chunks to the keystore (import-chunk, idempotent per batch + chunk) and asks
//    for chunks still missing after a quiet period;
//  - drains the outbox as signed verification files and deletes items only on the KMS's
//    signed ack, and only the ids it sent in that file (appliance/kms-message.ts);
//  - refuses junk (unsigned acks, chunks that do not verify) at bounded cost: counted, alerts
//    rate-limited per code, nothing written per junk message;
//  - after losing its state file, refuses commands (safe mode) until the KMS re-synchronises it;
//  - executes signed ops commands and publishes each result (rotate-cert: identity.ts);
//  - keeps a retained status document on the broker;
//  - attests to the KMS (TPM quote + the vault's gate report) before re-orders and periodically.
import { readFileSync } from 'node:fs';
import { randomUUID, type KeyObject } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import cron, { type ScheduledTask } from 'node-cron';
import type { MqttClient } from 'mqtt';
import { loadTrustAnchor, verifyChunk, type TrustAnchor } from '../../appliance/batch-format.js';
import { asPksError, isErrorCode, pksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import type { IpcClient } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import type { ImportChunkResponse, OutboxFileResponse, StatsResponse } from '../../appliance/contracts/keystore.js';
import { commandRef, peekSeq, verifyCommand, type CommandPayload } from './commands.js';
import type { Schedule, UplinkConfig } from './config.js';
import { checkIssuedCert, loadStoredIdentity, makeCsr, removeIdentity, serialOf, storeIdentity } from './identity.js';
import { AlertGate, KmsAnswers, SentFiles, Waiters, type AckMessage, type CertAnswer } from './kms-answers.js';
import { connectLink, publish } from '../../appliance/mqtt-link.js';
import { StateFile } from './state.js';
import type { UpdateRelay } from './update-relay.js';
import { BOX_INBOUND, boxTopic, parseTopic } from '../../appliance/contracts/topics.js';
import { isUnlockCommand, runUnlockCommand } from './unlock-commands.js';
import { Attestation } from './attestation.js';

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

const BATCH_REFUSALS = new Set(['PKS_BATCH_INVALID', 'PKS_BATCH_SIGNATURE', 'PKS_BATCH_NOT_FOR_US', 'PKS_SEAL_INVALID', 'PKS_BAD_REQUEST', 'PKS_POOL_UNKNOWN', 'PKS_CONFLICT']);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Uplink {
  readonly state: StateFile;
  private client: MqttClient | null = null;
  private readonly startedAt = new Date();
  private tickTimer: NodeJS.Timeout | null = null;
  private statusTimer: NodeJS.Timeout | null = null;
  private windowTask: ScheduledTask | null = null;
  private windowEnd: NodeJS.Timeout | null = null;
  private syncing: Promise<void> | null = null;
  private readonly ackWaiters = new Waiters<AckMessage>();
  private stopped = false;
  private health: Record<string, boolean> = { keystore: false, vault: false };
  private mqttCert: string;
  private mqttKey: string;
  private readonly certWaiters = new Waiters<CertAnswer>();
  private rotating = false;
  private readonly trust: TrustAnchor;
  private readonly answers: KmsAnswers;
  /** fileId → the outbox ids sent in it: an ack can delete only these */
  private readonly sentFiles = new SentFiles();
  private readonly alertGate: AlertGate;
  /** the resync request of this safe-mode episode (answers to any other are ignored) */
  private resyncId: string | null = null;
  /** issue 12: remote attestation, when the config asks for it */
  readonly attestation: Attestation | null;
  /** counts for tests and status: what happened since start */
  readonly counters = { chunks: 0, duplicates: 0, refusedChunks: 0, filesAcked: 0, itemsAcked: 0, commands: 0, refusedCommands: 0, resends: 0, refusedMessages: 0, alertsHeld: 0 };

  constructor(private readonly d: UplinkDeps) {
    this.state = new StateFile(d.cfg.stateDir);
    let caPem: string;
    try {
      caPem = readFileSync(d.cfg.kmsCaFile, 'utf8');
    } catch {
      throw pksError('PKS_CONFIG_INVALID', 'KMS CA certificate file cannot be read');
    }
    this.trust = loadTrustAnchor(caPem);
    this.answers = new KmsAnswers(this.trust, d.cfg.boxId);
    this.alertGate = new AlertGate((d.cfg.timing.alertIntervalSeconds ?? 60) * 1000);
    this.attestation = d.cfg.attest
      ? new Attestation(d.cfg.attest, d.cfg.boxId, this.trust, d.vault, async (body) => {
          if (!this.connected) throw pksError('PKS_UPLINK_DOWN', 'not connected to the broker');
          await publish(this.client!, boxTopic(d.cfg.boxId, 'attest'), JSON.stringify(body));
        }, d.log)
      : null;
    if (this.state.lost) d.log.error('uplink state lost; safe mode until the KMS re-synchronises', { code: this.state.lost.code, detail: this.state.lost.detail });
    this.mqttCert = readFileSync(d.cfg.mqtt.certFile, 'utf8');
    this.mqttKey = d.mqttKey;
    const override = this.state.state.identity;
    if (override) {
      const id = loadStoredIdentity(override);
      if (id) {
        this.mqttCert = id.cert;
        this.mqttKey = id.key;
      } else {
        // the setup identity is still issued by the same CA; better that than no link at all
        d.log.warn('rotated MQTT identity cannot be read; using the one in the config', { serial: override.serial });
      }
    }
  }

  /** Serial of the client certificate the uplink presents (hex, as node prints it). */
  get identitySerial(): string | null {
    return serialOf(this.mqttCert);
  }

  /** Serial of the client certificate on the live TLS connection, null when not connected. */
  get linkCertSerial(): string | null {
    if (!this.connected) return null;
    const sock = this.client?.stream as TLSSocket | undefined;
    const c = typeof sock?.getCertificate === 'function' ? sock.getCertificate() : null;
    return c && 'serialNumber' in c ? (c.serialNumber as string) : null;
  }

  get cfg(): UplinkConfig {
    return this.d.cfg;
  }
  get connected(): boolean {
    return this.client?.connected ?? false;
  }
  /** a broker connection held or being made (in windows mode: only inside a window) */
  get linkOpen(): boolean {
    return this.client !== null;
  }
  get schedule(): Schedule {
    return this.state.state.schedule ?? { ...this.d.cfg.schedule };
  }

  /** true while commands are refused because the last accepted seq is unknown */
  get safeMode(): boolean {
    return this.state.state.safeMode;
  }

  async start(): Promise<void> {
    if (this.state.lost) void this.raise('PKS_SAFE_MODE', `${this.state.lost.detail}; commands refused until the KMS re-synchronises`);
    this.applySchedule();
    this.tickTimer = setInterval(() => void this.syncIfConnected(), this.d.cfg.timing.tickSeconds * 1000);
    this.statusTimer = setInterval(() => void this.publishStatus().catch(() => undefined), this.d.cfg.timing.statusSeconds * 1000);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.closeWindow();
    await this.windowTask?.stop();
    await this.syncing?.catch(() => undefined);
    await this.disconnect();
  }

  // ---- connection and schedule

  private applySchedule(): void {
    const s = this.schedule;
    void this.windowTask?.stop();
    this.windowTask = null;
    this.closeWindow();
    if (s.mode === 'always') {
      this.connect();
      return;
    }
    this.windowTask = cron.schedule(s.cron, () => this.openWindow(), { name: 'uplink-sync-window', noOverlap: true });
    void this.disconnect();
  }

  /** A sync window: connect, sync, stay reachable for windowSeconds, disconnect. */
  openWindow(): void {
    if (this.stopped) return;
    this.connect();
    if (this.windowEnd) clearTimeout(this.windowEnd);
    this.windowEnd = setTimeout(() => {
      this.windowEnd = null;
      if (this.schedule.mode === 'windows') void this.disconnect();
    }, this.schedule.windowSeconds * 1000);
  }

  private closeWindow(): void {
    if (this.windowEnd) clearTimeout(this.windowEnd);
    this.windowEnd = null;
  }

  private connect(): void {
    if (this.client || this.stopped) return;
    const m = this.d.cfg.mqtt;
    const client = connectLink(
      {
        host: m.host,
        port: m.port,
        ca: readFileSync(m.caFile),
        cert: this.mqttCert,
        key: this.mqttKey,
        clientId: this.d.cfg.boxId,
        sessionExpirySeconds: m.sessionExpirySeconds,
        keepaliveSeconds: m.keepaliveSeconds,
        reconnectMs: Math.round(m.reconnectSeconds * 1000),
      },
      BOX_INBOUND.map((t) => boxTopic(this.d.cfg.boxId, t)),
      (t, p) => this.onMessage(t, p),
      this.d.log,
    );
    client.on('connect', () => void this.syncIfConnected());
    this.client = client;
  }

  private async disconnect(): Promise<void> {
    const c = this.client;
    this.client = null;
    if (c) await c.endAsync().catch(() => undefined);
  }

  // ---- inbound

  private async onMessage(topic: string, payload: Buffer): Promise<void> {
    const t = parseTopic(topic);
    if (!t || t.boxCn !== this.d.cfg.boxId) return;
    if (t.name === 'batch') return this.onChunk(payload);
    if (t.name === 'cmd') return this.onCommand(payload);
    if (t.name === 'ack') return this.onAck(payload);
    if (t.name === 'cert') return this.onCert(payload);
    if (t.name === 'sync') return this.onSync(payload);
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

  private async onChunk(payload: Buffer): Promise<void> {
    let chunk: unknown;
    try {
      chunk = parseJsonOr('PKS_BATCH_INVALID', 'batch chunk', payload);
      // checked here first, so junk costs one signature check and never reaches the keystore
      verifyChunk(chunk, this.trust, this.d.cfg.boxId);
    } catch (err) {
      this.counters.refusedChunks++;
      const e = asPksError(err);
      return this.raise(e.code, `batch chunk refused: ${e.detail}`);
    }
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await this.d.keystore.call<ImportChunkResponse>('import-chunk', { chunk }, 60_000);
        this.counters.chunks++;
        if (r.duplicate) this.counters.duplicates++;
        this.noteProgress(r);
        return;
      } catch (err) {
        const e = asPksError(err);
        if (BATCH_REFUSALS.has(e.code) || !e.retry || attempt >= 4) {
          this.counters.refusedChunks++;
          // stock is untouched: the keystore refuses a bad chunk as a whole
          return this.raise(e.code, `batch chunk refused: ${e.detail}`);
        }
        await sleep(200 * 2 ** attempt);
      }
    }
  }

  private noteProgress(r: ImportChunkResponse): void {
    this.state.update((s) => {
      if (r.complete) {
        delete s.batches[r.batchId];
        if (s.pending[r.pool]) {
          this.d.log.info('re-order fulfilled', { pool: r.pool, requestId: s.pending[r.pool]!.requestId, batchId: r.batchId });
          delete s.pending[r.pool];
        }
      } else {
        s.batches[r.batchId] = { pool: r.pool, chunks: r.chunks, missing: r.missing, lastAt: new Date().toISOString() };
      }
    });
  }

  private onAck(payload: Buffer): Promise<void> {
    let ack: AckMessage;
    try {
      ack = this.answers.ack(payload);
    } catch (err) {
      return this.refuseMessage('ack', err);
    }
    if (typeof ack.fileId === 'string' && this.ackWaiters.settle(ack.fileId, ack)) return Promise.resolve();
    // a late ack (after our wait timed out) still counts: the KMS has those items stored
    return this.applyAck(ack);
  }

  private async applyAck(ack: AckMessage): Promise<void> {
    if (ack.error) {
      await this.raise(ack.error.code, `KMS refused verification file: ${ack.error.detail}`);
      return;
    }
    const taken = this.sentFiles.take(ack);
    if (!taken) {
      // genuine but not for a file we are waiting on (a replay, or from before a restart:
      // those items go out again in a new file, which the KMS takes idempotently by id)
      this.d.log.info('ack for no file in flight ignored', { fileId: ack.fileId, ids: ack.ids.length });
      return;
    }
    const { ids, foreign, sent } = taken;
    if (foreign > 0) await this.raise('PKS_KMS_MESSAGE_INVALID', `ack of ${ack.fileId} names ${foreign} id(s) not sent in it; those are kept`);
    if (ids.length === 0) return;
    // a rejected item is never deleted: the keystore keeps it and raises a critical alert
    const rejected = (ack.rejected ?? []).filter((r) => sent.has(r.id)).slice(0, 5000);
    if (rejected.length) await this.d.keystore.call('outbox-reject', { items: rejected });
    const gone = new Set(rejected.map((r) => r.id));
    const acked = ids.filter((id) => !gone.has(id));
    if (acked.length) await this.d.keystore.call('outbox-ack', { ids: acked });
    this.counters.filesAcked++;
    this.counters.itemsAcked += ids.length;
    for (const r of rejected) await this.raise(r.code, `KMS rejected ${r.id}: ${r.detail}`, false);
    if (Array.isArray(ack.anchors) && ack.anchors.length) {
      try {
        await this.d.keystore.call('audit-anchor', { anchors: ack.anchors.slice(0, 100) });
      } catch (err) {
        const e = asPksError(err);
        await this.raise(e.code, `audit anchor from the KMS refused: ${e.detail}`, false);
      }
    }
  }

  // ---- safe mode: the last accepted command seq was lost with the state file

  private async requestResync(): Promise<void> {
    if (!this.safeMode || !this.connected) return;
    this.resyncId ??= `rs-${randomUUID()}`;
    this.d.log.info('asking the KMS to re-synchronise', { requestId: this.resyncId });
    await publish(this.client!, boxTopic(this.d.cfg.boxId, 'resync'), JSON.stringify({ requestId: this.resyncId }));
  }

  private onSync(payload: Buffer): Promise<void> {
    let a: { requestId: string; lastSeq: number };
    try {
      a = this.answers.sync(payload);
    } catch (err) {
      return this.refuseMessage('sync answer', err);
    }
    // only the answer to this episode's request: an old one could roll lastSeq back
    if (!this.safeMode || a.requestId !== this.resyncId) return Promise.resolve();
    this.state.update((s) => {
      s.lastSeq = Math.max(s.lastSeq, a.lastSeq);
      s.safeMode = false;
    });
    this.resyncId = null;
    this.d.log.info('re-synchronised by the KMS; commands accepted again', { lastSeq: this.state.state.lastSeq });
    return Promise.resolve();
  }

  // ---- commands

  private async onCommand(payload: Buffer): Promise<void> {
    const ref = commandRef(payload);
    let cmd: CommandPayload;
    try {
      if (this.safeMode) throw pksError('PKS_SAFE_MODE', 'the last accepted command seq is unknown; commands are refused until the KMS re-synchronises');
      cmd = verifyCommand(payload, { opsKey: this.d.opsKey, boxId: this.d.cfg.boxId, lastSeq: this.state.state.lastSeq });
    } catch (err) {
      const e = asPksError(err);
      this.counters.refusedCommands++;
      const seq = peekSeq(payload);
      this.d.log.warn('command refused', { ref, seq, code: e.code, detail: e.detail });
      await this.result({ ref, ...(seq !== undefined ? { seq } : {}), ok: false, error: { code: e.code, detail: e.detail } });
      await this.raise(e.code, `command refused: ${e.detail}`);
      return;
    }
    // the seq is taken before the command runs: a crash in between loses the command (ops
    // sees no result and sends a new one), it can never make a replay pass
    this.state.update((s) => void (s.lastSeq = cmd.seq));
    this.counters.commands++;
    this.d.log.info('command accepted', { ref, seq: cmd.seq, command: cmd.command });
    if (cmd.command === 'rotate-cert') {
      // runs off the inbound path: the KMS's answer arrives on the stream this handler holds
      void this.rotateCert(cmd, ref);
      return;
    }
    try {
      const result = await this.execute(cmd);
      await this.result({ ref, seq: cmd.seq, command: cmd.command, ok: true, result });
    } catch (err) {
      const e = asPksError(err);
      this.d.log.warn('command failed', { seq: cmd.seq, command: cmd.command, code: e.code, detail: e.detail });
      await this.result({ ref, seq: cmd.seq, command: cmd.command, ok: false, error: { code: e.code, detail: e.detail } });
    }
  }

  private async execute(cmd: CommandPayload): Promise<Record<string, unknown>> {
    const a = cmd.args as Record<string, any>;
    if (isUnlockCommand(cmd.command)) return runUnlockCommand(cmd.command, a);
    switch (cmd.command) {
      case 'set-quota':
        return (await this.d.keystore.call('pool-set', a)) as Record<string, unknown>;
      case 'revoke-tester':
        return (await this.d.keystore.call('tester-revoke', { cn: a.cn })) as Record<string, unknown>;
      case 'sync-now':
        if (this.schedule.mode === 'windows') this.openWindow();
        void this.syncIfConnected();
        return { syncing: true };
      case 'set-schedule': {
        const s: Schedule = { ...this.schedule, mode: a.mode };
        if (a.cron !== undefined) s.cron = a.cron;
        if (a.windowSeconds !== undefined) s.windowSeconds = a.windowSeconds;
        if (s.mode === 'windows' && !cron.validate(s.cron)) throw pksError('PKS_COMMAND_INVALID', 'cron expression is invalid');
        this.state.update((st) => void (st.schedule = s));
        // applied after the result is out, so ops hears back even when the link closes now
        setTimeout(() => this.applySchedule(), 100).unref();
        return { schedule: s };
      }
      case 'release-stock': {
        // issue 16 §2 rebalancing: out of this box for good, then the KMS sends as many to `to`
        const r = (await this.d.keystore.call('release-stock', { pool: a.pool, count: a.count, to: a.to, ref: `cmd-${cmd.seq}` })) as Record<string, unknown>;
        setTimeout(() => void this.syncIfConnected(), 100).unref();
        return r;
      }
      case 'rotate-cert':
        throw pksError('PKS_INTERNAL', 'rotate-cert runs on its own path');
    }
  }

  // ---- decommissioning (issue 16 §3, appliance/pksctl/zeroize.ts)

  /**
   * Step 1 of zeroize: a zeroize-begin event (with the current client certificate, so the KMS
   * can revoke it) and a final audit checkpoint go into the outbox, then sync rounds until the
   * KMS acknowledged everything. Refused while the KMS link is down.
   */
  async finalSync(nonce: string, timeoutMs: number): Promise<{ drained: boolean }> {
    if (!this.connected) throw pksError('PKS_UPLINK_DOWN', 'not connected to the broker');
    await this.d.keystore.call('outbox-put', { kind: 'event', body: { type: 'zeroize-begin', nonce, cert: this.mqttCert, source: 'uplink' } });
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
    await publish(this.client!, boxTopic(this.d.cfg.boxId, 'event'), JSON.stringify({ type: 'zeroized', nonce, at: new Date().toISOString() }));
    return { reported: true };
  }

  // ---- certificate rotation

  private onCert(payload: Buffer): Promise<void> {
    let a: CertAnswer;
    try {
      a = this.answers.cert(payload);
    } catch (err) {
      return this.refuseMessage('cert answer', err);
    }
    // an answer nobody waits for (late, repeated, for a rotation that gave up) changes nothing
    this.certWaiters.settle(a.requestId, a);
    return Promise.resolve();
  }

  /** Disconnects and connects again with the current identity; true once the broker took it. */
  private async reconnect(ms: number): Promise<boolean> {
    await this.disconnect();
    this.connect();
    const c = this.client;
    if (!c) return false;
    if (c.connected) return true;
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        c.off('connect', onConnect);
        resolve(ok);
      };
      const onConnect = (): void => done(true);
      const timer = setTimeout(() => done(false), ms);
      timer.unref();
      c.on('connect', onConnect);
    });
  }

  /**
   * rotate-cert: new key + CSR, certificate from the KMS, checked, stored, reconnected with;
   * only then committed (state points to it) and reported. Any failure keeps the old identity.
   */
  private async rotateCert(cmd: CommandPayload, ref: string): Promise<void> {
    const boxId = this.d.cfg.boxId;
    const ms = (this.d.cfg.timing.certTimeoutSeconds ?? 60) * 1000;
    const report = (r: Record<string, unknown>) => this.result({ ref, seq: cmd.seq, command: cmd.command, ...r });
    if (this.rotating) {
      await report({ ok: false, error: { code: 'PKS_CONFLICT', detail: 'a certificate rotation is already running' } });
      return;
    }
    this.rotating = true;
    let stored: ReturnType<typeof storeIdentity> | null = null;
    const old = { cert: this.mqttCert, key: this.mqttKey };
    try {
      if (!this.connected) throw pksError('PKS_UPLINK_DOWN', 'not connected to the broker');
      const fresh = await makeCsr(boxId);
      const requestId = `csr-${randomUUID()}`;
      const answer = this.certWaiters.wait(requestId, ms);
      // the HSM identity key endorses the new key, so the KMS knows the CSR is this box's (issue 9)
      const { endorsement } = await this.d.vault.call<{ endorsement: string }>('box-csr', { csr: fresh.csrPem });
      await publish(this.client!, boxTopic(boxId, 'csr'), JSON.stringify({ requestId, csr: fresh.csrPem, endorsement }));
      const a = await answer;
      if (!a) throw pksError('PKS_UPLINK_DOWN', 'no certificate from the KMS in time');
      if (a.error) {
        const code = isErrorCode(a.error.code) ? a.error.code : 'PKS_CSR_INVALID';
        throw pksError(code, `KMS refused the CSR: ${String(a.error.detail).slice(0, 200)}`);
      }
      const caFile = this.d.cfg.mqtt.clientCaFile ?? this.d.cfg.mqtt.caFile;
      const info = checkIssuedCert(a.cert, { caPem: readFileSync(caFile, 'utf8'), boxId, spki: fresh.spki });
      stored = storeIdentity(this.d.cfg.stateDir, info.serial, fresh.keyPem, a.cert as string);
      this.mqttCert = a.cert as string;
      this.mqttKey = fresh.keyPem;
      if (!(await this.reconnect(ms))) throw pksError('PKS_UPLINK_DOWN', 'the broker did not take the new certificate');
      const previous = this.state.state.identity;
      const committed = stored;
      this.state.update((s) => void (s.identity = committed));
      stored = null;
      if (previous && previous.certFile !== committed.certFile) removeIdentity(previous);
      this.d.log.info('MQTT client certificate rotated', { serial: info.serial, notAfter: info.notAfter });
      // with the replaced certificate: the KMS revokes it at once (issue 16 §3, scripts/kms/revocation.ts)
      await this.d.keystore.call('outbox-put', { kind: 'event', body: { type: 'mqtt-cert-rotated', serial: info.serial, notAfter: info.notAfter, previous: old.cert, source: 'uplink' } }).catch(() => undefined);
      await report({ ok: true, result: { serial: info.serial, notAfter: info.notAfter } });
    } catch (err) {
      const e = asPksError(err);
      if (this.mqttKey !== old.key) {
        this.mqttCert = old.cert;
        this.mqttKey = old.key;
        await this.reconnect(ms);
      }
      if (stored) removeIdentity(stored);
      this.d.log.warn('certificate rotation failed; the old identity stays', { seq: cmd.seq, code: e.code, detail: e.detail });
      await report({ ok: false, error: { code: e.code, detail: e.detail } });
      await this.raise(e.code, `rotate-cert failed: ${e.detail}`);
    } finally {
      this.rotating = false;
      // a rotation may outlast its sync window: the link must not stay open past it
      if (this.schedule.mode === 'windows' && !this.windowEnd) setTimeout(() => void (this.schedule.mode === 'windows' && !this.windowEnd && this.disconnect()), 1000).unref();
    }
  }

  private async result(doc: Record<string, unknown>): Promise<void> {
    const body = { ...doc, at: new Date().toISOString() };
    // never awaited from an inbound handler: the PUBACK arrives on the stream the handler holds
    if (this.client) void publish(this.client, boxTopic(this.d.cfg.boxId, 'cmd-result'), JSON.stringify(body)).catch(() => undefined);
  }

  // ---- alerts and status

  /**
   * Logs, remembers (status), queues for the KMS in the outbox (durable) and publishes now; at
   * most one per code per alertIntervalSeconds, so a flood of junk costs no disk: the ones held
   * back are counted and named in the next.
   */
  async raise(code: string, detail: string, outbox = true): Promise<void> {
    const note = this.alertGate.pass(code);
    if (note === null) {
      this.counters.alertsHeld++;
      return;
    }
    detail += note;
    const at = new Date().toISOString();
    this.d.log.warn('alert', { code, detail });
    this.state.update((s) => {
      s.alerts.push({ code, detail: detail.slice(0, 300), at });
      if (s.alerts.length > 20) s.alerts.splice(0, s.alerts.length - 20);
    });
    if (outbox) await this.d.keystore.call('outbox-put', { kind: 'alert', body: { code, detail: detail.slice(0, 300), source: 'uplink' } }).catch(() => undefined);
    if (this.connected) void publish(this.client!, boxTopic(this.d.cfg.boxId, 'alert'), JSON.stringify({ code, detail, at })).catch(() => undefined);
  }

  private openAlerts(): Array<{ code: string; detail: string; at: string }> {
    const since = Date.now() - 24 * 3600 * 1000;
    return this.state.state.alerts.filter((a) => Date.parse(a.at) > since);
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
      openAlerts: this.openAlerts(),
      health: ok ? (this.openAlerts().length > 0 ? 'degraded' : 'ok') : 'failing',
      checks: { ...this.health, mqtt: this.connected },
      ...(this.d.updates?.last ? { update: this.d.updates.last } : {}),
      ...(this.attestation ? { attestation: this.attestation.last } : {}),
      at: new Date().toISOString(),
    };
  }

  /** update-status for the updater's relay; dropped while the link is down (the status document keeps the last one) */
  async publishUpdateStatus(body: string): Promise<void> {
    if (this.connected) await publish(this.client!, boxTopic(this.d.cfg.boxId, 'update-status'), body);
  }

  async publishStatus(): Promise<void> {
    if (!this.connected) return;
    await publish(this.client!, boxTopic(this.d.cfg.boxId, 'status'), JSON.stringify(await this.statusDoc()), true);
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
    await this.requestResync();
    if (this.attestation?.due) await this.attest('periodic');
    await this.reorders();
    await this.missingChunks();
    const drained = await this.flushOutbox();
    if (drained) this.state.update((s) => void (s.lastSync = new Date().toISOString()));
    await this.publishStatus().catch(() => undefined);
  }

  /** One attestation round; a refusal is raised as an alert (the KMS then sends no stock). */
  private async attest(why: string): Promise<void> {
    const r = await this.attestation!.round(why);
    if (!r.ok && r.error) await this.raise(r.error.code, `attestation refused: ${r.error.detail}`);
  }

  private async reorders(): Promise<void> {
    const stats = await this.d.keystore.call<StatsResponse>('stats', {});
    const retryMs = this.d.cfg.timing.reorderRetrySeconds * 1000;
    let attested = false;
    for (const [pool, p] of Object.entries(stats.pools)) {
      if (!(p.available < p.minimum) || p.reorder <= 0) continue;
      let pending = this.state.state.pending[pool];
      if (pending && Date.now() - Date.parse(pending.at) < retryMs) continue;
      // a fresh quote goes before the re-order (issue 12): the KMS releases stock only to a box attested just now
      if (this.attestation && !attested) {
        attested = true;
        await this.attest('re-order');
      }
      if (!pending) {
        pending = { requestId: `ro-${randomUUID()}`, count: p.reorder, at: new Date().toISOString() };
        // persisted before it is sent: a restart repeats this request, never makes a new one
        this.state.update((s) => {
          s.pending[pool] = pending!;
          s.reorders++;
        });
        this.d.log.info('re-ordering', { pool, available: p.available, minimum: p.minimum, count: p.reorder, requestId: pending.requestId });
      } else {
        this.state.update((s) => void (s.pending[pool]!.at = new Date().toISOString()));
        this.d.log.info('re-order unanswered, asking again (same request)', { pool, requestId: pending.requestId });
      }
      await publish(this.client!, boxTopic(this.d.cfg.boxId, 'reorder'), JSON.stringify({ requestId: pending.requestId, pool, count: pending.count }));
    }
  }

  private async missingChunks(): Promise<void> {
    const quietMs = this.d.cfg.timing.chunkTimeoutSeconds * 1000;
    for (const [batchId, b] of Object.entries(this.state.state.batches)) {
      if (Date.now() - Date.parse(b.lastAt) < quietMs || b.missing.length === 0) continue;
      this.counters.resends++;
      this.d.log.info('asking for missing chunks', { batchId, missing: b.missing.length });
      this.state.update((s) => void (s.batches[batchId]!.lastAt = new Date().toISOString()));
      await publish(this.client!, boxTopic(this.d.cfg.boxId, 'resend'), JSON.stringify({ batchId, chunks: b.missing.slice(0, 1000) }));
    }
  }

  /** Sends the outbox as verification files until it is empty or the KMS stops answering. */
  private async flushOutbox(): Promise<boolean> {
    for (let round = 0; round < 100; round++) {
      if (!this.connected) return false;
      // packed by the keystore from flushed items only and signed by the vault (issue 9)
      const { fileId, payload: text, sig, ids } = await this.d.keystore.call<OutboxFileResponse>('outbox-file', { limit: 5000 });
      if (ids.length === 0) return true;
      this.sentFiles.sent(fileId, ids);
      const ack = this.ackWaiters.wait(fileId, this.d.cfg.timing.ackTimeoutSeconds * 1000);
      try {
        await publish(this.client!, boxTopic(this.d.cfg.boxId, 'verify'), JSON.stringify({ v: 1, payload: text, sig }));
      } catch {
        this.ackWaiters.cancel(fileId);
        return false;
      }
      const a = await ack;
      if (!a) {
        this.d.log.info('verification file not acknowledged yet; kept in the outbox', { fileId, items: ids.length });
        return false;
      }
      await this.applyAck(a);
      if (a.error) return false;
    }
    return false;
  }
}

