// Updates from central ops: a signed manifest arrives (uplink relay), the bundle is fetched
// (resumable, fetch.ts) and checked against the manifest, then installed through the same safe
// switch as a bundle from the console: in the maintenance window, or at once when the manifest
// (or a repeat of it) says install: "now". Progress and the result go back to the KMS.
import { X509Certificate } from 'node:crypto';
import path from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import { asPksError, pksError } from '../../appliance/errors.js';
import type { Logger } from '../../appliance/log.js';
import { fetchUrl, putChunk } from './fetch.js';
import { verifyManifest } from './manifest.js';
import type { ManifestPayload } from '../../appliance/contracts/update.js';
import type { Updater } from './updater.js';

export interface RemoteOptions {
  boxId: string;
  compatible: string;
  kmsCaPem: string;
  maxBytes: number;
  maintenanceCron: string;
  maintenanceWindowSeconds: number;
  log: Logger;
  report(event: Record<string, unknown>): void;
}

export class RemoteUpdates {
  private readonly ca: X509Certificate;
  private fetching: Promise<void> | null = null;
  private task: ScheduledTask | null = null;
  private windowUntil = 0;

  constructor(private readonly u: Updater, private readonly o: RemoteOptions) {
    try {
      this.ca = new X509Certificate(o.kmsCaPem);
    } catch {
      throw pksError('PKS_CONFIG_INVALID', 'manifests.kmsCaFile is not a PEM certificate');
    }
  }

  start(): void {
    if (!cron.validate(this.o.maintenanceCron)) throw pksError('PKS_CONFIG_INVALID', 'manifests.maintenanceCron is not a cron expression');
    this.task = cron.schedule(this.o.maintenanceCron, () => {
      this.windowUntil = Date.now() + this.o.maintenanceWindowSeconds * 1000;
      void this.maybeInstall();
    });
    // a download a power cut interrupted goes on where it stopped
    if (this.u.state.state.download && this.u.state.state.phase === 'downloading') void this.fetch();
  }

  async stop(): Promise<void> {
    await this.task?.stop();
    await this.fetching?.catch(() => undefined);
  }

  private file(m: ManifestPayload): string {
    return path.join(this.u.stateDir, 'bundles', `manifest-${m.id}.raucb`);
  }

  /** A manifest from the uplink. Refusals are coded and change nothing. */
  async onManifest(raw: string): Promise<{ accepted: boolean; id: string; phase: string }> {
    const m = verifyManifest(raw, { kmsCa: this.ca, boxId: this.o.boxId, compatible: this.o.compatible, maxBytes: this.o.maxBytes });
    const cur = this.u.state.state.download;
    if (cur && cur.manifest.id === m.id) {
      // a repeat: the command to install now, or just a duplicate delivery
      if (m.install === 'now' && !cur.installNow) this.u.state.update((s) => void (s.download!.installNow = true));
      void this.maybeInstall();
      return { accepted: true, id: m.id, phase: this.u.state.state.phase };
    }
    if (this.u.busy && this.u.state.state.phase !== 'downloaded' && this.u.state.state.phase !== 'downloading') throw pksError('PKS_UPDATE_BUSY', `phase ${this.u.state.state.phase}`);
    this.u.state.update((s) => {
      s.download = { manifest: m, file: this.file(m), installNow: m.install === 'now' };
      s.phase = 'downloading';
    });
    this.o.log.info('update announced', { id: m.id, version: m.version, size: m.size, via: m.url ? 'url' : 'chunks' });
    if (m.url) void this.fetch();
    return { accepted: true, id: m.id, phase: 'downloading' };
  }

  /** A chunk (chunk mode): {id, i, data base64}. */
  async onChunk(b: { id: string; i: number; data: string }): Promise<{ complete: boolean; missing: number[] }> {
    const d = this.u.state.state.download;
    if (!d || d.manifest.id !== b.id || !d.manifest.chunks) throw pksError('PKS_UPDATE_MANIFEST', 'no chunked download with that id');
    const r = await putChunk({ file: d.file, size: d.manifest.size, sha256: d.manifest.sha256, chunkSize: d.manifest.chunks.size, count: d.manifest.chunks.count }, b.i, Buffer.from(b.data, 'base64'));
    this.o.report({ type: 'update-progress', phase: 'downloading', id: b.id, missing: r.missing.slice(0, 100), complete: r.complete });
    if (r.complete) this.downloaded();
    return r;
  }

  private fetch(): Promise<void> {
    if (this.fetching) return this.fetching;
    const d = this.u.state.state.download!;
    let lastReport = 0;
    this.fetching = (async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          await fetchUrl(d.manifest.url!, { file: d.file, size: d.manifest.size, sha256: d.manifest.sha256 }, (have, total) => {
            if (Date.now() - lastReport < 2000) return;
            lastReport = Date.now();
            this.o.report({ type: 'update-progress', phase: 'downloading', id: d.manifest.id, percent: Math.floor((100 * have) / total) });
          });
          this.downloaded();
          return;
        } catch (err) {
          const e = asPksError(err);
          if (!e.retry || attempt >= 5) {
            this.u.state.update((s) => {
              s.download = null;
              s.phase = 'idle';
              s.last = { ok: false, version: d.manifest.version, code: e.code, detail: e.detail, at: new Date().toISOString(), slot: this.u.status().booted.slot };
            });
            this.o.report({ type: 'update-result', ok: false, id: d.manifest.id, version: d.manifest.version, code: e.code, detail: e.detail });
            return;
          }
          await new Promise((r) => setTimeout(r, Math.min(60_000, 1000 * 2 ** attempt)));
        }
      }
    })().finally(() => (this.fetching = null));
    return this.fetching;
  }

  private downloaded(): void {
    this.u.state.update((s) => void (s.phase = 'downloaded'));
    this.o.report({ type: 'update-progress', phase: 'downloaded', id: this.u.state.state.download?.manifest.id, percent: 100 });
    void this.maybeInstall();
  }

  /** Installs a downloaded bundle when told to, or inside the maintenance window. */
  async maybeInstall(): Promise<void> {
    const d = this.u.state.state.download;
    if (!d || this.u.state.state.phase !== 'downloaded') return;
    if (!d.installNow && Date.now() > this.windowUntil) return;
    this.u.state.update((s) => {
      s.phase = 'idle';
      s.download = null;
    });
    try {
      await this.u.install(d.file, 'manifest', d.manifest.id);
    } catch (err) {
      const e = asPksError(err);
      this.o.report({ type: 'update-result', ok: false, id: d.manifest.id, version: d.manifest.version, code: e.code, detail: e.detail });
      this.u.state.update((s) => void (s.last = { ok: false, version: d.manifest.version, code: e.code, detail: e.detail, at: new Date().toISOString(), slot: this.u.status().booted.slot }));
    }
  }
}
