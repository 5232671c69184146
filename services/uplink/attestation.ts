// The box's side of remote attestation over MQTT (issue 12; messages in
// appliance/contracts/attestation.ts): a quote of PCRs 0-15 on a fresh KMS nonce, with the
// firmware event log, pks-measure's PCR 15 log and the vault's signed gate report, before every re-order and every
// `everySeconds`. The box enrolls its AK by itself the first time the KMS says it does not know
// it (credential activation proves the AK sits in the EK's TPM). The TPM work runs in the quote
// tool (services/attest/quote-cli.ts) as a child process: the uplink holds no TPM code of its
// own, and whatever it sends, the KMS checks the TPM's signature and the vault's.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TrustAnchor } from '../../appliance/batch-format.js';
import { compileChecker } from '../../appliance/config.js';
import { isErrorCode, pksError } from '../../appliance/errors.js';
import type { IpcClient } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import { verifyKmsMessage } from '../../appliance/kms-message.js';
import { ID, b64 } from '../../appliance/schema.js';
import type { GateReport } from '../../appliance/contracts/attestation.js';
import type { UplinkConfig } from './config.js';
import { Waiters } from './kms-answers.js';

export interface AttestAnswer {
  requestId: string;
  credential?: string;
  nonce?: string;
  ok?: boolean;
  state?: string;
  error?: { code: string; detail: string };
}

const checkAnswer = compileChecker<AttestAnswer>(
  {
    type: 'object',
    additionalProperties: false,
    required: ['requestId'],
    properties: {
      requestId: ID,
      credential: b64(4096),
      nonce: { type: 'string', pattern: '^[0-9a-f]{64}$' },
      ok: { type: 'boolean' },
      state: { type: 'string', maxLength: 32 },
      error: { type: 'object', required: ['code', 'detail'], properties: { code: { type: 'string', maxLength: 64 }, detail: { type: 'string', maxLength: 300 } } },
    },
  },
  'attest answer',
  'PKS_KMS_MESSAGE_INVALID',
);

export interface AttestResult {
  at: string;
  ok: boolean;
  state: string;
  error?: { code: string; detail: string };
}

type Cfg = NonNullable<UplinkConfig['attest']>;

/** The quote tool beside this file (dist/services/attest/quote-cli.js, or .ts under tsx). */
function defaultCommand(): string[] {
  const here = fileURLToPath(import.meta.url);
  const tool = path.join(path.dirname(here), '..', 'attest', `quote-cli${path.extname(here)}`);
  return [process.execPath, ...process.execArgv, tool];
}

export class Attestation {
  private readonly waiters = new Waiters<AttestAnswer>();
  private running: Promise<AttestResult> | null = null;
  last: AttestResult | null = null;

  constructor(
    private readonly cfg: Cfg,
    private readonly boxId: string,
    private readonly trust: TrustAnchor,
    private readonly vault: IpcClient,
    private readonly send: (body: Record<string, unknown>) => Promise<void>,
    private readonly log: Logger,
  ) {}

  /** An `attest-answer` from the broker: signed by the KMS for this box, else refused (thrown). */
  onAnswer(raw: Buffer): void {
    const a = checkAnswer(verifyKmsMessage(raw, 'attest', this.trust, this.boxId));
    this.waiters.settle(a.requestId, a);
  }

  /** Due for the periodic quote? */
  get due(): boolean {
    return !this.last || Date.now() - Date.parse(this.last.at) >= this.cfg.everySeconds * 1000;
  }

