// The reference KMS at work: answers re-orders and resend requests with signed batches,
// takes in verification files and acknowledges them, keeps each box's fleet state from what
// it publishes (status, alerts, events, command results), relays signed ops commands, answers
// rotate-cert CSRs with client certificates (client-ca.ts), and serves pks-fleet on a local socket.
import { kmsUpdateVerbs } from './updates.js';
import type { Attestor } from './attest.js';
import { readFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { compileChecker } from '../../appliance/config.js';
import { asPksError, pksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import { startIpcServer, type IpcServer, type VerbTable } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import { signKmsMessage } from '../../appliance/kms-message.js';
import { ID, NAME, POOL, b64 } from '../../appliance/schema.js';
import { connectLink, publish } from '../../appliance/mqtt-link.js';
import { KMS_INBOUND, anyBoxTopic, boxTopic, parseTopic } from '../../appliance/contracts/topics.js';
import { allocate, buildChunks, type BatchSigner } from './batches.js';
import type { ClientCa } from './client-ca.js';
import type { KmsConfig } from './config.js';
import { importOem } from './oem.js';
import { KmsStore, pushCapped, type BoxRecord } from './store.js';
import { takeFile } from './verify.js';
import { signAnchors } from './audit-anchor.js';
import { checkEndorsement, clientCrl } from './client-ca.js';
import { unlockKmsVerbs } from './unlock.js';
import { onAttestMessage, peekRequestId } from './attest-link.js';
import { plantOf, rebalanceRequestId } from './cluster.js';
import { boxCertSerial, publishCrl, recordRevocation } from './revocation.js';
import type { FileResult } from './verify.js';

const checkReorder = compileChecker<{ requestId: string; pool: string; count: number }>(
  {
    type: 'object',
    additionalProperties: false,
    required: ['requestId', 'pool', 'count'],
    properties: { requestId: ID, pool: POOL, count: { type: 'integer', minimum: 1, maximum: 2_000_000 } },
  },
  're-order',
);
const checkResend = compileChecker<{ batchId: string; chunks: number[] }>(
  {
    type: 'object',
    additionalProperties: false,
    required: ['batchId', 'chunks'],
    properties: { batchId: ID, chunks: { type: 'array', minItems: 1, maxItems: 1000, items: { type: 'integer', minimum: 0, maximum: 100_000 } } },
  },
  'resend',
);

const parseJson = (b: Buffer): unknown => parseJsonOr('PKS_BAD_REQUEST', 'message', b);

const checkCsrRequest = compileChecker<{ requestId: string; csr: string; endorsement?: string }>(
  {
    type: 'object',
    additionalProperties: false,
    required: ['requestId', 'csr'],
    properties: { requestId: ID, csr: { type: 'string', minLength: 1, maxLength: 16384 }, endorsement: b64(64) },
  },
  'csr request',
);

const checkResync = compileChecker<{ requestId: string }>(
  { type: 'object', additionalProperties: false, required: ['requestId'], properties: { requestId: ID } },
  'resync request',
);

const SPKI = b64(200);
type BoxKeys = { boxId: string; identity: string; transport: string; audit: string; plant?: string };
const REGISTER = {
  type: 'object',
  additionalProperties: false,
  required: ['boxId', 'identity', 'transport', 'audit'],
  // plant: issue 16 §2 (the box's cluster; default from the id, cluster.ts plantOf)
  properties: { boxId: NAME, identity: SPKI, transport: SPKI, audit: SPKI, plant: NAME },
} as const;

export interface KmsOptions {
  cfg: KmsConfig;
  signer: BatchSigner;
  /** issues box MQTT client certificates (rotate-cert); null: CSRs are refused */
  clientCa?: ClientCa | null;
  mqttKey: string;
  log: Logger;
  /** issue 12: when set, stock goes only to boxes that attested within its window (scripts/kms/attest.ts) */
  attest?: Attestor | null;
}

export class Kms {
  readonly store: KmsStore;
  private client: MqttClient | null = null;
  private ipc: IpcServer | null = null;
  /** publishing of batches runs one at a time, off the inbound path */
  private sending: Promise<void> = Promise.resolve();

  constructor(private readonly o: KmsOptions) {
    this.store = new KmsStore(o.cfg.stateDir);
  }

  async start(): Promise<void> {
    const m = this.o.cfg.mqtt;
    // the broker reloads what the store says, also after a crash between record and publish
    if (this.o.cfg.clientCa && this.o.cfg.crl) await this.publishCrl();
    this.ipc = await startIpcServer({ service: 'kms', dir: this.o.cfg.runDir, verbs: this.verbs(), callers: { fleet: Object.keys(this.verbs()) }, log: this.o.log });
    this.client = connectLink(
      {
        host: m.host,
        port: m.port,
        ca: readFileSync(m.caFile),
        cert: readFileSync(m.certFile),
        key: this.o.mqttKey,
        clientId: m.clientId,
        sessionExpirySeconds: m.sessionExpirySeconds,
        keepaliveSeconds: m.keepaliveSeconds,
        reconnectMs: 1000,
      },
      KMS_INBOUND.map(anyBoxTopic),
      (t, p) => this.onMessage(t, p),
      this.o.log,
    );
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  async stop(): Promise<void> {
    await this.sending.catch(() => undefined);
    await this.client?.endAsync().catch(() => undefined);
    await this.ipc?.close();
    await this.store.close();
  }

  private async onMessage(topic: string, payload: Buffer): Promise<void> {
    const t = parseTopic(topic);
    if (!t) return;
    const log = this.o.log.child({ box: t.boxCn, topic: t.name });
    try {
      if (t.name !== 'status') this.store.updateBox(t.boxCn, (b) => void (b.lastSeen = new Date().toISOString()));
      switch (t.name) {
        case 'reorder':
          return this.onReorder(t.boxCn, checkReorder(parseJson(payload)), log);
        case 'resend': {
          const r = checkResend(parseJson(payload));
          const batch = this.store.batches.get(r.batchId);
          if (!batch || batch.boxId !== t.boxCn) throw pksError('PKS_NOT_FOUND', `no batch ${r.batchId} for ${t.boxCn}`);
          log.info('resending chunks', { batchId: r.batchId, chunks: r.chunks.length });
          this.queueSend(batch.batchId, r.chunks);
          return;
        }
        case 'verify':
          return await this.onVerify(t.boxCn, payload, log);
        case 'csr':
          return await this.onCsr(t.boxCn, payload, log);
        case 'resync': {
          // a box that lost its state asks for the last seq we relayed, so no old command replays
          const r = checkResync(parseJson(payload));
          const b = this.store.boxes.get(t.boxCn);
          if (!b) throw pksError('PKS_NOT_FOUND', `box ${t.boxCn} is not registered`);
          const lastSeq = b.lastCmdSeq ?? 0;
          log.warn('box asks to re-synchronise (safe mode)', { requestId: r.requestId, lastSeq });
          this.store.updateBox(t.boxCn, (x) => pushCapped(x.alerts, { code: 'PKS_SAFE_MODE', detail: `box lost its uplink state; re-synchronised at seq ${lastSeq}`, at: new Date().toISOString(), source: 'kms' }));
          // (not awaited: the PUBACK of our publish arrives on the inbound stream this handler holds)
          if (this.client) void publish(this.client, boxTopic(t.boxCn, 'sync'), JSON.stringify(signKmsMessage('sync', t.boxCn, { requestId: r.requestId, lastSeq }, this.o.signer))).catch(() => undefined);
          return;
        }
        case 'status': {
          if (payload.length === 0) return;
          const doc = parseJson(payload);
          if (!doc || typeof doc !== 'object') throw pksError('PKS_BAD_REQUEST', 'status is not an object');
          this.store.updateBox(t.boxCn, (b) => {
            b.status = doc as Record<string, unknown>;
            b.lastSeen = new Date().toISOString();
          });
          return;
        }
        case 'attest':
          return await this.onAttest(t.boxCn, payload, log);
        case 'update-status': {
          const doc = parseJson(payload) as Record<string, unknown>;
          if (!doc || typeof doc !== 'object' || payload.length > 16 * 1024) throw pksError('PKS_BAD_REQUEST', 'update-status is not a small object');
          this.store.updateBox(t.boxCn, (b) => void (b.update = { ...doc, receivedAt: new Date().toISOString() }));
          return;
        }
        case 'alert':
        case 'event':
        case 'cmd-result': {
          const doc = parseJson(payload) as Record<string, unknown>;
          if (!doc || typeof doc !== 'object' || payload.length > 16 * 1024) throw pksError('PKS_BAD_REQUEST', `${t.name} is not a small object`);
          if (t.name === 'event' && doc.type === 'zeroized') await this.onZeroized(t.boxCn, doc, log);
          this.store.updateBox(t.boxCn, (b) => {
            const list = t.name === 'alert' ? b.alerts : t.name === 'event' ? b.events : b.cmdResults;
            pushCapped(list, { ...doc, receivedAt: new Date().toISOString() });
          });
          return;
        }
        default:
          return;
      }
    } catch (err) {
      const e = asPksError(err);
      log.warn('message refused', { code: e.code, detail: e.detail, ...(e.code === 'PKS_INTERNAL' ? { err } : {}) });
    }
  }

  /** Issue 12: one attestation step of a box; the answer goes back signed on `attest-answer`. */
  private async onAttest(boxId: string, payload: Buffer, log: Logger): Promise<void> {
    if (payload.length > 200 * 1024) throw pksError('PKS_TOO_LARGE', 'attest message is too large');
    const a = this.o.attest;
    let answer: Record<string, unknown> | null;
    if (!a) {
      const requestId = peekRequestId(payload);
      answer = requestId ? { requestId, ok: false, state: 'unknown', error: { code: 'PKS_SERVICE_UNAVAILABLE', detail: 'this KMS does not verify attestation' } } : null;
    } else {
      answer = await onAttestMessage(a, boxId, this.store.boxes.get(boxId)?.identity, payload);
    }
    if (!answer) return;
    const err = answer.error as { code: string; detail: string } | undefined;
    if (err) {
      log.warn('attestation refused', { code: err.code, detail: err.detail });
      this.store.updateBox(boxId, (b) => pushCapped(b.alerts, { code: err.code, detail: `attestation: ${err.detail}`, at: new Date().toISOString(), source: 'kms' }));
    } else if (answer.state) log.info('attestation', { state: answer.state });
    // (not awaited: the PUBACK of our publish arrives on the inbound stream this handler holds)
    if (this.client) void publish(this.client, boxTopic(boxId, 'attest-answer'), JSON.stringify(signKmsMessage('attest', boxId, answer, this.o.signer))).catch(() => undefined);
  }

  private onReorder(boxId: string, r: { requestId: string; pool: string; count: number }, log: Logger): void {
    try {
      if (this.store.boxes.get(boxId)?.decommissioned) throw pksError('PKS_DECOMMISSIONED', `box ${boxId} is decommissioned`);
      this.o.attest?.mayRelease(boxId);
      const { batch, created } = allocate(this.store, boxId, r.requestId, r.pool, r.count);
      log.info(created ? 're-order answered' : 're-order repeated, same batch again', { requestId: r.requestId, batchId: batch.batchId, keys: batch.count, chunks: batch.chunks });
      this.queueSend(batch.batchId);
    } catch (err) {
      const e = asPksError(err);
      this.store.updateBox(boxId, (b) => pushCapped(b.alerts, { code: e.code, detail: `re-order ${r.requestId}: ${e.detail}`, at: new Date().toISOString(), source: 'kms' }));
      throw e;
    }
  }

  /** Publishes a batch (or some of its chunks) in the background, in order, one send at a time. */
  private queueSend(batchId: string, which?: number[]): void {
    this.sending = this.sending.then(async () => {
      const batch = this.store.batches.get(batchId);
      if (!batch || !this.client) return;
      const topic = boxTopic(batch.boxId, 'batch');
      let n = 0;
      try {
        for (const chunk of buildChunks(this.store, batch, this.o.signer, which)) {
          await publish(this.client, topic, JSON.stringify(chunk));
          n++;
        }
        this.o.log.info('batch published', { batchId, chunks: n });
      } catch (err) {
        // the box asks again (resend / same re-order) for what it did not get
        this.o.log.warn('batch publish interrupted', { batchId, sent: n, err });
      }
    });
  }

  private async onVerify(boxId: string, payload: Buffer, log: Logger): Promise<void> {
    let ack: Record<string, unknown>;
    try {
      const r = takeFile(this.store, boxId, payload);
      log.info('verification file taken', { fileId: r.fileId, items: r.ids.length, rejected: r.rejected.length, duplicate: r.duplicate });
      await this.afterFile(boxId, r, log);
      ack = { fileId: r.fileId, ids: r.ids, rejected: r.rejected, anchors: signAnchors(boxId, r.anchors ?? [], this.o.signer) };
    } catch (err) {
      const e = asPksError(err);
      log.warn('verification file refused', { code: e.code, detail: e.detail });
      let fileId: unknown;
      try {
        fileId = (JSON.parse(String((JSON.parse(payload.toString()) as { payload?: unknown }).payload)) as { fileId?: unknown }).fileId;
      } catch {
        fileId = undefined;
      }
      this.store.updateBox(boxId, (b) => pushCapped(b.alerts, { code: e.code, detail: `verification file refused: ${e.detail}`, at: new Date().toISOString(), source: 'kms' }));
      ack = { fileId: typeof fileId === 'string' ? fileId.slice(0, 96) : null, ids: [], error: { code: e.code, detail: e.detail } };
    }
    // the ack is an ordinary QoS 1 message: if it is lost, the box sends the file again and
    // gets the same answer (files are idempotent by fileId)
    // (not awaited: the PUBACK of our publish arrives on the inbound stream this handler holds)
    // signed by the batch signer: the box takes no ack for the KMS's word unless it is
    if (this.client) void publish(this.client, boxTopic(boxId, 'ack'), JSON.stringify(signKmsMessage('ack', boxId, ack, this.o.signer))).catch(() => undefined);
  }

  /**
   * A box's CSR (rotate-cert). The topic's CN is the identity the broker authenticated, so a
   * box can only ask for its own name; it must also be registered here. The answer goes back
   * on `cert`, a certificate or a coded refusal, under the box's requestId.
   */
  private async onCsr(boxId: string, payload: Buffer, log: Logger): Promise<void> {
    let requestId: string | null = null;
    let answer: Record<string, unknown>;
    try {
      const r = checkCsrRequest(parseJson(payload));
      requestId = r.requestId;
      const box = this.store.boxes.get(boxId);
      if (!box) throw pksError('PKS_NOT_FOUND', `box ${boxId} is not registered`);
      await checkEndorsement(box, r.csr, r.endorsement);
      if (!this.o.clientCa) throw pksError('PKS_SERVICE_UNAVAILABLE', 'this KMS issues no client certificates (no clientCa)');
      const issued = await this.o.clientCa.issue(boxId, r.csr);
      log.info('client certificate issued', { requestId, serial: issued.serial, notAfter: issued.notAfter });
      this.store.updateBox(boxId, (b) => {
        pushCapped(b.events, { type: 'mqtt-cert-issued', serial: issued.serial, notAfter: issued.notAfter, at: new Date().toISOString(), source: 'kms' });
        b.certSerials = [...(b.certSerials ?? []), issued.serial.toLowerCase()].slice(-50);
      });
      answer = { requestId, cert: issued.cert };
    } catch (err) {
      const e = asPksError(err);
      log.warn('csr refused', { requestId, code: e.code, detail: e.detail });
      if (this.store.boxes.get(boxId)) this.store.updateBox(boxId, (b) => pushCapped(b.alerts, { code: e.code, detail: `csr refused: ${e.detail}`, at: new Date().toISOString(), source: 'kms' }));
      if (requestId === null) return; // nothing the box could match an answer to
      answer = { requestId, error: { code: e.code, detail: e.detail } };
    }
    // (not awaited: the PUBACK of our publish arrives on the inbound stream this handler holds)
    if (this.client) void publish(this.client, boxTopic(boxId, 'cert'), JSON.stringify(signKmsMessage('cert', boxId, answer, this.o.signer))).catch(() => undefined);
  }

  /**
   * Issue 16: what a taken file asks for beyond its ack: fresh stock for the target of released
   * keys (the same request id for the same file, so a repeated file gets the same batch) and
   * revocations of certificates the box reported replaced or about to be wiped.
   */
  private async afterFile(boxId: string, r: FileResult, log: Logger): Promise<void> {
    for (const rel of r.releases ?? []) {
      try {
        const { batch, created } = allocate(this.store, rel.to, rebalanceRequestId(boxId, r.fileId, rel), rel.pool, rel.count);
        if (created) log.info('rebalanced: released keys answered with fresh stock for the target', { from: boxId, to: rel.to, pool: rel.pool, keys: batch.count, batchId: batch.batchId });
        this.queueSend(batch.batchId);
      } catch (err) {
        const e = asPksError(err);
        log.warn('rebalance not answered', { to: rel.to, pool: rel.pool, code: e.code, detail: e.detail });
      }
    }
    const ca = this.o.cfg.clientCa;
    let revoked = false;
    for (const ev of r.certEvents ?? []) {
      if (!ca) break;
      const pem = ev.type === 'mqtt-cert-rotated' ? ev.previous : ev.cert;
      const serial = boxCertSerial(ca.certFile, boxId, pem);
      if (!serial) continue;
      if (ev.type === 'zeroize-begin') this.store.updateBox(boxId, (b) => void (b.certSerials = [...new Set([...(b.certSerials ?? []), serial])]));
      else revoked = recordRevocation(this.store, boxId, serial, 'superseded by rotate-cert') || revoked;
    }
    if (revoked) await this.publishCrl();
  }

  /**
   * Step 4 of `pksctl zeroize`: the box reports that its keys and data are gone. Taken only with
   * the nonce of the zeroize-begin event of the box's last audit-signed verification file (so a
   * stray message cannot decommission a box); every certificate of the box is revoked.
   */
  private async onZeroized(boxId: string, doc: Record<string, unknown>, log: Logger): Promise<void> {
    const b = this.store.boxes.get(boxId);
    if (!b) return;
    const begun = b.events.some((e) => e.type === 'zeroize-begin' && typeof e.nonce === 'string' && e.nonce === doc.nonce);
    if (!begun) throw pksError('PKS_BAD_REQUEST', 'zeroized report without a matching zeroize-begin in a verification file');
    await this.decommission(boxId, typeof doc.reason === 'string' ? doc.reason : 'zeroized', log);
  }

  /** Strikes a box off: no more stock, every certificate the KMS knows for it revoked. */
  private async decommission(boxId: string, reason: string, log: Logger): Promise<string[]> {
    const b = this.store.boxes.get(boxId);
    if (!b) throw pksError('PKS_NOT_FOUND', `box ${boxId} is not registered`);
    const at = new Date();
    this.store.root.transactionSync(() => {
      for (const serial of b.certSerials ?? []) recordRevocation(this.store, boxId, serial, 'box decommissioned', at);
      this.store.updateBox(boxId, (x) => {
        x.decommissioned = { at: at.toISOString(), reason: reason.slice(0, 200) };
        pushCapped(x.events, { type: 'decommissioned', at: at.toISOString(), source: 'kms' });
      });
    });
    log.warn('box decommissioned: its certificates are revoked', { serials: b.certSerials ?? [] });
    if (this.o.cfg.clientCa) await this.publishCrl();
    return b.certSerials ?? [];
  }

  private async publishCrl(): Promise<string> {
    const ca = this.o.cfg.clientCa;
    if (!ca) throw pksError('PKS_SERVICE_UNAVAILABLE', 'this KMS has no client CA, so no CRL');
    return publishCrl(this.store, ca, this.o.cfg.crl, this.o.log);
  }

  private summary(b: BoxRecord): Record<string, unknown> {
    const st = (b.status ?? {}) as Record<string, unknown>;
    return {
      boxId: b.boxId,
      plant: plantOf(b),
      ...(b.decommissioned ? { decommissioned: b.decommissioned } : {}),
      health: st.health ?? 'unknown',
      version: st.version ?? null,
      mode: st.mode ?? null,
      stock: st.stock ?? {},
      openAlerts: st.openAlerts ?? [],
      kmsAlerts: b.alerts.length,
      lastSeen: b.lastSeen ?? null,
      lastSync: st.lastSync ?? null,
      counters: b.counters,
      ...(this.o.attest ? { attest: this.o.attest.status().find((x) => x.boxId === b.boxId) ?? { boxId: b.boxId, state: 'unknown' } } : {}),
      // the newer of what came on update-status and what the retained status carries
      update: [b.update, st.update as Record<string, unknown> | undefined].filter((u): u is Record<string, unknown> => !!u).sort((x, y) => Date.parse(String(y.at ?? y.receivedAt)) - Date.parse(String(x.at ?? x.receivedAt)))[0] ?? null,
    };
  }

  /** Pins a box's HSM public keys (identity, transport, audit); the same keys again change nothing. */
  private registerBox(r: BoxKeys): { boxId: string; created: boolean } {
    for (const k of ['identity', 'transport', 'audit'] as const) {
      try {
        const pk = createPublicKey({ key: Buffer.from(r[k], 'base64'), format: 'der', type: 'spki' });
        if (pk.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error('curve');
      } catch {
        throw pksError('PKS_BAD_REQUEST', `${k} is not a P-256 SPKI`);
      }
    }
    return this.store.root.transactionSync(() => {
      const old = this.store.boxes.get(r.boxId);
      if (old) {
        if (old.identity === r.identity && old.transport === r.transport && old.audit === r.audit && (r.plant ?? old.plant) === old.plant) return { boxId: r.boxId, created: false };
        throw pksError('PKS_CONFLICT', `box ${r.boxId} is registered with other keys`);
      }
      this.store.boxes.putSync(r.boxId, {
        boxId: r.boxId,
        ...(r.plant ? { plant: r.plant } : {}),
        identity: r.identity,
        transport: r.transport,
        audit: r.audit,
        registeredAt: new Date().toISOString(),
        alerts: [],
        events: [],
        cmdResults: [],
        counters: { batches: 0, keysSent: 0, verified: 0, burned: 0, rejected: 0, files: 0 },
      });
      return { boxId: r.boxId, created: true };
    });
  }

  verbs(): VerbTable {
    const box = (id: string): BoxRecord => {
      const b = this.store.boxes.get(id);
      if (!b) throw pksError('PKS_NOT_FOUND', `box ${id} is not registered`);
      return b;
    };
    return {
      boxes: { request: { type: 'object', additionalProperties: false, properties: {} }, handler: () => ({ boxes: [...this.store.boxes.getRange()].map((e) => this.summary(e.value)) }) },
      // issue 16 §2: one plant's boxes as one view (pks-fleet plant)
      plant: {
        request: { type: 'object', additionalProperties: false, required: ['plant'], properties: { plant: NAME } },
        handler: (r: { plant: string }) => {
          const boxes = [...this.store.boxes.getRange()].map((e) => e.value).filter((b) => plantOf(b) === r.plant);
          const stock: Record<string, { available: number; reserved: number; boxes: Record<string, number> }> = {};
          for (const b of boxes) {
            if (b.decommissioned) continue;
            for (const [pool, p] of Object.entries(((b.status ?? {}) as { stock?: Record<string, { available?: number; reserved?: number }> }).stock ?? {})) {
              const s = (stock[pool] ??= { available: 0, reserved: 0, boxes: {} });
              s.available += p.available ?? 0;
              s.reserved += p.reserved ?? 0;
              s.boxes[b.boxId] = p.available ?? 0;
            }
          }
          const counters = boxes.reduce((a, b) => ({ verified: a.verified + b.counters.verified, burned: a.burned + b.counters.burned, keysSent: a.keysSent + b.counters.keysSent }), { verified: 0, burned: 0, keysSent: 0 });
          return { plant: r.plant, boxes: boxes.map((b) => this.summary(b)), stock, counters };
        },
      },
      // ops' own hand (a box zeroized with --force, or lost): the same as a box's zeroized report
      decommission: {
        request: { type: 'object', additionalProperties: false, required: ['boxId', 'reason'], properties: { boxId: NAME, reason: { type: 'string', minLength: 1, maxLength: 200 } } },
        handler: async (r: { boxId: string; reason: string }) => ({ boxId: r.boxId, revoked: await this.decommission(r.boxId, `by ops: ${r.reason}`, this.o.log) }),
      },
      // read only: the CRL as it stands (written and reloaded only when a revocation is new)
      crl: {
        request: { type: 'object', additionalProperties: false, properties: {} },
        handler: async () => {
          const ca = this.o.cfg.clientCa;
          if (!ca) throw pksError('PKS_SERVICE_UNAVAILABLE', 'this KMS has no client CA, so no CRL');
          const revoked = [...this.store.revocations.getRange()].map((e) => e.value);
          return { pem: await clientCrl(ca, revoked), revoked };
        },
      },
      attestation: { request: { type: 'object', additionalProperties: false, properties: {} }, handler: () => ({ enabled: Boolean(this.o.attest), boxes: this.o.attest?.status() ?? [] }) },
      box: {
        request: { type: 'object', additionalProperties: false, required: ['boxId'], properties: { boxId: NAME } },
        handler: (r: { boxId: string }) => {
          const b = box(r.boxId);
          return { ...this.summary(b), status: b.status ?? null, alerts: b.alerts, events: b.events.slice(-20), cmdResults: b.cmdResults.slice(-20), lastCheckpoint: b.lastCheckpoint ?? null, registeredAt: b.registeredAt };
        },
      },
      register: {
        request: REGISTER,
        handler: (r: BoxKeys) => this.registerBox(r),
      },
      // pksctl setup's enrolment (issue 16): the box's keys pinned as by `register`, and its first
      // MQTT client certificate issued on the rotate-cert path (CSR endorsed by the identity key)
      enrol: {
        request: {
          ...REGISTER,
          required: [...REGISTER.required, 'csr', 'endorsement'],
          properties: { ...REGISTER.properties, csr: { type: 'string', minLength: 1, maxLength: 16384 }, endorsement: b64(64) },
        },
        maxBytes: 32 * 1024,
        handler: async (r: BoxKeys & { csr: string; endorsement: string }) => {
          const { csr, endorsement, ...keys } = r;
          // checked before anything is pinned: a refused enrolment leaves no trace
          if (!this.o.clientCa) throw pksError('PKS_SERVICE_UNAVAILABLE', 'this KMS issues no client certificates (no clientCa)');
          await checkEndorsement(keys, csr, endorsement);
          const reg = this.registerBox(keys);
          const issued = await this.o.clientCa.issue(r.boxId, csr);
          this.store.updateBox(r.boxId, (b) => {
            pushCapped(b.events, { type: 'enrolled', serial: issued.serial, notAfter: issued.notAfter, at: new Date().toISOString(), source: 'kms' });
            b.certSerials = [...(b.certSerials ?? []), issued.serial.toLowerCase()].slice(-50);
          });
          return { boxId: r.boxId, created: reg.created, cert: issued.cert, serial: issued.serial, notAfter: issued.notAfter };
        },
      },
      'import-oem': {
        request: { type: 'object', additionalProperties: false, required: ['path'], properties: { path: { type: 'string', pattern: '^/.{1,1000}$' } } },
        handler: (r: { path: string }) => {
          let text: string;
          try {
            text = readFileSync(r.path, 'utf8');
          } catch {
            throw pksError('PKS_NOT_FOUND', 'OEM file cannot be read');
          }
          return importOem(this.store, parseJsonOr('PKS_BAD_REQUEST', 'OEM file', text));
        },
      },
      pools: {
        request: { type: 'object', additionalProperties: false, properties: {} },
        handler: () => ({
          pools: [...this.store.pools.getRange()].map(({ value: p }) => ({ pool: p.pool, she: p.she, stored: p.count, allocated: p.next, free: p.count - p.next, generate: p.generate })),
        }),
      },
      ...kmsUpdateVerbs({ signer: this.o.signer, box, publish: async (boxId, m) => {
        if (!this.client?.connected) throw pksError('PKS_UPLINK_DOWN', 'KMS is not connected to the broker');
        await publish(this.client, boxTopic(boxId, 'update'), JSON.stringify(m));
      } }),
      'send-command': {
        request: {
          type: 'object',
          additionalProperties: false,
          required: ['boxId', 'command'],
          properties: {
            boxId: NAME,
            command: {
              type: 'object',
              additionalProperties: false,
              required: ['payload', 'sig'],
              properties: { payload: { type: 'string', maxLength: 16384 }, sig: { type: 'string', maxLength: 200 } },
            },
          },
        },
        handler: async (r: { boxId: string; command: { payload: string; sig: string } }) => {
          box(r.boxId);
          // relayed as signed by ops: the box checks the ops signature, not us
          if (!this.client?.connected) throw pksError('PKS_UPLINK_DOWN', 'KMS is not connected to the broker');
          let seq: unknown;
          try {
            seq = (JSON.parse(r.command.payload) as { seq?: unknown }).seq;
          } catch {
            seq = undefined;
          }
          // remembered before it goes out: a box that loses its state re-synchronises above it
          if (Number.isSafeInteger(seq)) this.store.updateBox(r.boxId, (b) => void (b.lastCmdSeq = Math.max(b.lastCmdSeq ?? 0, seq as number)));
          await publish(this.client, boxTopic(r.boxId, 'cmd'), JSON.stringify(r.command));
          return { boxId: r.boxId, sent: true };
        },
      },
      ...unlockKmsVerbs(this.store),
      report: {
        request: {
          type: 'object',
          additionalProperties: false,
          properties: {
            oem: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$' },
            ecuType: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$' },
            boxId: NAME,
            limit: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 100_000 },
          },
        },
        maxBytes: 4096,
        handler: (r: { oem?: string; ecuType?: string; boxId?: string; limit: number }) => {
          const items = [];
          for (const { value: i } of this.store.injections.getRange()) {
            const [oem, ecuType, slot] = i.pool.split('.');
            if ((r.oem && oem !== r.oem) || (r.ecuType && ecuType !== r.ecuType) || (r.boxId && i.boxId !== r.boxId)) continue;
            items.push({ oem, ecuType, slot, pool: i.pool, recordId: i.recordId, boxId: i.boxId, state: i.state, uid: i.uid ?? null, at: i.at, batchId: i.batchId, reason: i.reason ?? null });
            if (items.length >= r.limit) break;
          }
          return { items };
        },
      },
    };
  }
}
