// When the box is on the broker: always, or only inside cron-scheduled sync windows (node-cron,
// windowSeconds long each). The schedule ops set with set-schedule is persisted in the state
// file and wins over the config's.
import cron, { type ScheduledTask } from 'node-cron';
import type { Schedule, UplinkConfig } from './config.js';
import type { Link } from './link.js';
import type { StateFile } from './state.js';

export class SyncSchedule {
  private task: ScheduledTask | null = null;
  private windowEnd: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly cfg: UplinkConfig,
    private readonly state: StateFile,
    private readonly link: Link,
  ) {}

  get current(): Schedule {
    return this.state.state.schedule ?? { ...this.cfg.schedule };
  }
  get windowed(): boolean {
    return this.current.mode === 'windows';
  }

  /** (Re)starts the current schedule: connect now (always) or at the next window. */
  apply(): void {
    const s = this.current;
    void this.task?.stop();
    this.task = null;
    this.closeWindow();
    if (s.mode === 'always') {
      this.link.connect();
      return;
    }
    this.task = cron.schedule(s.cron, () => this.openWindow(), { name: 'uplink-sync-window', noOverlap: true });
    void this.link.disconnect();
  }

  /** Persists a new schedule; applied a moment later, so a command's result still goes out first. */
  set(s: Schedule): void {
    this.state.update((st) => void (st.schedule = s));
    setTimeout(() => this.apply(), 100).unref();
  }

  /** A sync window: connect (the link syncs on connect), stay reachable for windowSeconds, disconnect. */
  openWindow(): void {
    if (this.stopped) return;
    this.link.connect();
    if (this.windowEnd) clearTimeout(this.windowEnd);
    this.windowEnd = setTimeout(() => {
      this.windowEnd = null;
      if (this.windowed) void this.link.disconnect();
    }, this.current.windowSeconds * 1000);
  }

  /** In windows mode, outside a window: the link goes down soon (after a rotation that outlasted its window). */
  closeSoonOutsideWindow(): void {
    if (this.windowed && !this.windowEnd) setTimeout(() => void (this.windowed && !this.windowEnd && this.link.disconnect()), 1000).unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.closeWindow();
    await this.task?.stop();
  }

  private closeWindow(): void {
    if (this.windowEnd) clearTimeout(this.windowEnd);
    this.windowEnd = null;
  }
}
