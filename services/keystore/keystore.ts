// The keystore: pools of encrypted keys in LMDB and the exactly-once issuance around them.
// Order of a reservation: commit (reservation + audit + counters) → await flushed → ask the
// vault for M1..M3 → answer. A package never leaves before its record is on disk, and a
// retry for the same ECU and slot finds the same key (invariants 1-3 of DESIGN.md).
import { checkGrant } from './grant.js';
import { pksError } from '../../appliance/errors.js';
import { storageError } from './storage-error.js';
import type { Logger } from '../../appliance/log.js';
import { appendAudit, auditHead, lastCheckpoint } from './audit.js';
import { issueEcuCert, type EcuCertSigner } from './ecu-cert-issue.js';
import { storeAnchors, type SignedAnchor } from './audit-anchor.js';
import { listRejected, newFileId, peekFlushed, rejectTx, type RejectedItem, type Rejection } from './outbox.js';
import { packFile } from '../../appliance/verification-file.js';
import type {
  ConfirmResponse,
  EcuCertRequest,
  EcuCertResponse,
  HistoryItem,
  OutboxFileResponse,
  OutboxItem,
  PoolStats,
  ReserveResponse,
  TesterRecord,
} from '../../appliance/contracts/keystore.js';
import type { BatchRecord, Checkpoint, Dbs, KeyRecord, PoolRecord } from './db.js';
import { Importer, type BatchOpener } from './importer.js';
import { GroupCommit } from './group-commit.js';
import { ackTx, burnTx, confirmTx, counters, isRefusal, putOutbox, refuse, reserveTx, type Refusal, type ReserveInput } from './stock.js';
import { MonoClock } from './mono-clock.js';
import { DEFAULT_QUOTAS, type QuotaPolicy } from './quota.js';
import { handoverTx, type HandoverInput } from './handover.js';
import { isLateCandidate, lateProofTx } from './late-proof.js';
import { compactTx } from './compaction.js';
import { checkDistinctTargets } from './pool-slot.js';

/** What the keystore needs from the vault (over IPC in production, in-process in benches). */
export interface VaultPort extends BatchOpener {
  shePrepare(req: SheCall): Promise<{ m1: string; m2: string; m3: string }>;
  sheVerify(req: SheCall & { m4: string; m5: string }): Promise<boolean>;
  /** typed signing verbs (issue 9): the vault builds what it signs */
  signCheckpoint(c: Omit<Checkpoint, 'sig'>): Promise<Buffer>;
  signVerificationFile(payloadText: string): Promise<Buffer>;
  issueEcuCert: EcuCertSigner['issueEcuCert'];
}

export interface SheCall {
  batchId: string;
  pool: string;
  recordId: string;
  batchKey: string;
  record: string;
  auth: string;
  uid: string;
  keyId: number;
  authKeyId: number;
  counter: number;
  flags: number;
}

export interface KeystoreOptions {
  checkpointEvery: number;
  checkpointMs: number;
  reservationTtlMs: number;
  /** sweep cadence (default 60 s) */
  sweepMs?: number;
  now?: () => number;
  /** monotonic process time in ms (tests step it); default performance.now() */
  hrtime?: () => number;
  quotas?: QuotaPolicy;
}

const unwrap = <T>(r: T | Refusal): T => {
  if (isRefusal(r)) throw pksError(r.refused, r.detail);
  return r;
};

export class Keystore {
  readonly importer: Importer;
  /** durable writes of concurrent requests share one commit and one flush (group-commit.ts) */
  readonly group: GroupCommit;
  private readonly dataDir: string;
  private readonly now: () => number;
  readonly mono: MonoClock;
  readonly quotas: QuotaPolicy;
  private cpRunning: Promise<void> | null = null;
  private timers: NodeJS.Timeout[] = [];

