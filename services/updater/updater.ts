// The safe switch (issue 13 §4): check the bundle, drain, install into the other slot, reboot;
// on the new slot health-check, then mark good and raise the version floor; on any failure the
// old slot stays (or comes back) and the failure is reported with its code. Every step is
// persisted before it starts (state.ts), and recover() on each service start turns whatever a
// power cut left into a good slot and a clear state:
//   phase at start   booted          what it means                        what recover() does
//   installing       old             cut during rauc install              other slot marked bad, PKS_UPDATE_INTERRUPTED
//   installing       target          cut after RAUC made it primary       as below: health check
//   rebooting        target          the new slot came up                 health check -> mark good + floor, or mark bad + reboot back
//   rebooting        old, target bad the new slot used up its boot tries  PKS_UPDATE_HEALTH_FAILED (fell back)
//   rebooting        old, target ok  cut (or restart) before the reboot   reboot again (the new slot is primary)
//   checking         target          cut during the health check          check again (one boot try less)
//   checking         old             health failed, rebooted back         PKS_UPDATE_HEALTH_FAILED
//   draining         old             cut while draining                   nothing was written: idle, PKS_UPDATE_INTERRUPTED
// The vault's gate (issue 12): before draining, the bundle's signed measurement manifest goes to
// the vault (`gate-authorise`), which checks it itself and writes a pending record for the new
// slot next to the running one; a refusal is PKS_UPDATE_MEASUREMENT and nothing changes. Both
// records open the gate until the update ends: then (mark-good, or any failure/fallback, or an
// idle start) `gate-settle` keeps the record this boot matched and drops the other, so after a
// power cut at any point exactly the slot that boots opens. The health check includes the gate.
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createHash, randomUUID } from 'node:crypto';
import path from 'node:path';
import { asPksError, pksError, type PksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import { allowMigrations } from '../../appliance/data-format.js';
import type { IpcClient } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import { compareVersions, type UpdatePhase, type UpdateResult, type UpdateStatus } from '../../appliance/contracts/update.js';
import { MEASUREMENT_MANIFEST_FILE, parseMeasurementManifest } from '../../appliance/contracts/measurement.js';
import { bundleFile, inspectBundle, type RaucEnv } from './bundle.js';
import { raiseFloor, readFloor } from './floor.js';
import { waitHealthy, type HealthConfig, type UpdateHealth } from './health.js';
import { raucInstall, raucMark, raucStatus } from './rauc.js';
import { UpdaterStateFile, type Target } from './state.js';

export interface UpdaterDeps {
  stateDir: string;
  rauc: RaucEnv & { reportDir?: string };
  compatible: string;
  tcti?: string;
  keystore: IpcClient | null;
  /** the vault's updater socket: gate-authorise, gate-settle, status (null: no gate on this box) */
  vault?: IpcClient | null;
  health: HealthConfig;
  drain: { retryAfterSeconds: number; timeoutSeconds: number };
  /** asks the machine to reboot (box: via pks-update-reboot.path; tests: a recorder) */
  reboot(): Promise<void>;
  /** the version of the running system when RAUC has no record of the booted slot */
  factoryVersion: string;
  log: Logger;
  /** progress and results for the KMS (uplink relay); never awaited on the critical path */
  report?(event: Record<string, unknown>): void;
}

export class Updater {
  readonly state: UpdaterStateFile;
  private progress = { percent: 0, message: '' };
  private running = false;
  private booted = { slot: '?', version: '?' };
  private floor: number | null = null;

  get stateDir(): string {
    return this.d.stateDir;
  }

  constructor(private readonly d: UpdaterDeps) {
    this.state = new UpdaterStateFile(d.stateDir);
    mkdirSync(path.join(d.stateDir, 'bundles'), { recursive: true, mode: 0o700 });
  }

  status(): UpdateStatus {
    const s = this.state.state;
    const t = s.target ?? s.staged;
    return {
      phase: s.phase,
      progress: this.progress.percent,
      message: this.progress.message,
      booted: { ...this.booted },
      floor: this.floor,
      ...(t ? { target: { version: t.version, svn: t.svn, slot: t.slot, source: t.source } } : {}),
      ...(s.last ? { last: s.last } : {}),
      at: new Date().toISOString(),
    };
  }

  get busy(): boolean {
    return this.running || this.state.state.phase !== 'idle';
  }

  private setProgress(phase: UpdatePhase, percent: number, message: string): void {
    this.progress = { percent, message };
    this.d.report?.({ type: 'update-progress', phase, percent, message, version: this.state.state.target?.version });
  }

  private async refreshBooted(): Promise<{ slot: string; version: string; primary: string | null; slots: Awaited<ReturnType<typeof raucStatus>>['slots'] }> {
    const st = await raucStatus(this.d.rauc);
    const mine = st.slots.find((s) => s.bootname === st.booted || s.name === st.booted);
    const slot = mine?.bootname ?? st.booted;
    this.booted = { slot, version: mine?.version ?? this.d.factoryVersion };
    this.floor = await readFloor(this.d.tcti).catch(() => null);
    return { ...this.booted, primary: st.primary, slots: st.slots };
  }

  /** Keeps the gate record this boot matched, drops the other (vault-gate.ts); never fails the caller. */
  private async settleGate(): Promise<void> {
    const v = this.d.vault;
    if (!v) return;
    try {
      const r = await v.call<{ kept: string }>('gate-settle', {}, 30_000);
      this.d.log.info('gate settled', { kept: r.kept });
    } catch (e) {
      // closed gate or no vault yet: both records stay, the next start settles
      this.d.log.warn('gate not settled', { code: asPksError(e).code });
    }
  }

  /** Gets the bundle's measurement authorised by the vault before anything is written. */
  private async authorise(copy: string, info: { version: string; compatible: string }): Promise<void> {
    const v = this.d.vault;
    if (!v) return;
    const text = await bundleFile(copy, MEASUREMENT_MANIFEST_FILE);
    if (text === null) throw pksError('PKS_UPDATE_MEASUREMENT', `bundle carries no ${MEASUREMENT_MANIFEST_FILE}`);
    const m = parseMeasurementManifest(parseJsonOr('PKS_UPDATE_MEASUREMENT', 'measurement manifest', text));
    if (m.release !== info.version || m.compatible !== info.compatible)
      throw pksError('PKS_UPDATE_MEASUREMENT', `measurement manifest is for ${m.compatible} ${m.release}, the bundle is ${info.compatible.slice(0, 64)} ${info.version}`);
    try {
      await v.call('gate-authorise', { manifest: text.trim() }, 30_000);
    } catch (err) {
      const e = asPksError(err);
      throw pksError('PKS_UPDATE_MEASUREMENT', `the vault refused the measurement: ${e.code}${e.detail ? ` ${e.detail}` : ''}`.slice(0, 300));
    }
  }

  private async end(r: Omit<UpdateResult, 'at' | 'slot'>): Promise<UpdateResult> {
    await this.settleGate();
    return this.finish(r);
  }

  private finish(r: Omit<UpdateResult, 'at' | 'slot'>): UpdateResult {
    const result: UpdateResult = { ...r, at: new Date().toISOString(), slot: this.booted.slot };
    this.state.update((s) => {
      s.phase = 'idle';
      s.last = result;
      s.target = null;
    });
    this.progress = { percent: 100, message: r.ok ? 'done' : `failed: ${r.code}` };
    (r.ok ? this.d.log.info : this.d.log.warn).call(this.d.log, 'update finished', { ...result });
    this.d.report?.({ type: 'update-result', ...result });
    return result;
  }

  /**
   * Checks a bundle (signature + CRL, compatible, version and floor) on our own copy of it and
   * returns what it is; nothing changes on a refusal.
   */
  async check(file: string): Promise<{ copy: string; info: { version: string; svn: number; compatible: string } }> {
    const id = createHash('sha256').update(`${file}|${randomUUID()}`).digest('hex').slice(0, 16);
    const copy = path.join(this.d.stateDir, 'bundles', `${id}.raucb`);
    try {
      copyFileSync(file, copy);
    } catch (e) {
      throw pksError('PKS_NOT_FOUND', `bundle cannot be read: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    try {
      const info = await inspectBundle(copy, this.d.rauc);
      if (info.compatible !== this.d.compatible) throw pksError('PKS_UPDATE_INCOMPATIBLE', `bundle is for '${info.compatible.slice(0, 64)}'`);
      await this.refreshBooted();
      const floor = await readFloor(this.d.tcti);
      if (info.svn < floor) throw pksError('PKS_UPDATE_DOWNGRADE', `svn ${info.svn} of ${info.version} is below the version floor ${floor}`);
      if (compareVersions(info.version, this.booted.version) <= 0) throw pksError('PKS_UPDATE_DOWNGRADE', `${info.version} is not newer than the running ${this.booted.version}`);
      return { copy, info };
    } catch (e) {
      rmSync(copy, { force: true });
      throw e;
    }
  }

  /** Runs a whole update from a bundle file. Resolves once the reboot is asked (or on refusal). */
  async install(file: string, source: 'file' | 'manifest' = 'file', manifestId?: string): Promise<{ version: string; slot: string }> {
    if (this.busy) throw pksError('PKS_UPDATE_BUSY', `phase ${this.state.state.phase}`);
    this.running = true;
    try {
      this.setProgress('idle', 0, 'checking bundle');
      const { copy, info } = await this.check(file);
      try {
        await this.authorise(copy, info);
      } catch (e) {
        rmSync(copy, { force: true });
        throw e;
      }
      const from = this.booted.slot;
      const target: Target = {
        version: info.version,
        svn: info.svn,
        slot: from === 'A' ? 'B' : 'A',
        from,
        fromVersion: this.booted.version,
        file: copy,
        source,
        startedAt: new Date().toISOString(),
        ...(manifestId ? { manifestId } : {}),
      };
      this.state.update((s) => {
        s.phase = 'draining';
        s.target = target;
        s.staged = null;
      });
      this.switching = this.runSwitch();
      return { version: info.version, slot: target.slot };
    } catch (e) {
      this.running = false;
      throw e;
    }
  }

  /** The switch started by install(), for callers that wait for it (tests, the manifest path). */
  switching: Promise<void> = Promise.resolve();

  /** Drain, install, reboot: the part that runs after the caller got its answer. */
  async runSwitch(): Promise<void> {
    const t = this.state.state.target!;
    try {
      this.setProgress('draining', 0, 'draining: no new reservations');
      const mark = await this.drain();
      this.state.update((s) => {
        s.phase = 'installing';
        s.target!.dataMark = mark;
      });
      this.setProgress('installing', 0, `installing ${t.version} into slot ${t.slot}`);
      const started = Date.now();
      await raucInstall(t.file, this.d.rauc, (p) => this.setProgress('installing', p.percent, p.message));
      this.d.log.info('installed', { version: t.version, slot: t.slot, ms: Date.now() - started });
      this.state.update((s) => void (s.phase = 'rebooting'));
      this.setProgress('rebooting', 100, `installed ${t.version} into slot ${t.slot}; rebooting`);
      rmSync(t.file, { force: true });
      await this.d.reboot();
    } catch (err) {
      const e = asPksError(err);
      await this.undrain();
      rmSync(t.file, { force: true });
      await this.end({ ok: false, version: t.version, code: e.code, detail: e.detail });
    } finally {
      this.running = false;
    }
  }

  /** Stops new reservations and waits until the open ones are confirmed, failed or timed out. */
  private async drain(): Promise<{ headSeq: number; headHash: string } | null> {
    const ks = this.d.keystore;
    if (!ks) return null;
    const end = Date.now() + this.d.drain.timeoutSeconds * 1000;
    // only reservations young enough to be in a tester's cycle are waited for: one older than the
    // whole drain window belongs to a tester that is not coming back within it
    const activeSeconds = Math.max(1, Math.round(this.d.drain.timeoutSeconds));
    for (;;) {
      const r = await ks.call<{ open: number; stale?: number }>('drain', { on: true, retryAfterSeconds: this.d.drain.retryAfterSeconds, activeSeconds });
      if (r.open === 0 || Date.now() >= end) {
        if (r.open > 0) this.d.log.warn('drain timed out with open reservations; they stay RESERVED in the data and time out there', { open: r.open });
        if (r.stale) this.d.log.info('drained past stale reservations; they stay RESERVED in the data and time out there', { stale: r.stale, olderThanSeconds: activeSeconds });
        break;
      }
      this.setProgress('draining', 0, `draining: ${r.open} open reservation(s)`);
      await new Promise((res) => setTimeout(res, 500));
    }
    const h = await ks.call<UpdateHealth>('update-health', {}, 60_000);
    return { headSeq: h.headSeq, headHash: h.headHash };
  }

  private async undrain(): Promise<void> {
    await this.d.keystore?.call('drain', { on: false, retryAfterSeconds: this.d.drain.retryAfterSeconds }).catch((e: PksError) => this.d.log.warn('undrain failed', { code: e.code }));
  }

  /** After every start: settle what a reboot or a power cut left (table at the top). */
  async recover(): Promise<void> {
    const st = await this.refreshBooted();
    const s = this.state.state;
    const t = s.target;
    if (s.phase === 'idle' || s.phase === 'downloading' || s.phase === 'downloaded' || !t) {
      if (s.phase !== 'idle' && s.phase !== 'downloading' && s.phase !== 'downloaded') this.state.update((x) => void (x.phase = 'idle'));
      // no update in flight: a pending gate record (cut after gate-authorise) is dropped
      await this.settleGate();
      return;
    }
    const targetSlot = st.slots.find((x) => x.bootname === t.slot);
    if (s.phase === 'draining') {
      await this.undrain();
      await this.end({ ok: false, version: t.version, code: 'PKS_UPDATE_INTERRUPTED', detail: 'interrupted while draining; nothing was written' });
      return;
    }
    if (s.phase === 'installing' && st.slot !== t.slot) {
      // RAUC marks the target bad before writing it; make sure a half-written slot never boots
      if (st.slot !== t.slot) await raucMark('mark-bad', 'other', this.d.rauc).catch(() => undefined);
      await this.undrain();
      await this.end({ ok: false, version: t.version, code: 'PKS_UPDATE_INTERRUPTED', detail: `interrupted during install; slot ${st.slot} stays booted, slot ${t.slot} marked bad` });
      return;
    }
    if (st.slot === t.slot) {
      // the new slot booted: health check, then mark good, then the floor
      this.state.update((x) => void (x.phase = 'checking'));
      this.setProgress('checking', 0, `health check of ${t.version} on slot ${t.slot}`);
      try {
        await waitHealthy(this.d.health, this.d.keystore, t.dataMark, this.d.vault ?? null);
      } catch (err) {
        const e = asPksError(err);
        this.d.log.error('health check failed; falling back', { code: e.code, detail: e.detail });
        // recorded before the reboot: the old slot reports it after it comes back
        this.state.update((x) => {
          x.last = { ok: false, version: t.version, code: e.code, detail: e.detail, at: new Date().toISOString(), slot: t.from };
        });
        await raucMark('mark-bad', 'booted', this.d.rauc);
        await this.d.reboot();
        return;
      }
      await raucMark('mark-good', 'booted', this.d.rauc);
      this.floor = await raiseFloor(t.svn, this.d.tcti);
      // only now may services move the data partition forward (appliance/data-format.ts)
      allowMigrations(this.d.stateDir, t.version);
      this.booted = { slot: t.slot, version: t.version };
      await this.end({ ok: true, version: t.version });
      return;
    }
    // still (or again) on the old slot
    if (s.phase === 'checking' || targetSlot?.bootStatus === 'bad') {
      await this.undrain();
      const prior = s.last && s.last.version === t.version && !s.last.ok ? s.last : null;
      await this.end({
        ok: false,
        version: t.version,
        code: 'PKS_UPDATE_HEALTH_FAILED',
        detail: prior?.detail ?? `slot ${t.slot} did not come up healthy; fell back to slot ${st.slot}`,
      });
      return;
    }
    if (s.phase === 'rebooting' && st.primary === t.slot) {
      this.d.log.info('reboot into the new slot is still pending; asking again', { slot: t.slot });
      await this.d.reboot();
      return;
    }
    await this.undrain();
    await this.end({ ok: false, version: t.version, code: 'PKS_UPDATE_INTERRUPTED', detail: `slot ${t.slot} is not primary; staying on ${st.slot}` });
  }

  readStateFile(): string {
    return readFileSync(this.state.file, 'utf8');
  }
}
