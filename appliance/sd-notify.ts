// sd_notify through libsystemd (the `sd-notify` addon). Without NOTIFY_SOCKET every call is
// a no-op, so the same binary runs under systemd, in tests and by hand.
import { createRequire } from 'node:module';

interface Binding {
  sendState(state: string): number;
}

let binding: Binding | null | undefined;
function load(): Binding | null {
  if (binding !== undefined) return binding;
  if (!process.env.NOTIFY_SOCKET) return (binding = null);
  const require = createRequire(import.meta.url);
  // the package's index wraps the same native module; we only need sendState
  binding = require('sd-notify') as Binding;
  return binding;
}

export function notify(state: Record<string, string | number>): void {
  const b = load();
  if (!b) return;
  const text = Object.entries(state)
    .map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`)
    .join('\n');
  b.sendState(text + '\n');
}

export const ready = (status?: string): void => notify(status ? { READY: 1, STATUS: status } : { READY: 1 });
export const status = (text: string): void => notify({ STATUS: text });
export const stopping = (): void => notify({ STOPPING: 1 });
export const watchdogPing = (): void => notify({ WATCHDOG: 1 });

/** Half the watchdog interval systemd asked for, in ms, or null when there is no watchdog. */
export function watchdogIntervalMs(): number | null {
  const usec = Number(process.env.WATCHDOG_USEC);
  const pid = process.env.WATCHDOG_PID;
  if (!Number.isFinite(usec) || usec <= 0) return null;
  if (pid && Number(pid) !== process.pid) return null;
  return Math.max(1, Math.floor(usec / 2000));
}