  constructor(
    readonly dbs: Dbs,
    private readonly vault: VaultPort,
    private readonly trust: import('../../appliance/batch-format.js').TrustAnchor,
    private readonly boxId: string,
    private readonly opts: KeystoreOptions,
    private readonly log: Logger,
  ) {
    this.now = opts.now ?? Date.now;
    this.mono = new MonoClock(dbs, opts.hrtime);
    this.quotas = opts.quotas ?? DEFAULT_QUOTAS;
    this.dataDir = (dbs.root as unknown as { path: string }).path;
    this.importer = new Importer(dbs, trust, boxId, vault, this.now);
    this.group = new GroupCommit(dbs.root);
  }

  start(): void {
    this.timers.push(setInterval(() => void this.runCheckpoint().catch((e) => this.log.warn('checkpoint failed', { err: e })), this.opts.checkpointMs));
    this.timers.push(setInterval(() => void this.sweep().catch((e) => this.log.warn('sweep failed', { err: e })), this.opts.sweepMs ?? 60_000));
    this.timers.push(setInterval(() => void this.compact().catch((e) => this.log.warn('compaction failed', { err: e })), 60_000));
    for (const t of this.timers) t.unref();
    void this.restartWallClockAges().catch((e) => this.log.warn('pending migration failed', { err: e }));
  }

  /**
   * A store written before the monotonic clock keyed pending reservations by wall-clock time
   * (about 1.7e12 ms): their age starts again now, so none is burned early or kept forever.
   */
  private async restartWallClockAges(): Promise<void> {
    const old = [...this.dbs.pending.getRange({ start: [1e12, ''], limit: 100_000 })].map((e) => e.key);
    if (!old.length) return;
    const mono = this.mono.now();
    await this.commit(() => {
      for (const k of old) {
        const rec = this.dbs.keys.get(k[1]);
        this.dbs.pending.removeSync(k);
        if (rec?.state !== 'RESERVED') continue;
        this.dbs.keys.putSync(rec.id, { ...rec, pendingAt: mono });
        this.dbs.pending.putSync([mono, rec.id], null);
      }
    });
  }

  /** Pools come from config at start and from ops commands; counters are kept, never reset. */
  async setPool(p: PoolRecord): Promise<void> {
    // two pools aimed at the same (OEM, ECU type, slot) are refused (pool-slot.ts)
    checkDistinctTargets([...[...this.dbs.pools.getKeys({})].filter((k) => k !== p.pool), p.pool], 'pool-set');
    await this.commit(() => {
      const old = this.dbs.pools.get(p.pool);
      this.dbs.pools.putSync(p.pool, p);
      if (!old || old.minimum !== p.minimum || old.reorder !== p.reorder || old.critical !== p.critical)
        appendAudit(this.dbs, this.now(), { ev: 'pool-set', pool: p.pool, minimum: p.minimum, reorder: p.reorder, critical: p.critical });
    });
  }

  private sheCall(rec: KeyRecord, uid: string): SheCall {
    const b = this.dbs.batches.get(rec.batchId) as BatchRecord | undefined;
    if (!b) throw pksError('PKS_STORE_FAILURE', `batch of ${rec.id} is missing`);
    return {
      batchId: rec.batchId,
      pool: rec.pool,
      recordId: rec.id,
      batchKey: b.batchKey.toString('base64'),
      record: rec.ct.toString('base64'),
      auth: b.she.auth.toString('base64'),
      uid,
      keyId: b.she.keyId,
      authKeyId: b.she.authKeyId,
      counter: rec.counter ?? b.she.counter,
      flags: b.she.flags,
    };
  }

  /** One transaction, on disk before it resolves (unlock-log.ts writes through it too). */
  async commit<T>(fn: () => T): Promise<T> {
    let out: T;
    try {
      // resolves only once flushed: lmdb-js resolves a commit before it is on disk (overlappingSync)
      out = await this.group.durable(fn);
    } catch (e) {
      throw storageError(e, this.dataDir);
    }
    this.maybeCheckpoint();
    return out;
  }