  /** One attestation (concurrent callers share it); never throws, the result says what happened. */
  round(why: string): Promise<AttestResult> {
    this.running ??= this.attest(why)
      .catch((err: unknown) => {
        const e = err as { code?: unknown; detail?: unknown };
        const code = typeof e.code === 'string' && isErrorCode(e.code) ? e.code : 'PKS_ATTEST_UNTRUSTED';
        return { at: new Date().toISOString(), ok: false, state: 'unknown', error: { code, detail: String(e.detail ?? 'attestation failed').slice(0, 300) } };
      })
      .then((r) => {
        this.last = r;
        if (r.ok) this.log.info('attested at the KMS', { why, state: r.state });
        else this.log.warn('attestation refused', { why, code: r.error?.code, detail: r.error?.detail });
        return r;
      })
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  private async ask(body: Record<string, unknown>): Promise<AttestAnswer> {
    const requestId = `at-${randomUUID()}`;
    const answer = this.waiters.wait(requestId, this.cfg.timeoutSeconds * 1000);
    await this.send({ ...body, requestId });
    const a = await answer;
    if (!a) throw pksError('PKS_UPLINK_DOWN', 'no attestation answer from the KMS in time');
    return a;
  }

  private tool(args: string[]): Promise<Record<string, string>> {
    const [cmd, ...pre] = this.cfg.command ?? defaultCommand();
    return new Promise((resolve, reject) => {
      execFile(cmd!, [...pre, ...args], { timeout: 120_000, maxBuffer: 4 << 20, env: { ...process.env, PKS_TPM_TCTI: this.cfg.tcti, PKS_EVENT_LOG: this.cfg.eventLog } }, (err, stdout) => {
        let out: { error?: { code: string; detail: string } } & Record<string, string>;
        try {
          out = JSON.parse(String(stdout));
        } catch {
          return reject(pksError('PKS_SERVICE_UNAVAILABLE', `TPM quote tool failed${err ? `: ${err.message.split('\n')[0]}` : ''}`.slice(0, 300)));
        }
        if (out.error) return reject(pksError(isErrorCode(out.error.code) ? out.error.code : 'PKS_SERVICE_UNAVAILABLE', `TPM: ${out.error.detail}`.slice(0, 300)));
        resolve(out);
      });
    });
  }

  private async enroll(): Promise<void> {
    const e = await this.tool(['enroll']);
    const c = await this.ask({ type: 'enroll', ekCert: e.ekCert, akPublic: e.akPublic, pcr15: e.pcr15, ...(e.measurementLog ? { measurementLog: e.measurementLog } : {}) });
    if (c.error || !c.credential) throw pksError(isErrorCode(c.error?.code ?? '') ? (c.error!.code as never) : 'PKS_ATTEST_UNTRUSTED', `enrollment refused: ${c.error?.detail ?? 'no credential'}`);
    const { secret } = await this.tool(['activate', '--credential', c.credential]);
    const done = await this.ask({ type: 'activate', secret });
    if (done.error) throw pksError(isErrorCode(done.error.code) ? done.error.code : 'PKS_ATTEST_UNTRUSTED', `enrollment refused: ${done.error.detail}`);
    this.log.info('AK enrolled at the KMS');
  }

  private async attest(why: string, enrolled = false): Promise<AttestResult> {
    const c = await this.ask({ type: 'challenge' });
    if (c.error?.code === 'PKS_ATTEST_REQUIRED' && !enrolled) {
      // the KMS does not know this box's AK yet: enroll, then attest
      await this.enroll();
      return this.attest(why, true);
    }
    if (c.error || !c.nonce) throw pksError(isErrorCode(c.error?.code ?? '') ? (c.error!.code as never) : 'PKS_ATTEST_UNTRUSTED', `no nonce: ${c.error?.detail ?? 'none given'}`);
    const q = await this.tool(['quote', '--nonce', c.nonce]);
    // the vault's own verdict on the application, signed by its identity key over this nonce
    const gate = await this.vault.call<GateReport>('gate-report', { nonce: c.nonce });
    // the PCR 15 log lets the KMS tell a signed update (pks-app of a build-signed release) from tampering
    const v = await this.ask({ type: 'quote', nonce: c.nonce, message: q.message, signature: q.signature, pcrs: q.pcrs, eventLog: q.eventLog, ...(q.measurementLog ? { measurementLog: q.measurementLog } : {}), gate });
    return { at: new Date().toISOString(), ok: v.ok === true, state: v.state ?? 'unknown', ...(v.error ? { error: v.error } : {}) };
  }
}
