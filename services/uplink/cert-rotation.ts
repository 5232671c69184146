// rotate-cert: a new key and CSR (endorsed by the HSM identity key, so the KMS knows the CSR is
// this box's), the certificate from the KMS, checked, stored, reconnected with; only then
// committed (the state file points to it) and reported. Any failure keeps the old identity.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { asPksError, isErrorCode, pksError } from '../../appliance/errors.js';
import type { CommandPayload } from '../../appliance/contracts/commands.js';
import type { Report } from './command-runner.js';
import type { UplinkContext } from './context.js';
import { checkIssuedCert, makeCsr, removeIdentity, storeIdentity } from './identity.js';
import { Waiters, type CertAnswer, type KmsAnswers } from './kms-answers.js';
import type { SyncSchedule } from './sync-schedule.js';

export class CertRotation {
  private readonly waiters = new Waiters<CertAnswer>();
  private rotating = false;

  constructor(
    private readonly c: UplinkContext,
    private readonly answers: KmsAnswers,
    private readonly schedule: SyncSchedule,
    private readonly refuse: (what: string, err: unknown) => Promise<void>,
  ) {}

  onCert(payload: Buffer): Promise<void> {
    let a: CertAnswer;
    try {
      a = this.answers.cert(payload);
    } catch (err) {
      return this.refuse('cert answer', err);
    }
    // an answer nobody waits for (late, repeated, for a rotation that gave up) changes nothing
    this.waiters.settle(a.requestId, a);
    return Promise.resolve();
  }

  async rotate(cmd: CommandPayload, report: Report): Promise<void> {
    const c = this.c;
    const link = c.link;
    const boxId = c.cfg.boxId;
    const ms = (c.cfg.timing.certTimeoutSeconds ?? 60) * 1000;
    if (this.rotating) {
      await report({ ok: false, error: { code: 'PKS_CONFLICT', detail: 'a certificate rotation is already running' } });
      return;
    }
    this.rotating = true;
    let stored: ReturnType<typeof storeIdentity> | null = null;
    const old = link.identity;
    try {
      if (!link.connected) throw pksError('PKS_UPLINK_DOWN', 'not connected to the broker');
      const fresh = await makeCsr(boxId);
      const requestId = `csr-${randomUUID()}`;
      const answer = this.waiters.wait(requestId, ms);
      const { endorsement } = await c.vault.call<{ endorsement: string }>('box-csr', { csr: fresh.csrPem });
      await link.publish('csr', JSON.stringify({ requestId, csr: fresh.csrPem, endorsement }));
      const a = await answer;
      if (!a) throw pksError('PKS_UPLINK_DOWN', 'no certificate from the KMS in time');
      if (a.error) {
        const code = isErrorCode(a.error.code) ? a.error.code : 'PKS_CSR_INVALID';
        throw pksError(code, `KMS refused the CSR: ${String(a.error.detail).slice(0, 200)}`);
      }
      const caFile = c.cfg.mqtt.clientCaFile ?? c.cfg.mqtt.caFile;
      const info = checkIssuedCert(a.cert, { caPem: readFileSync(caFile, 'utf8'), boxId, spki: fresh.spki });
      stored = storeIdentity(c.cfg.stateDir, info.serial, fresh.keyPem, a.cert as string);
      link.identity = { cert: a.cert as string, key: fresh.keyPem };
      if (!(await link.reconnect(ms))) throw pksError('PKS_UPLINK_DOWN', 'the broker did not take the new certificate');
      const previous = c.state.state.identity;
      const committed = stored;
      c.state.update((s) => void (s.identity = committed));
      stored = null;
      if (previous && previous.certFile !== committed.certFile) removeIdentity(previous);
      c.log.info('MQTT client certificate rotated', { serial: info.serial, notAfter: info.notAfter });
      // with the replaced certificate: the KMS revokes it at once (issue 16 §3, scripts/kms/revocation.ts)
      await c.keystore.call('outbox-put', { kind: 'event', body: { type: 'mqtt-cert-rotated', serial: info.serial, notAfter: info.notAfter, previous: old.cert, source: 'uplink' } }).catch(() => undefined);
      await report({ ok: true, result: { serial: info.serial, notAfter: info.notAfter } });
    } catch (err) {
      const e = asPksError(err);
      if (link.identity.key !== old.key) {
        link.identity = old;
        await link.reconnect(ms);
      }
      if (stored) removeIdentity(stored);
      c.log.warn('certificate rotation failed; the old identity stays', { seq: cmd.seq, code: e.code, detail: e.detail });
      await report({ ok: false, error: { code: e.code, detail: e.detail } });
      await c.raise(e.code, `rotate-cert failed: ${e.detail}`);
    } finally {
      this.rotating = false;
      // a rotation may outlast its sync window: the link must not stay open past it
      this.schedule.closeSoonOutsideWindow();
    }
  }
}
