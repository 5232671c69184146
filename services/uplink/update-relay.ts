// The uplink's part in updates (services/updater): it holds the only MQTT link, so it relays
// manifests and bundle chunks from the KMS to the updater (/run/pks/updater/uplink.sock) and the
// updater's progress and results back (update-status), and keeps the last of them for the
// retained status document that pks-fleet reads. It checks nothing itself: the updater verifies
// every manifest against the pinned KMS CA, and RAUC every bundle against the maintenance keyring.
import type { IpcClient } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import { asPksError } from '../../appliance/errors.js';

export class UpdateRelay {
  /** the last progress or result event, for the status document */
  last: Record<string, unknown> | null = null;

  constructor(
    private readonly updater: IpcClient,
    private readonly publishStatus: (body: string) => Promise<void>,
    private readonly log: Logger,
  ) {}

  async onMessage(name: 'update' | 'update-chunk', payload: Buffer): Promise<void> {
    try {
      if (name === 'update') {
        const r = await this.updater.call<Record<string, unknown>>('manifest', { manifest: payload.toString('utf8') }, 10_000);
        this.report({ type: 'update-progress', phase: r.phase, id: r.id, accepted: true });
      } else {
        const c = JSON.parse(payload.toString('utf8')) as { id?: unknown; i?: unknown; data?: unknown };
        await this.updater.call('chunk', { id: c.id, i: c.i, data: c.data }, 30_000);
      }
    } catch (err) {
      const e = asPksError(err);
      this.log.warn('update message refused', { topic: name, code: e.code, detail: e.detail });
      this.report({ type: 'update-result', ok: false, code: e.code, detail: e.detail });
    }
  }

  report(event: Record<string, unknown>): void {
    const body: Record<string, unknown> = { ...event, at: new Date().toISOString() };
    if (body.type === 'update-result' || body.type === 'update-progress') this.last = body;
    void this.publishStatus(JSON.stringify(body)).catch(() => undefined);
  }
}
