// Group commit of the keystore's durable writes. Under load many testers ask at once; each
// change is a small transaction, and what it costs is the commit and the fsync after it.
// Changes that arrive while a group is being committed wait for the next group; each group is
// ONE LMDB write transaction, and the groups that wait on the disk share one flush. A change
// is not a child transaction of its own: in a store of 400k keys that cost 5x in throughput
// (LMDB copies the parent's page lists for each child); instead every change checks before
// it writes and returns a refusal rather than throwing (stock.ts), as lmdb-js's own batching
// of async transactions already required. One that throws anyway fails only its caller.
// Alone, a change goes out at once: the queue only forms while a commit is under way, so one
// tester waits no longer than before.
import type { RootDatabase } from 'lmdb';

interface Entry {
  fn: () => unknown;
  resolve(v: unknown): void;
  reject(e: unknown): void;
  durable: boolean;
}

export interface GroupStats {
  groups: number;
  changes: number;
  largest: number;
}

export class GroupCommit {
  private queue: Entry[] = [];
  private forming = false;
  readonly stats: GroupStats = { groups: 0, changes: 0, largest: 0 };

  constructor(
    private readonly root: RootDatabase,
    private readonly maxGroup = 512,
  ) {}

  /** `fn` committed with its group; resolves once it is on disk (lmdb-js: after `flushed`). */
  durable<T>(fn: () => T): Promise<T> {
    return this.enqueue(fn, true);
  }

  /**
   * `fn` committed with its group, NOT yet on disk: for a caller that overlaps other work with
   * the flush and then awaits `flushed()` before anything leaves the box.
   */
  committed<T>(fn: () => T): Promise<T> {
    return this.enqueue(fn, false);
  }

  /** Resolves once everything committed so far is on disk. */
  flushed(): Promise<void> {
    return Promise.resolve(this.root.flushed).then(() => undefined);
  }

  private enqueue<T>(fn: () => T, durable: boolean): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, resolve: resolve as (v: unknown) => void, reject, durable });
      if (!this.forming) this.startGroup();
    });
  }

  /**
   * One lmdb-js transaction for everything queued until it runs: lmdb-js runs it when the
   * writer is free, so what arrives while a commit is under way joins the next group.
   */
  private startGroup(): void {
    this.forming = true;
    let group: Entry[] = [];
    const results: { ok: boolean; v: unknown }[] = [];
    const txn = this.root.transaction(() => {
      // from here on, new changes form the next group (queued by lmdb-js behind this one)
      this.forming = false;
      group = this.queue.splice(0, this.maxGroup);
      if (this.queue.length) this.startGroup();
      for (const g of group) {
        try {
          results.push({ ok: true, v: g.fn() });
        } catch (e) {
          results.push({ ok: false, v: e });
        }
      }
      this.stats.groups++;
      this.stats.changes += group.length;
      if (group.length > this.stats.largest) this.stats.largest = group.length;
    });
    txn.then(
      () => {
        const waiting: [Entry, { ok: boolean; v: unknown }][] = [];
        for (let i = 0; i < group.length; i++) {
          if (group[i]!.durable) waiting.push([group[i]!, results[i]!]);
          else settle(group[i]!, results[i]!);
        }
        // a flush covers every commit before it: the groups waiting on the disk share its fsync
        if (waiting.length)
          Promise.resolve(this.root.flushed).then(
            () => waiting.forEach(([g, r]) => settle(g, r)),
            (e: unknown) => waiting.forEach(([g]) => g.reject(e)),
          );
      },
      (e: unknown) => {
        // the commit itself failed (a full disk): nothing of the group is written
        if (this.forming && !group.length) this.forming = false;
        for (const g of group.length ? group : this.queue.splice(0)) g.reject(e);
      },
    );
  }
}

function settle(g: Entry, r: { ok: boolean; v: unknown }): void {
  if (r.ok) g.resolve(r.v);
  else g.reject(r.v);
}