  /** `newKey`: asked in the transaction before a key leaves the stock (update-verbs.ts's drain). */
  async reserve(r0: ReserveInput, newKey?: () => Refusal | null): Promise<ReserveResponse> {
    const uid = r0.uid.toLowerCase();
    let prepared = null as Promise<{ m1: string; m2: string; m3: string }> | null;
    let result;
    try {
      result = unwrap(
        await this.group.committed(() => {
          const r = reserveTx(this.dbs, this.now(), { ...r0, uid }, { mono: this.mono.now(), quotas: this.quotas, ...(newKey ? { newKey } : {}) });
          // the vault computes M1..M3 while the group commits and flushes: asked in a microtask,
          // which runs once the callback has returned and the commit is under way (an in-process
          // vault would otherwise hold the write transaction open). The package is still returned
          // only once both are done, so it never leaves before its record is on disk.
          if (!isRefusal(r)) {
            const rec = r.rec;
            prepared = Promise.resolve().then(() => this.vault.shePrepare(this.sheCall(rec, uid)));
            // a failed commit leaves this answer unread: handled here, awaited below
            prepared.catch(() => undefined);
          }
          return r;
        }),
      );
    } catch (e) {
      throw storageError(e, this.dataDir);
    }
    const { rec, reused } = result;
    const call = this.sheCall(rec, uid);
    const [m] = await Promise.all([
      prepared ?? Promise.reject(pksError('PKS_INTERNAL', 'reservation without a vault call')),
      this.dbs.root.flushed.then(
        () => undefined,
        (e: unknown) => {
          throw storageError(e, this.dataDir);
        },
      ),
    ]);
    this.maybeCheckpoint();
    return { packageId: rec.id, pool: rec.pool, uid, keyId: call.keyId, authKeyId: call.authKeyId, counter: call.counter, flags: call.flags, ...m, reused };
  }

  async confirm(packageId: string, tester: string, m4: string, m5: string): Promise<ConfirmResponse> {
    const rec = this.dbs.keys.get(packageId);
    if (!rec || rec.tester !== tester || rec.state === 'AVAILABLE') throw pksError('PKS_NOT_FOUND', 'no such package for this tester');
    if (rec.state === 'BURNED' && !isLateCandidate(rec)) throw pksError('PKS_STATE_INVALID', 'package is BURNED');
    const proof = { m4: m4.toLowerCase(), m5: m5.toLowerCase() };
    const verified = await this.vault.sheVerify({ ...this.sheCall(rec, rec.uid!), m4: proof.m4, m5: proof.m5 });
    if (rec.state === 'BURNED') {
      // burned by the sweep, yet the ECU proves it holds the key: record it (late-proof.ts)
      if (!verified) throw pksError('PKS_STATE_INVALID', 'package is BURNED');
      const late = unwrap(await this.commit(() => lateProofTx(this.dbs, this.now(), packageId, tester, proof)));
      this.log.warn('proof for a package burned as abandoned: recorded as injected', { packageId, pool: rec.pool, uid: rec.uid, tester });
      return { packageId, state: late.state, verified: true };
    }
    const next = unwrap(await this.commit(() => confirmTx(this.dbs, this.now(), packageId, tester, verified, proof)));
    if (!verified) this.log.warn('ECU proof mismatch, key burned', { packageId, pool: rec.pool, uid: rec.uid, tester });
    return { packageId, state: next.state, verified };
  }

  async fail(packageId: string, tester: string, reason: string): Promise<{ packageId: string; state: 'BURNED' }> {
    unwrap(await this.commit(() => burnTx(this.dbs, this.now(), packageId, tester, `failed: ${reason}`)));
    return { packageId, state: 'BURNED' };
  }

  /** Moves an open reservation to another tester (a rework station); audited. */
  async handover(h: HandoverInput): Promise<{ packageId: string; tester: string; station: string }> {
    const rec = unwrap(await this.commit(() => handoverTx(this.dbs, this.now(), this.mono.now(), this.quotas, h)));
    return { packageId: rec.id, tester: rec.tester!, station: rec.station! };
  }

  /** Compacts REPORTED records the KMS has acknowledged (compaction.ts); returns how many. */
  async compact(limit = 1000): Promise<number> {
    return this.commit(() => compactTx(this.dbs, limit));
  }

