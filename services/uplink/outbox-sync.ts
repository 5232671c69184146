// The outbox to the KMS: sent as verification files (packed by the keystore from flushed items
// only, signed by the vault) and deleted only on the KMS's signed ack, and then only the ids
// sent in that file (appliance/kms-message.ts). A rejected item is never deleted: the keystore
// keeps it and raises a critical alert. The ack also carries the KMS's anchors of the audit
// checkpoints, which the keystore checks and keeps.
import type { OutboxFileResponse } from '../../appliance/contracts/keystore.js';
import { asPksError } from '../../appliance/errors.js';
import type { UplinkContext } from './context.js';
import { SentFiles, Waiters, type AckMessage, type KmsAnswers } from './kms-answers.js';

export class OutboxSync {
  private readonly ackWaiters = new Waiters<AckMessage>();
  /** fileId → the outbox ids sent in it: an ack can delete only these */
  private readonly sentFiles = new SentFiles();

  constructor(
    private readonly c: UplinkContext,
    private readonly answers: KmsAnswers,
    private readonly refuse: (what: string, err: unknown) => Promise<void>,
  ) {}

  onAck(payload: Buffer): Promise<void> {
    let ack: AckMessage;
    try {
      ack = this.answers.ack(payload);
    } catch (err) {
      return this.refuse('ack', err);
    }
    if (typeof ack.fileId === 'string' && this.ackWaiters.settle(ack.fileId, ack)) return Promise.resolve();
    // a late ack (after our wait timed out) still counts: the KMS has those items stored
    return this.applyAck(ack);
  }

  /** Sends the outbox as verification files until it is empty (true) or the KMS stops answering. */
  async flush(): Promise<boolean> {
    const c = this.c;
    for (let round = 0; round < 100; round++) {
      if (!c.link.connected) return false;
      const { fileId, payload: text, sig, ids } = await c.keystore.call<OutboxFileResponse>('outbox-file', { limit: 5000 });
      if (ids.length === 0) return true;
      this.sentFiles.sent(fileId, ids);
      const ack = this.ackWaiters.wait(fileId, c.cfg.timing.ackTimeoutSeconds * 1000);
      try {
        await c.link.publish('verify', JSON.stringify({ v: 1, payload: text, sig }));
      } catch {
        this.ackWaiters.cancel(fileId);
        return false;
      }
      const a = await ack;
      if (!a) {
        c.log.info('verification file not acknowledged yet; kept in the outbox', { fileId, items: ids.length });
        return false;
      }
      await this.applyAck(a);
      if (a.error) return false;
    }
    return false;
  }

  private async applyAck(ack: AckMessage): Promise<void> {
    const c = this.c;
    if (ack.error) {
      await c.raise(ack.error.code, `KMS refused verification file: ${ack.error.detail}`);
      return;
    }
    const taken = this.sentFiles.take(ack);
    if (!taken) {
      // genuine but not for a file we are waiting on (a replay, or from before a restart:
      // those items go out again in a new file, which the KMS takes idempotently by id)
      c.log.info('ack for no file in flight ignored', { fileId: ack.fileId, ids: ack.ids.length });
      return;
    }
    const { ids, foreign, sent } = taken;
    if (foreign > 0) await c.raise('PKS_KMS_MESSAGE_INVALID', `ack of ${ack.fileId} names ${foreign} id(s) not sent in it; those are kept`);
    if (ids.length === 0) return;
    const rejected = (ack.rejected ?? []).filter((r) => sent.has(r.id)).slice(0, 5000);
    if (rejected.length) await c.keystore.call('outbox-reject', { items: rejected });
    const gone = new Set(rejected.map((r) => r.id));
    const acked = ids.filter((id) => !gone.has(id));
    if (acked.length) await c.keystore.call('outbox-ack', { ids: acked });
    c.counters.filesAcked++;
    c.counters.itemsAcked += ids.length;
    for (const r of rejected) await c.raise(r.code, `KMS rejected ${r.id}: ${r.detail}`, false);
    if (Array.isArray(ack.anchors) && ack.anchors.length) {
      try {
        await c.keystore.call('audit-anchor', { anchors: ack.anchors.slice(0, 100) });
      } catch (err) {
        const e = asPksError(err);
        await c.raise(e.code, `audit anchor from the KMS refused: ${e.detail}`, false);
      }
    }
  }
}
