// The uplink's alerts: logged, remembered for the status document (the last 20, open for 24 h),
// queued for the KMS in the outbox (durable) and published now. At most one per code per
// alertIntervalSeconds, so a flood of junk costs no disk: the ones held back are counted and
// named in the next.
import type { IpcClient } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import { AlertGate } from './kms-answers.js';
import type { Link } from './link.js';
import type { StateFile } from './state.js';

export type OpenAlert = { code: string; detail: string; at: string };

export class Alerts {
  private readonly gate: AlertGate;

  constructor(
    intervalSeconds: number,
    private readonly state: StateFile,
    private readonly keystore: IpcClient,
    private readonly link: Link,
    private readonly log: Logger,
    private readonly onHeld: () => void,
  ) {
    this.gate = new AlertGate(intervalSeconds * 1000);
  }

  async raise(code: string, detail: string, outbox = true): Promise<void> {
    const note = this.gate.pass(code);
    if (note === null) {
      this.onHeld();
      return;
    }
    detail += note;
    const at = new Date().toISOString();
    this.log.warn('alert', { code, detail });
    this.state.update((s) => {
      s.alerts.push({ code, detail: detail.slice(0, 300), at });
      if (s.alerts.length > 20) s.alerts.splice(0, s.alerts.length - 20);
    });
    if (outbox) await this.keystore.call('outbox-put', { kind: 'alert', body: { code, detail: detail.slice(0, 300), source: 'uplink' } }).catch(() => undefined);
    if (this.link.connected) void this.link.publish('alert', JSON.stringify({ code, detail, at })).catch(() => undefined);
  }

  open(): OpenAlert[] {
    const since = Date.now() - 24 * 3600 * 1000;
    return this.state.state.alerts.filter((a) => Date.parse(a.at) > since);
  }
}
