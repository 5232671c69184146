// The keystore's LMDB environment: one env, named databases, one writer (the keystore
// process). Writes go through async transactions, which lmdb-js batches into one commit, so
// 64 testers asking at once cost one fsync; a key leaves the box only after `flushed`.
import { open, type Database, type RootDatabase } from 'lmdb';
import { mkdirSync } from 'node:fs';
import type { KeyState } from '../../appliance/contracts/keystore.js';

export interface KeyRecord {
  id: string;
  pool: string;
  batchId: string;
  state: KeyState;
  /** AEAD of the 16-byte key under the batch key (aad: record id): never clear */
  ct: Buffer;
  uid?: string;
  tester?: string;
  station?: string;
  reservedAt?: number;
  updatedAt?: number;
  reason?: string;
  /** SHE counter (C_ID) this package was prepared with (counters.ts); absent: the batch's */
  counter?: number;
  /** monotonic keystore time (mono-clock.ts) the reservation was made or last retried */
  pendingAt?: number;
  /** audit seq of the 'report' entry: compactable once the KMS acknowledged a checkpoint past it */
  reportSeq?: number;
  /** the proof came after the sweep had burned the package (retries.ts) */
  late?: boolean;
  /** reduced to what the audit and the KMS still need (compaction.ts): no ciphertext */
  compacted?: boolean;
}

export interface BatchRecord {
  batchId: string;
  pool: string;
  chunks: number;
  total: number;
  /** batch key wrapped by the vault's storage key */
  batchKey: Buffer;
  epk: string;
  she: { keyId: number; authKeyId: number; counter: number; flags: number; auth: Buffer };
  seen: number[];
  imported: number;
  complete: boolean;
  createdAt: number;
}

export interface PoolRecord {
  pool: string;
  minimum: number;
  reorder: number;
  critical: number;
}

export interface Counters {
  available: number;
  reserved: number;
  injected: number;
  reported: number;
  burned: number;
}

export interface Dbs {
  root: RootDatabase;
  keys: Database<KeyRecord, string>;
  /** [pool, seq] → record id: the AVAILABLE queue of each pool, oldest first */
  avail: Database<string, [string, number]>;
  /** `${pool}|${uid}` → record id: idempotent reservations */
  resv: Database<string, string>;
  /** [tester, reservedAt, id] → null: a tester's history */
  hist: Database<null, [string, number, string]>;
  /** [reservedAt, id] → null: RESERVED keys by age, for the abandonment sweep */
  pending: Database<null, [number, string]>;
  batches: Database<BatchRecord, string>;
  pools: Database<PoolRecord, string>;
  counters: Database<Counters, string>;
  /** seq → { line, h }: the hash-chained audit log */
  audit: Database<{ line: string; h: string }, number>;
  /** seq → signed checkpoint */
  checkpoints: Database<Checkpoint, number>;
  /** id → outbound item waiting for the KMS's acknowledgement */
  outbox: Database<{ kind: string; at: string; body: Record<string, unknown> }, string>;
  /** audit seq → the KMS's signed anchor of the checkpoint at that entry (audit-anchor.ts) */
  anchors: Database<import('./audit-anchor.js').SignedAnchor, number>;
  /** id → outbox item the KMS rejected, with its reason: kept, never silently deleted */
  rejected: Database<import('./outbox.js').RejectedItem, string>;
  testers: Database<import('../../appliance/contracts/keystore.js').TesterRecord, string>;
  meta: Database<unknown, string>;
  /** `${uid}|${keyId}` → the highest SHE counter any package for that ECU slot was prepared with */
  sheCounters: Database<number, string>;
  /** `t:${tester}` / `p:${pool}` → quota state (quota.ts) */
  quotas: Database<import('./quota.js').QuotaState, string>;
  /** [reportSeq, id] → null: REPORTED records not yet compacted (compaction.ts) */
  compactable: Database<null, [number, string]>;
}

export interface Checkpoint {
  seq: number;
  hash: string;
  prevSeq: number;
  prevHash: string;
  at: string;
  /** base64 raw r||s by the vault's audit key over checkpointMessage() */
  sig: string;
}

export function openDbs(dir: string, opts: { readOnly?: boolean; mapSizeMb?: number } = {}): Dbs {
  if (!opts.readOnly) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const root = open({
    path: dir,
    maxDbs: 32,
    mapSize: (opts.mapSizeMb ?? 16 * 1024) * 1024 * 1024,
    compression: false,
    readOnly: opts.readOnly ?? false,
    // keep lmdb-js from committing a batch half-way through a logical change
    eventTurnBatching: true,
    // LMDB's own durable commit: data and meta page synced before the commit resolves. With
    // lmdb-js's overlappingSync the sync runs behind the commit and `flushed` is what says it is
    // done; a VM power cut once lost a confirmation the box had answered after `flushed`
    // (vm-test, 1 in ~700). Group commit keeps the fsyncs shared, so this costs little
    // (a 4 s run of 64 writers through group-commit.ts: 22-31k durable changes/s either way, same p99).
    overlappingSync: false,
  });
  const db = <V, K extends import('lmdb').Key>(name: string, extra: Record<string, unknown> = {}) =>
    root.openDB<V, K>({ name, ...extra });
  return {
    root,
    keys: db('keys'),
    avail: db('avail'),
    resv: db('resv'),
    hist: db('hist'),
    pending: db('pending'),
    batches: db('batches'),
    pools: db('pools'),
    counters: db('counters'),
    audit: db('audit'),
    checkpoints: db('checkpoints'),
    outbox: db('outbox'),
    rejected: db('rejected'),
    anchors: db('anchors'),
    testers: db('testers'),
    meta: db('meta'),
    sheCounters: db('she-counters'),
    quotas: db('quotas'),
    compactable: db('compactable'),
  };
}

export const ZERO: Counters = Object.freeze({ available: 0, reserved: 0, injected: 0, reported: 0, burned: 0 });
