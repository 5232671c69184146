// What the uplink's parts (link, schedule, stock feed, outbox sync, commands, certificate
// rotation, alerts) share: the config, the IPC clients, the state file, the one link, the
// counters and the one way to raise an alert. uplink.ts builds it once and wires the parts.
import type { IpcClient } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import type { UplinkConfig } from './config.js';
import type { Link } from './link.js';
import type { StateFile } from './state.js';

/** counts for tests and status: what happened since start */
export function newCounters() {
  return { chunks: 0, duplicates: 0, refusedChunks: 0, filesAcked: 0, itemsAcked: 0, commands: 0, refusedCommands: 0, resends: 0, refusedMessages: 0, alertsHeld: 0 };
}
export type UplinkCounters = ReturnType<typeof newCounters>;

/** Logs, remembers and reports an alert (alerts.ts); `outbox: false` when it must not cost a durable write. */
export type Raise = (code: string, detail: string, outbox?: boolean) => Promise<void>;

export interface UplinkContext {
  readonly cfg: UplinkConfig;
  readonly keystore: IpcClient;
  readonly vault: IpcClient;
  readonly log: Logger;
  readonly state: StateFile;
  readonly link: Link;
  readonly counters: UplinkCounters;
  readonly raise: Raise;
}