  /**
   * Reservations nobody confirmed or failed within the TTL are burned: never reissued. Their
   * age is on the keystore's monotonic clock (mono-clock.ts): a wall-clock step burns nothing.
   */
  async sweep(): Promise<number> {
    const cutoff = this.mono.now() - this.opts.reservationTtlMs;
    const stale: string[] = [];
    for (const { key } of this.dbs.pending.getRange({ start: [0, ''], end: [cutoff, '\uffff'], limit: 1000 })) stale.push(key[1]);
    if (!stale.length) return 0;
    await this.commit(() => {
      for (const id of stale) burnTx(this.dbs, this.now(), id, null, 'abandoned');
    });
    this.log.warn('abandoned reservations burned', { count: stale.length });
    return stale.length;
  }

  history(tester: string, limit: number): HistoryItem[] {
    const items: HistoryItem[] = [];
    for (const { key } of this.dbs.hist.getRange({ start: [tester, Number.MAX_SAFE_INTEGER, ''], end: [tester, 0, ''], reverse: true, limit })) {
      const rec = this.dbs.keys.get(key[2]);
      if (!rec) continue;
      items.push({
        packageId: rec.id,
        pool: rec.pool,
        uid: rec.uid ?? '',
        state: rec.state,
        station: rec.station ?? '',
        reservedAt: new Date(rec.reservedAt ?? 0).toISOString(),
        updatedAt: new Date(rec.updatedAt ?? 0).toISOString(),
      });
    }
    return items;
  }

  stats(): Record<string, PoolStats> {
    const out: Record<string, PoolStats> = {};
    for (const { key, value: p } of this.dbs.pools.getRange({})) {
      const c = counters(this.dbs, key);
      const issued = c.injected + c.reported + c.burned;
      out[key] = { ...c, minimum: p.minimum, reorder: p.reorder, burnRate: issued ? c.burned / issued : 0 };
    }
    return out;
  }

  /** An ECU certificate: grant and CSR checked, request on disk, then signed (ecu-cert-issue.ts). */
  ecuCert(r: EcuCertRequest): Promise<EcuCertResponse> {
    return issueEcuCert({ dbs: this.dbs, vault: this.vault, now: this.now, commit: (fn) => this.commit(fn) }, r);
  }

  /** The tester's registry record, if its grant holds now (for `pool`, when given); else a coded refusal (grant.ts). */
  grant(cn: string, pool?: string): TesterRecord {
    return checkGrant(this.dbs, cn, this.now(), pool);
  }

  tester(cn: string): TesterRecord {
    const t = this.dbs.testers.get(cn);
    if (!t) throw pksError('PKS_TESTER_UNKNOWN', cn);
    return t;
  }

  async putTester(t: TesterRecord): Promise<void> {
    await this.commit(() => {
      this.dbs.testers.putSync(t.cn, t);
      appendAudit(this.dbs, this.now(), { ev: 'tester-put', cn: t.cn, station: t.station, pools: t.pools, expiresAt: t.expiresAt, revoked: t.revoked, ...(t.certProfiles ? { certProfiles: t.certProfiles } : {}) });
    });
  }

  async revokeTester(cn: string): Promise<void> {
    const r = await this.commit(() => {
      const t = this.dbs.testers.get(cn);
      if (!t) return refuse('PKS_TESTER_UNKNOWN', cn);
      this.dbs.testers.putSync(cn, { ...t, revoked: true });
      appendAudit(this.dbs, this.now(), { ev: 'tester-revoke', cn });
      return t;
    });
    unwrap(r);
  }

  /** Only what is on disk leaves the box (outbox.ts). */
  outboxPeek(limit: number, after?: string): Promise<OutboxItem[]> {
    return peekFlushed(this.dbs, limit, after);
  }

