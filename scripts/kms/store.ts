// The reference KMS's state, in one LMDB environment: the OEM key material per pool, which
// range of each pool went to which box (disjoint by construction: a pool's `next` only grows,
// in the same synchronous transaction that records the batch), the boxes and their fleet
// state, and every verified injection. Writes that an acknowledgement or a published batch
// depends on go through transactionSync, which returns only once the commit is on disk.
//
// Dev only: OEM keys sit here in clear (the real KMS keeps them in its HSM); see README.
import { open, type Database, type RootDatabase } from 'lmdb';

export interface SheConfig {
  keyId: number;
  authKeyId: number;
  counter: number;
  flags: number;
}

export interface PoolRecord {
  pool: string;
  she: SheConfig;
  /** hex of the 16-byte auth key the ECUs of this pool hold in slot authKeyId */
  authKey: string;
  /** keys stored so far (indexes 0..count-1) */
  count: number;
  /** first index not yet allocated to any box */
  next: number;
  /** make more keys on demand when a re-order exceeds the stock (demo) */
  generate: boolean;
}

export interface BatchRecord {
  batchId: string;
  boxId: string;
  pool: string;
  requestId: string;
  from: number;
  count: number;
  chunks: number;
  /** records per chunk (the last chunk may hold fewer) */
  per: number;
  createdAt: string;
  /** PKCS#8 DER (base64) of the batch's ephemeral ECDH key, so a resend re-derives the same batch key */
  epk: string;
}

export interface CheckpointRecord {
  seq: number;
  prev: string;
  head: string;
  fileId: string;
  /** the box's audit entry this checkpoint names (its head is that entry's hash) */
  auditSeq?: number;
}

export interface BoxRecord {
  boxId: string;
  /** base64 DER SPKI */
  identity: string;
  transport: string;
  audit: string;
  registeredAt: string;
  lastSeen?: string;
  /** the box's last retained status document */
  status?: Record<string, unknown>;
  alerts: Array<Record<string, unknown>>;
  events: Array<Record<string, unknown>>;
  cmdResults: Array<Record<string, unknown>>;
  counters: { batches: number; keysSent: number; verified: number; burned: number; rejected: number; files: number };
  lastCheckpoint?: { seq: number; head: string };
  /** highest ops command seq relayed to the box (its answer to a box in safe mode, `sync`) */
  lastCmdSeq?: number;
  /** the box updater's last update-status (scripts/kms/updates.ts) */
  update?: Record<string, unknown>;
  /** issue 16 §2: the plant the box stands in (its cluster); stock moves only within one plant */
  plant?: string;
  /** issue 16 §3: decommissioned (zeroized and reported): no stock, no certificate */
  decommissioned?: { at: string; reason: string };
  /** MQTT client certificate serials the KMS knows for this box (issued or reported) */
  certSerials?: string[];
}

export type InjectionState = 'VERIFIED' | 'BURNED' | 'REJECTED' | 'RELEASED';
export interface InjectionRecord {
  recordId: string;
  boxId: string;
  batchId: string;
  pool: string;
  state: InjectionState;
  uid?: string;
  at: string;
  fileId: string;
  itemId: string;
  reason?: string;
  /** the SHE counter the ECU's proof carried (issue 16 §2: the higher one is what the ECU holds) */
  counter?: number;
  /** a proof for this box's key that reached the KMS through another box of its plant */
  relayedBy?: string;
}

/** Certificate revocations (issue 16 §3): the CRL the broker reloads is built from these. */
export interface RevocationRecord {
  serial: string;
  boxId: string;
  at: string;
  reason: string;
}

export interface FileRecord {
  ids: string[];
  rejected: Array<{ id: string; code: string; detail: string }>;
  /** checkpoints of this file the KMS took, to be answered with signed anchors (issue 9) */
  anchors?: Array<{ seq: number; auditSeq: number; head: string; at: string }>;
  /** issue 16 §2: keys this file released, to be answered with fresh stock for their target */
  releases?: Array<{ to: string; pool: string; ref: string; count: number }>;
}

export class KmsStore {
  readonly root: RootDatabase;
  readonly pools: Database<PoolRecord, string>;
  readonly keys: Database<string, [string, number]>;
  readonly batches: Database<BatchRecord, string>;
  readonly requests: Database<string, [string, string]>;
  readonly boxes: Database<BoxRecord, string>;
  readonly injections: Database<InjectionRecord, string>;
  readonly checkpoints: Database<CheckpointRecord, [string, number]>;
  readonly files: Database<FileRecord, [string, string]>;
  /** issue 16 §2: the one key recorded as injected per ECU slot, [pool, uid] → recordId */
  readonly slots: Database<string, [string, string]>;
  readonly revocations: Database<RevocationRecord, string>;

  constructor(dir: string) {
    this.root = open({ path: dir, compression: false, maxDbs: 16, mapSize: 4 * 1024 ** 3 });
    this.pools = this.root.openDB({ name: 'pools' });
    this.keys = this.root.openDB({ name: 'keys' });
    this.batches = this.root.openDB({ name: 'batches' });
    this.requests = this.root.openDB({ name: 'requests' });
    this.boxes = this.root.openDB({ name: 'boxes' });
    this.injections = this.root.openDB({ name: 'injections' });
    this.checkpoints = this.root.openDB({ name: 'checkpoints' });
    this.files = this.root.openDB({ name: 'files' });
    this.slots = this.root.openDB({ name: 'slots' });
    this.revocations = this.root.openDB({ name: 'revocations' });
  }

  keyAt(pool: string, index: number): Buffer | undefined {
    const hex = this.keys.get([pool, index]);
    return hex === undefined ? undefined : Buffer.from(hex, 'hex');
  }

  /** Applies `fn` to a box record inside a synchronous transaction (no-op for unknown boxes). */
  updateBox(boxId: string, fn: (b: BoxRecord) => void): BoxRecord | undefined {
    return this.root.transactionSync(() => {
      const b = this.boxes.get(boxId);
      if (!b) return undefined;
      fn(b);
      this.boxes.putSync(boxId, b);
      return b;
    });
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}

/** Keeps the newest `max` entries of a capped fleet-state list. */
export function pushCapped<T>(list: T[], item: T, max = 100): void {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}
