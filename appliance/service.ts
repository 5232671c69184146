// The life of every service: constructors wire, start() works, READY only once the service
// can serve, WATCHDOG every WATCHDOG_USEC/2 from the event loop itself (a hung loop stops the
// pings and systemd restarts us), graceful stop on SIGTERM with a deadline.
import { asPksError } from './errors.js';
import { createLogger, type Logger } from './log.js';
import * as sd from './sd-notify.js';

export interface Running {
  /** One line for systemctl status. */
  status?(): string;
  stop(): Promise<void>;
}

export interface ServiceOptions {
  /** How long a graceful stop may take before we exit anyway. */
  stopTimeoutMs?: number;
}

export async function runService(name: string, start: (log: Logger) => Promise<Running>, opts: ServiceOptions = {}): Promise<void> {
  const log = createLogger(name);
  let running: Running;
  try {
    running = await start(log);
  } catch (err) {
    const e = asPksError(err);
    log.error('start failed', { code: e.code, detail: e.detail, err: e.code === 'PKS_INTERNAL' ? err : undefined });
    sd.status(`start failed: ${e.code}`);
    // a non-zero exit lets systemd's Restart= try again once the cause is gone
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 50).unref();
    return;
  }
  const statusText = (): string => running.status?.() ?? 'serving';
  sd.ready(statusText());
  log.info('ready', { status: statusText() });

  const wd = sd.watchdogIntervalMs();
  const timer = wd
    ? setInterval(() => {
        sd.notify({ WATCHDOG: 1, STATUS: statusText() });
      }, wd)
    : null;

  let stoppingNow = false;
  const stop = async (signal: string): Promise<void> => {
    if (stoppingNow) return;
    stoppingNow = true;
    sd.stopping();
    log.info('stopping', { signal });
    if (timer) clearInterval(timer);
    const deadline = setTimeout(() => {
      log.error('stop deadline passed, exiting');
      process.exit(1);
    }, opts.stopTimeoutMs ?? 10_000);
    deadline.unref();
    try {
      await running.stop();
      process.exit(0);
    } catch (err) {
      log.error('stop failed', { err });
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