  /** A verification file of flushed outbox items, signed by the vault's audit key. */
  async outboxFile(limit: number): Promise<OutboxFileResponse> {
    const items = await this.outboxPeek(limit);
    if (items.length === 0) return { fileId: '', payload: '', sig: '', ids: [] };
    const fileId = newFileId();
    const { text, ids } = packFile(fileId, this.boxId, items, new Date(this.now()));
    const sig = (await this.vault.signVerificationFile(text)).toString('base64');
    return { fileId, payload: text, sig, ids };
  }

  /** The KMS rejected these items: kept in `rejected`, a critical alert each (outbox.ts). */
  async outboxReject(list: readonly Rejection[]): Promise<{ rejected: number }> {
    return this.commit(() => rejectTx(this.dbs, this.now(), list, (body) => putOutbox(this.dbs, this.now(), 'alert', body)));
  }

  /** The KMS's signed anchors of our checkpoints: checked against the pinned KMS CA and kept. */
  auditAnchor(anchors: readonly SignedAnchor[]): Promise<{ stored: number }> {
    return storeAnchors(this.dbs, anchors, this.trust, this.boxId).catch((e: unknown) => {
      throw storageError(e, this.dataDir);
    });
  }

  outboxRejected(limit: number): RejectedItem[] {
    return listRejected(this.dbs, limit);
  }

  async outboxAck(ids: readonly string[]): Promise<{ acked: number; reported: number }> {
    return this.commit(() => ackTx(this.dbs, this.now(), ids));
  }

  async outboxPut(kind: 'alert' | 'event', body: Record<string, unknown>): Promise<string> {
    return this.commit(() => putOutbox(this.dbs, this.now(), kind, body));
  }

  private maybeCheckpoint(): void {
    const head = auditHead(this.dbs);
    const last = lastCheckpoint(this.dbs);
    if (head.seq - (last?.seq ?? 0) >= this.opts.checkpointEvery) void this.runCheckpoint().catch((e) => this.log.warn('checkpoint failed', { err: e }));
  }

  /** Signs the current audit head (a checkpoint already running may predate it: then one more). */
  async checkpoint(): Promise<void> {
    if (this.cpRunning) await this.cpRunning.catch(() => {});
    return this.runCheckpoint();
  }

  /** Signs the current audit head with the vault's audit key; one at a time. */
  private runCheckpoint(): Promise<void> {
    if (this.cpRunning) return this.cpRunning;
    this.cpRunning = (async () => {
      // one tick first: a run that ends without awaiting must not clear cpRunning before it is set
      await Promise.resolve();
      try {
        const head = auditHead(this.dbs);
        const last = lastCheckpoint(this.dbs);
        if (head.seq === 0 || head.seq === last?.seq) return;
        const body: Omit<Checkpoint, 'sig'> = { seq: head.seq, hash: head.hash, prevSeq: last?.seq ?? 0, prevHash: last?.hash ?? '0'.repeat(64), at: new Date(this.now()).toISOString() };
        const sig = (await this.vault.signCheckpoint(body)).toString('base64');
        const cp: Checkpoint = { ...body, sig };
        await this.dbs.root.transaction(() => {
          this.dbs.checkpoints.putSync(cp.seq, cp);
          // the KMS numbers checkpoints 1, 2, 3...: each must extend the one before (prev = last head)
          const n = ((this.dbs.meta.get('checkpoint-count') as number | undefined) ?? 0) + 1;
          this.dbs.meta.putSync('checkpoint-count', n);
          putOutbox(this.dbs, this.now(), 'checkpoint', { seq: n, prev: cp.prevHash, head: cp.hash, auditSeq: cp.seq, prevAuditSeq: cp.prevSeq, at: cp.at, sig: cp.sig });
        });
        await this.dbs.root.flushed;
      } finally {
        this.cpRunning = null;
      }
    })();
    return this.cpRunning;
  }

  private stopping: Promise<void> | null = null;

  /** Idempotent: zeroize (zeroize-verbs.ts) closes the store before the service stops. */
  stop(): Promise<void> {
    return (this.stopping ??= this.close());
  }

  private async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    await this.cpRunning?.catch(() => {});
    await this.dbs.root.flushed;
    await this.dbs.root.close();
  }
}

