// What the box reads from the KMS besides batches: acks of verification files, certificate
// answers (rotate-cert) and re-synchronisation answers (safe mode), each a KMS-signed message
// (appliance/kms-message.ts) whose body is checked here. Also which outbox ids went out in
// which file, so an ack can delete only those.
import type { TrustAnchor } from '../../appliance/batch-format.js';
import { compileChecker } from '../../appliance/config.js';
import { verifyKmsMessage } from '../../appliance/kms-message.js';
import { ID } from '../../appliance/schema.js';

export interface AckMessage {
  fileId: string | null;
  ids: string[];
  rejected?: Array<{ id: string; code: string; detail: string }>;
  /** the KMS's signed anchors of the checkpoints in the file (issue 9): kept by the keystore, which checks each */
  anchors?: unknown[];
  error?: { code: string; detail: string };
}
export interface CertAnswer {
  requestId: string;
  cert?: unknown;
  error?: { code: string; detail: string };
}
export interface SyncAnswer {
  requestId: string;
  lastSeq: number;
}

const CODED = {
  type: 'object',
  required: ['code', 'detail'],
  properties: { code: { type: 'string', maxLength: 64 }, detail: { type: 'string', maxLength: 1000 } },
} as const;
const checkAck = compileChecker<AckMessage>(
  {
    type: 'object',
    additionalProperties: false,
    required: ['fileId', 'ids'],
    properties: {
      fileId: { anyOf: [ID, { type: 'null' }] },
      ids: { type: 'array', maxItems: 5000, items: ID },
      rejected: { type: 'array', maxItems: 5000, items: { ...CODED, required: ['id', 'code', 'detail'], properties: { ...CODED.properties, id: ID } } },
      anchors: { type: 'array', maxItems: 1000, items: { type: 'object', maxProperties: 16 } },
      error: CODED,
    },
  },
  'ack',
  'PKS_KMS_MESSAGE_INVALID',
);
const checkCertAnswer = compileChecker<CertAnswer>(
  { type: 'object', additionalProperties: false, required: ['requestId'], properties: { requestId: ID, cert: { type: 'string', maxLength: 8192 }, error: CODED } },
  'cert answer',
  'PKS_KMS_MESSAGE_INVALID',
);
const checkSync = compileChecker<SyncAnswer>(
  { type: 'object', additionalProperties: false, required: ['requestId', 'lastSeq'], properties: { requestId: ID, lastSeq: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } } },
  'sync answer',
  'PKS_KMS_MESSAGE_INVALID',
);

/** Reads KMS answers for one box against the pinned KMS CA; each throws a coded error on junk. */
export class KmsAnswers {
  constructor(
    private readonly trust: TrustAnchor,
    private readonly boxId: string,
  ) {}
  ack(raw: Buffer): AckMessage {
    return checkAck(verifyKmsMessage(raw, 'ack', this.trust, this.boxId));
  }
  cert(raw: Buffer): CertAnswer {
    return checkCertAnswer(verifyKmsMessage(raw, 'cert', this.trust, this.boxId));
  }
  sync(raw: Buffer): SyncAnswer {
    return checkSync(verifyKmsMessage(raw, 'sync', this.trust, this.boxId));
  }
}

/** Verification files sent and not acknowledged yet (the newest `max`, for late acks). */
export class SentFiles {
  readonly #files = new Map<string, Set<string>>();
  constructor(readonly max = 32) {}
  sent(fileId: string, ids: readonly string[]): void {
    this.#files.set(fileId, new Set(ids));
    if (this.#files.size > this.max) this.#files.delete(this.#files.keys().next().value as string);
  }
  /** The ack's ids that were in its file (the file is then forgotten), or null for a file not in flight. */
  take(ack: AckMessage): { ids: string[]; foreign: number; sent: Set<string> } | null {
    const sent = ack.fileId === null ? undefined : this.#files.get(ack.fileId);
    if (!sent) return null;
    this.#files.delete(ack.fileId!);
    const ids = ack.ids.filter((id) => sent.has(id));
    return { ids, foreign: ack.ids.length - ids.length, sent };
  }
}

/** At most one alert per code per interval; the ones held back are counted for the next. */
export class AlertGate {
  readonly #gates = new Map<string, { at: number; held: number }>();
  constructor(readonly intervalMs: number) {}
  /** null: hold this one back; else the note to add about the ones held since the last ('' for none). */
  pass(code: string, now = Date.now()): string | null {
    const g = this.#gates.get(code);
    if (g && now - g.at < this.intervalMs) {
      g.held++;
      return null;
    }
    this.#gates.set(code, { at: now, held: 0 });
    if (this.#gates.size > 256) this.#gates.delete(this.#gates.keys().next().value as string);
    return g?.held ? ` (and ${g.held} more since ${new Date(g.at).toISOString()})` : '';
  }
}

/** Answers awaited by id (fileId, requestId): each wait ends with the answer or null on timeout. */
export class Waiters<T> {
  readonly #waiting = new Map<string, (v: T) => void>();
  wait(id: string, ms: number): Promise<T | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        resolve(null);
      }, ms);
      timer.unref();
      this.#waiting.set(id, (v) => {
        clearTimeout(timer);
        resolve(v);
      });
    });
  }
  /** Hands `v` to whoever waits for `id`; false when nobody does (late, repeated, given up). */
  settle(id: string, v: T): boolean {
    const w = this.#waiting.get(id);
    if (!w) return false;
    this.#waiting.delete(id);
    w(v);
    return true;
  }
  /** Stops waiting for `id` (the answer, if it comes, is then a late one). */
  cancel(id: string): void {
    this.#waiting.delete(id);
  }
}
