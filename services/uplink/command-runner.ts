// Signed ops commands (appliance/contracts/commands.ts checks signature, box, expiry and seq): each accepted one runs
// and its result is published on cmd-result; a refused one gets a coded refusal and an alert.
// Safe mode: after the state file was lost the last accepted seq is unknown, so every command
// is refused until the KMS, asked on `resync`, answers with a signed last seq.
import { randomUUID, type KeyObject } from 'node:crypto';
import cron from 'node-cron';
import { asPksError, pksError } from '../../appliance/errors.js';
import { commandRef, peekSeq, verifyCommand, type CommandPayload } from '../../appliance/contracts/commands.js';
import type { Schedule } from './config.js';
import type { UplinkContext } from './context.js';
import type { KmsAnswers } from './kms-answers.js';
import type { SyncSchedule } from './sync-schedule.js';
import { isUnlockCommand, runUnlockCommand } from './unlock-commands.js';

export type Report = (doc: Record<string, unknown>) => Promise<void>;

export interface CommandDeps {
  opsKey: KeyObject;
  answers: KmsAnswers;
  schedule: SyncSchedule;
  syncNow: () => Promise<void>;
  /** rotate-cert (cert-rotation.ts): runs off the inbound path, reports through `report` */
  rotateCert: (cmd: CommandPayload, report: Report) => Promise<void>;
  refuse: (what: string, err: unknown) => Promise<void>;
}

export class CommandRunner {
  /** the resync request of this safe-mode episode (answers to any other are ignored) */
  private resyncId: string | null = null;

  constructor(
    private readonly c: UplinkContext,
    private readonly d: CommandDeps,
  ) {}

  get safeMode(): boolean {
    return this.c.state.state.safeMode;
  }

  async onCommand(payload: Buffer): Promise<void> {
    const c = this.c;
    const ref = commandRef(payload);
    let cmd: CommandPayload;
    try {
      if (this.safeMode) throw pksError('PKS_SAFE_MODE', 'the last accepted command seq is unknown; commands are refused until the KMS re-synchronises');
      cmd = verifyCommand(payload, { opsKey: this.d.opsKey, boxId: c.cfg.boxId, lastSeq: c.state.state.lastSeq });
    } catch (err) {
      const e = asPksError(err);
      c.counters.refusedCommands++;
      const seq = peekSeq(payload);
      c.log.warn('command refused', { ref, seq, code: e.code, detail: e.detail });
      await this.result({ ref, ...(seq !== undefined ? { seq } : {}), ok: false, error: { code: e.code, detail: e.detail } });
      await c.raise(e.code, `command refused: ${e.detail}`);
      return;
    }
    // the seq is taken before the command runs: a crash in between loses the command (ops
    // sees no result and sends a new one), it can never make a replay pass
    c.state.update((s) => void (s.lastSeq = cmd.seq));
    c.counters.commands++;
    c.log.info('command accepted', { ref, seq: cmd.seq, command: cmd.command });
    if (cmd.command === 'rotate-cert') {
      // runs off the inbound path: the KMS's answer arrives on the stream this handler holds
      void this.d.rotateCert(cmd, (r) => this.result({ ref, seq: cmd.seq, command: cmd.command, ...r }));
      return;
    }
    try {
      const result = await this.execute(cmd);
      await this.result({ ref, seq: cmd.seq, command: cmd.command, ok: true, result });
    } catch (err) {
      const e = asPksError(err);
      c.log.warn('command failed', { seq: cmd.seq, command: cmd.command, code: e.code, detail: e.detail });
      await this.result({ ref, seq: cmd.seq, command: cmd.command, ok: false, error: { code: e.code, detail: e.detail } });
    }
  }

  private async execute(cmd: CommandPayload): Promise<Record<string, unknown>> {
    const ks = this.c.keystore;
    const a = cmd.args as Record<string, any>;
    if (isUnlockCommand(cmd.command)) return runUnlockCommand(cmd.command, a);
    switch (cmd.command) {
      case 'set-quota':
        return (await ks.call('pool-set', a)) as Record<string, unknown>;
      case 'revoke-tester':
        return (await ks.call('tester-revoke', { cn: a.cn })) as Record<string, unknown>;
      case 'sync-now':
        if (this.d.schedule.windowed) this.d.schedule.openWindow();
        void this.d.syncNow();
        return { syncing: true };
      case 'set-schedule': {
        const s: Schedule = { ...this.d.schedule.current, mode: a.mode };
        if (a.cron !== undefined) s.cron = a.cron;
        if (a.windowSeconds !== undefined) s.windowSeconds = a.windowSeconds;
        if (s.mode === 'windows' && !cron.validate(s.cron)) throw pksError('PKS_COMMAND_INVALID', 'cron expression is invalid');
        // applied after the result is out, so ops hears back even when the link closes now
        this.d.schedule.set(s);
        return { schedule: s };
      }
      case 'release-stock': {
        // issue 16 §2 rebalancing: out of this box for good, then the KMS sends as many to `to`
        const r = (await ks.call('release-stock', { pool: a.pool, count: a.count, to: a.to, ref: `cmd-${cmd.seq}` })) as Record<string, unknown>;
        setTimeout(() => void this.d.syncNow(), 100).unref();
        return r;
      }
      case 'rotate-cert':
        throw pksError('PKS_INTERNAL', 'rotate-cert runs on its own path');
    }
  }

  private async result(doc: Record<string, unknown>): Promise<void> {
    const body = { ...doc, at: new Date().toISOString() };
    // never awaited from an inbound handler: the PUBACK arrives on the stream the handler holds
    if (this.c.link.open) void this.c.link.publish('cmd-result', JSON.stringify(body)).catch(() => undefined);
  }

  // ---- safe mode

  async requestResync(): Promise<void> {
    if (!this.safeMode || !this.c.link.connected) return;
    this.resyncId ??= `rs-${randomUUID()}`;
    this.c.log.info('asking the KMS to re-synchronise', { requestId: this.resyncId });
    await this.c.link.publish('resync', JSON.stringify({ requestId: this.resyncId }));
  }

  onSync(payload: Buffer): Promise<void> {
    let a: { requestId: string; lastSeq: number };
    try {
      a = this.d.answers.sync(payload);
    } catch (err) {
      return this.d.refuse('sync answer', err);
    }
    // only the answer to this episode's request: an old one could roll lastSeq back
    if (!this.safeMode || a.requestId !== this.resyncId) return Promise.resolve();
    this.c.state.update((s) => {
      s.lastSeq = Math.max(s.lastSeq, a.lastSeq);
      s.safeMode = false;
    });
    this.resyncId = null;
    this.c.log.info('re-synchronised by the KMS; commands accepted again', { lastSeq: this.c.state.state.lastSeq });
    return Promise.resolve();
  }
}
