// The state checker in a process of its own (crash-states.ts drives it): lmdb-js dies with
// SIGSEGV on some damaged files (a first meta page cut short, seen here) instead of throwing, and
// a crash state that kills its opener is a failed state, not a dead campaign. Messages over the
// IPC channel:
//   in:  { told: ToldEvent[] }                      answers to add to what must hold
//        { check: id, image, work }                 check one state image
//   out: { id, result: StateResult }
import { createPublicKey, type KeyObject } from 'node:crypto';
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { checkState, type StateResult, type Told } from './check-state.js';

export interface WorkerEvent {
  kind: 'issued' | 'confirmed';
  packageId: string;
  uid: string;
}

type In = { auditSpki: string } | { told: WorkerEvent[] } | { check: number; image: string; work: string };

const SELF = fileURLToPath(import.meta.url);

if (process.argv[1] === SELF && process.send) {
  const told: Told = { issued: new Map(), confirmed: new Map() };
  let key: KeyObject | undefined;
  let queue = Promise.resolve();
  process.on('message', (m: In) => {
    queue = queue.then(async () => {
      if ('auditSpki' in m) key = createPublicKey({ key: Buffer.from(m.auditSpki, 'base64'), format: 'der', type: 'spki' });
      else if ('told' in m) for (const e of m.told) (e.kind === 'issued' ? told.issued : told.confirmed).set(e.packageId, e.uid);
      else {
        const result = await checkState(m.image, m.work, told, key!);
        process.send!({ id: m.check, result });
      }
    });
  });
  process.on('disconnect', () => process.exit(0));
}

/** A checker process that is started again, with everything it was told, when a state kills it. */
export class CheckWorker {
  private child: ChildProcess | undefined;
  private readonly told: WorkerEvent[] = [];
  private pending: { id: number; resolve: (r: StateResult) => void } | undefined;
  private next = 1;
  /** states whose check killed the checker */
  crashes = 0;

  constructor(private readonly auditSpki: string) {}

  private spawn(): ChildProcess {
    const c = fork(SELF, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    c.send({ auditSpki: this.auditSpki });
    if (this.told.length) c.send({ told: this.told });
    c.on('message', (m: { id: number; result: StateResult }) => {
      if (this.pending?.id === m.id) {
        const p = this.pending;
        this.pending = undefined;
        p.resolve(m.result);
      }
    });
    c.on('exit', (code, signal) => {
      if (this.child === c) this.child = undefined;
      const p = this.pending;
      if (!p) return;
      this.pending = undefined;
      this.crashes++;
      p.resolve({ fsckReplay: 0, journalReplayed: false, fsckCheck: 0, lmdbOpens: false, duplicates: 0, lost: 0, auditOk: false, auditEntries: 0, problems: [`LMDB: opening the state killed the checker (${signal ?? `exit ${code}`})`] });
    });
    return c;
  }

  tell(events: WorkerEvent[]): void {
    if (!events.length) return;
    this.told.push(...events);
    this.child?.send({ told: events });
  }

  check(image: string, work: string): Promise<StateResult> {
    this.child ??= this.spawn();
    const id = this.next++;
    return new Promise((resolve) => {
      this.pending = { id, resolve };
      this.child!.send({ check: id, image, work });
    });
  }

  close(): void {
    this.child?.disconnect();
    this.child = undefined;
  }
}
