// The steps of `pksctl setup`, in order. Each one is idempotent (running it again after it
// completed, or after it was cut half way, ends in the same state) and returns a small record
// for the summary and the journal, never a secret. Files go under ctx.root (default /).
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import nodemailer from 'nodemailer';
import pkcs11js from 'pkcs11js';
import { validateConfig } from '../config.js';
import { writeFileDurably } from '../durable-file.js';
import { asPksError, isPksError, pksError } from '../errors.js';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';
import { enrollAk, AK_HANDLE } from '../../services/attest/quote.js';
import { VERSION_FLOOR_NV, defineVersionCounter } from '../../services/attest/counter.js';
import { decodeBlob, encodeBlob, parseSignedPolicyFile, sealFile, unsealFile } from '../../services/attest/seal.js';
import { keystoreSchema } from '../../services/keystore/config.js';
import { parseSentinelConfig } from '../../services/sentinel/config.js';
import { acquireModule, releaseModule } from '../../services/vault/p11-module.js';
import { ckrName } from '../../services/vault/p11-errors.js';
import { initToken, readPinFile } from '../../services/vault/token-init.js';
import type { SetupAnswers } from './setup-answers.js';
import { renderNetwork, writeNetwork } from './setup-network.js';
import { enrol } from './setup-enrol.js';

export interface StepContext {
  readonly answers: SetupAnswers;
  /** where files are written (/ on the box) */
  readonly root: string;
  /** $PKS_RUN_DIR: the running services' sockets (the keystore's, for the testers) */
  readonly runDir: string;
  /** a test hook: stop (and wait to be killed) at a named point, to prove resumption */
  pause(point: string): Promise<void>;
}

export interface Step {
  readonly name: string;
  readonly title: string;
  run(ctx: StepContext): Promise<Record<string, unknown>>;
}

const under = (ctx: StepContext, rel: string): string => path.join(ctx.root, rel);
const mkdirp = (dir: string, mode = 0o755): void => void mkdirSync(dir, { recursive: true, mode });
const step = (name: string, title: string, run: Step['run']): Step => ({ name, title, run });

/** A step's failure as the coded error that tells plant IT to run setup again (or what to fix). */
export function stepFailure(name: string, e: unknown): Error {
  const p = asPksError(e);
  if (isPksError(e) && e.code !== 'PKS_INTERNAL') return pksError(p.code, `step ${name}: ${p.detail}`, e);
  return pksError('PKS_SETUP_STEP', `step ${name}: ${(e as Error)?.message?.slice(0, 300) ?? 'failed'}`, e);
}

/**
 * Replaces a service's JSON config by `change(current)` (or `change(fresh)` when there is none),
 * durably; the config must name this box. `change` validates with the service's own rules.
 */
function updateJson(file: string, change: (cur: Record<string, unknown>) => Record<string, unknown>, fresh?: Record<string, unknown>): true {
  let cur: Record<string, unknown>;
  if (!existsSync(file) && fresh) cur = fresh;
  else
    try {
      cur = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch {
      throw pksError('PKS_SETUP_STEP', `${file} is not JSON`);
    }
  if (fresh && cur.boxId !== fresh.boxId) throw pksError('PKS_SETUP_STEP', `${file} belongs to box ${String(cur.boxId).slice(0, 64)}, not ${String(fresh.boxId)}`);
  writeFileDurably(file, JSON.stringify(change(cur), null, 2) + '\n', 0o644);
  return true;
}

// --- HSM helpers -----------------------------------------------------------------------------

const tokenLabel = (raw: string | Buffer): string => raw.toString().replace(/[\s\0]+$/, '');

function findToken(p11: InstanceType<typeof pkcs11js.PKCS11>, label: string): Buffer | undefined {
  return p11.C_GetSlotList(true).find((s) => {
    const info = p11.C_GetTokenInfo(s);
    return tokenLabel(info.label) === label && info.flags & pkcs11js.CKF_TOKEN_INITIALIZED;
  });
}

function tokenExists(h: SetupAnswers['hsm']): boolean {
  const p11 = acquireModule(h.module, h.softhsm2Conf);
  try {
    return findToken(p11, h.tokenLabel) !== undefined;
  } finally {
    releaseModule(h.module);
  }
}

/** Proves that `pin` opens the token as its user (what the vault will do at every start). */
function checkLogin(h: SetupAnswers['hsm'], pin: Buffer): void {
  const p11 = acquireModule(h.module, h.softhsm2Conf);
  try {
    const slot = findToken(p11, h.tokenLabel);
    if (slot === undefined) throw pksError('PKS_HSM_TOKEN', `no token labelled '${h.tokenLabel}' on ${h.module}`);
    const s = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    try {
      p11.C_Login(s, pkcs11js.CKU_USER, pin.toString('latin1'));
      p11.C_Logout(s);
    } catch (e) {
      const ckr = ckrName(e);
      throw pksError('PKS_HSM_LOGIN', `the user PIN does not open token '${h.tokenLabel}' (${ckr ?? 'C_Login failed'})`);
    } finally {
      p11.C_CloseSession(s);
    }
  } finally {
    releaseModule(h.module);
  }
}

interface Tpm {
  tcti: string;
  publicKeyPem: string;
}
const tpmOf = (a: SetupAnswers): Tpm => ({ tcti: a.tpm.tcti, publicKeyPem: readFileSync(a.tpm.pcrSigningKey, 'utf8') });

async function seal(tpm: Tpm, secret: Buffer): Promise<string> {
  return encodeBlob(await sealFile({ tcti: tpm.tcti, data: secret, publicKeyPem: tpm.publicKeyPem }));
}
async function unseal(a: SetupAnswers, tpm: Tpm, file: string): Promise<Buffer> {
  const signed = parseSignedPolicyFile(JSON.parse(readFileSync(a.tpm.signedPolicy, 'utf8')));
  return unsealFile({ tcti: tpm.tcti, blob: decodeBlob(readFileSync(file, 'utf8')), publicKeyPem: tpm.publicKeyPem, signed });
}

// --- the steps -------------------------------------------------------------------------------

export const STEPS: readonly Step[] = [
  step('names', 'plant and box names', async (ctx) => {
    const { plant, box } = ctx.answers;
    mkdirp(under(ctx, 'etc/pks'));
    writeFileDurably(under(ctx, 'etc/pks/site.json'), JSON.stringify({ v: 1, plant, box }, null, 1) + '\n', 0o644);
    return { plant, box, file: '/etc/pks/site.json' };
  }),

  step('network', 'network (systemd-networkd) and time (timesyncd)', async (ctx) => {
    const a = ctx.answers;
    const files = await writeNetwork(ctx.root, renderNetwork(a.network, a.time));
    return {
      mode: a.network.mode,
      interface: a.network.interface,
      ...(a.network.address ? { address: a.network.address } : {}),
      ...(a.network.testerVlan ? { testerVlan: `${a.network.testerVlan.name} id ${a.network.testerVlan.id} ${a.network.testerVlan.address}` } : {}),
      ntp: a.time.ntp.join(' '),
      files,
    };
  }),

  step('tpm', 'TPM: endorsement key certificate and attestation key', async (ctx) => {
    // the AK under the EK, persisted at AK_HANDLE; kept when there (enrollAk is idempotent)
    const ak = await enrollAk(ctx.answers.tpm.tcti);
    const dir = under(ctx, 'var/lib/pks/attest');
    mkdirp(dir);
    writeFileDurably(path.join(dir, 'ek-cert.der'), ak.ekCert, 0o644);
    writeFileDurably(path.join(dir, 'ak-public.tss'), ak.akPublic, 0o644);
    // the updater's version floor (issue 12, item 4): defined once, kept by a second setup
    const floor = await defineVersionCounter(ctx.answers.tpm.tcti);
    return { akHandle: AK_HANDLE, ekCert: '/var/lib/pks/attest/ek-cert.der', akPublic: '/var/lib/pks/attest/ak-public.tss', versionFloor: `${VERSION_FLOOR_NV} = ${floor}` };
  }),

  step('hsm', 'HSM token and its PINs sealed to the TPM', async (ctx) => {
    const a = ctx.answers;
    const h = a.hsm;
    const tpm = tpmOf(a);
    const cred = under(ctx, 'etc/pks/credentials');
    mkdirp(cred, 0o700);
    const pinBlob = path.join(cred, 'hsm-pin.sealed');
    const soBlob = path.join(cred, 'hsm-so-pin.sealed');
    if (h.mode === 'join') {
      // an existing token (a hardware HSM set up by plant security): its user PIN comes from a
      // file, must open the token, is sealed, and the clear file goes
      const clear = existsSync(h.pinFile!) ? await readPinFile(h.pinFile!) : undefined;
      if (!clear && !existsSync(pinBlob)) throw pksError('PKS_SETUP_STEP', `PIN file ${h.pinFile} is gone and no sealed PIN exists`);
      if (clear) {
        checkLogin(h, clear);
        if (!existsSync(pinBlob)) writeFileDurably(pinBlob, await seal(tpm, clear), 0o600);
      }
      const pin = await unseal(a, tpm, pinBlob);
      try {
        checkLogin(h, pin);
      } finally {
        pin.fill(0);
        clear?.fill(0);
      }
      rmSync(h.pinFile!, { force: true });
      return { token: h.tokenLabel, mode: 'join', sealed: ['/etc/pks/credentials/hsm-pin.sealed'] };
    }
    if (!(existsSync(pinBlob) && existsSync(soBlob))) {
      // a token with this label but no sealed PINs was made outside this setup: joining it needs its PIN
      if (tokenExists(h)) throw pksError('PKS_SETUP_STEP', `token '${h.tokenLabel}' exists but its PINs were not sealed by this setup: use hsm.mode "join" with its PIN file`);
      const pin = Buffer.from(randomBytes(16).toString('hex'));
      const so = Buffer.from(randomBytes(16).toString('hex'));
      // both sealed first, SO PIN before user PIN: a cut between the two writes leaves no pair,
      // and since no token was made yet, the next run simply makes new PINs
      const [soText, pinText] = [await seal(tpm, so), await seal(tpm, pin)];
      pin.fill(0);
      so.fill(0);
      writeFileDurably(soBlob, soText, 0o600);
      writeFileDurably(pinBlob, pinText, 0o600);
    }
    await ctx.pause('hsm:sealed');
    // the token gets the PINs as they come out of the TPM (what the boot's unseal will give the
    // vault), straight from memory through PKCS#11: no file, no command line
    const pin = await unseal(a, tpm, pinBlob);
    const so = await unseal(a, tpm, soBlob);
    let result: 'initialised' | 'kept';
    try {
      result = await initToken({ module: h.module, label: h.tokenLabel, soPin: so, pin, ...(h.softhsm2Conf ? { softhsm2Conf: h.softhsm2Conf } : {}) });
      checkLogin(h, pin);
    } finally {
      pin.fill(0);
      so.fill(0);
    }
    return { token: h.tokenLabel, module: h.module, mode: 'new', token_state: result, sealed: ['/etc/pks/credentials/hsm-pin.sealed', '/etc/pks/credentials/hsm-so-pin.sealed'] };
  }),

  step('enrol', 'enrolment with the KMS: HSM keys, CSR, the KMS signature, MQTT credentials', async (ctx) => {
    const a = ctx.answers;
    const pin = await unseal(a, tpmOf(a), under(ctx, 'etc/pks/credentials/hsm-pin.sealed'));
    try {
      const tpm = tpmOf(a);
      return await enrol(a, ctx.root, pin, { seal: (b) => seal(tpm, b), unseal: (f) => unseal(a, tpm, f) });
    } finally {
      pin.fill(0);
    }
  }),

  step('smtp', 'SMTP and recipients, proven by a test mail', async (ctx) => {
    const a = ctx.answers;
    const s = a.smtp;
    const transport = nodemailer.createTransport({
      host: s.host,
      port: s.port,
      secure: false,
      requireTLS: s.starttls === 'required',
      ignoreTLS: s.starttls === 'off',
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      socketTimeout: 10_000,
      ...(s.caFile ? { tls: { ca: readFileSync(s.caFile, 'utf8') } } : {}),
    });
    let info;
    try {
      info = await transport.sendMail({
        from: s.from,
        to: s.to,
        subject: `PKS setup: test mail from box ${a.box} (${a.plant})`,
        text: `This is the test mail of pksctl setup on box ${a.box} in plant ${a.plant}.\nAlerts of this box will come to: ${s.to.join(', ')}.\n`,
      });
    } catch (e) {
      throw pksError('PKS_SETUP_STEP', `test mail through ${s.host}:${s.port} failed: ${String((e as Error).message).slice(0, 200)}`);
    } finally {
      transport.close();
    }
    if (info.rejected.length > 0) throw pksError('PKS_SETUP_STEP', `the SMTP server refused ${info.rejected.join(', ')}`);
    const record = { host: s.host, port: s.port, starttls: s.starttls, from: s.from, to: s.to, ...(s.caFile ? { caFile: s.caFile } : {}) };
    mkdirp(under(ctx, 'etc/pks'));
    writeFileDurably(under(ctx, 'etc/pks/mail.json'), JSON.stringify(record, null, 1) + '\n', 0o644);
    // the sentinel mails from its own config: where the box has one, its relay and recipients
    // become these (checked by the sentinel's own parser before the file is replaced)
    const sentinel = under(ctx, 'etc/pks/sentinel.json');
    const updated = existsSync(sentinel)
      ? updateJson(sentinel, (cur) => {
          const mail = { ...(cur.mail as Record<string, unknown>), host: s.host, port: s.port, secure: false, starttls: s.starttls, from: s.from, to: { warning: s.to, critical: s.to }, ...(s.caFile ? { caFile: s.caFile } : {}) };
          const next = { ...cur, mail };
          parseSentinelConfig(structuredClone(next), 'sentinel.json');
          return next;
        })
      : false;
    return { ...record, messageId: info.messageId, files: ['/etc/pks/mail.json', ...(updated ? ['/etc/pks/sentinel.json'] : [])] };
  }),

  step('testers', 'tester CA and the first testers', async (ctx) => {
    const t = ctx.answers.testers;
    mkdirp(under(ctx, 'etc/pks/tls'));
    writeFileDurably(under(ctx, 'etc/pks/tls/tester-ca.crt'), readFileSync(t.ca), 0o644);
    if (t.first.length > 0) {
      // the registry is the keystore's (durable, audited); tester-put is an upsert, so a resumed
      // step that registers a tester again changes nothing
      const ks = ipcClient(socketPath('keystore', 'pksctl', ctx.runDir), { timeoutMs: 10_000, connections: 1 });
      try {
        for (const x of t.first) await ks.call('tester-put', { cn: x.cn, station: x.station, pools: x.pools, expiresAt: new Date(x.expires).toISOString(), revoked: false });
      } catch (e) {
        const p = asPksError(e);
        if (p.code === 'PKS_IPC_UNAVAILABLE') throw pksError('PKS_SETUP_STEP', `the keystore is not running (${socketPath('keystore', 'pksctl', ctx.runDir)}): start it, then run setup again`);
        throw e;
      } finally {
        await ks.close();
      }
    }
    return { ca: '/etc/pks/tls/tester-ca.crt', testers: t.first.map((x) => `${x.cn}@${x.station}`) };
  }),

  step('pools', 'pools and quotas (keystore config)', async (ctx) => {
    const a = ctx.answers;
    const file = under(ctx, 'etc/pks/keystore.json');
    mkdirp(path.dirname(file));
    // checked against the keystore's own schema: the keystore never starts on a config it would refuse
    updateJson(
      file,
      (cur) => validateConfig(keystoreSchema, { ...cur, pools: a.pools, quotas: a.quotas }, 'keystore.json') as unknown as Record<string, unknown>,
      { boxId: a.box, dataDir: '/var/lib/pks/keystore/data', kmsCa: '/etc/pks/kms-ca.crt' },
    );
    return { pools: a.pools.map((p) => `${p.pool} (minimum ${p.minimum}, re-order ${p.reorder})`), quotas: a.quotas, file: '/etc/pks/keystore.json' };
  }),
];

/** For tests and the summary: the names in order. */
export const STEP_NAMES = STEPS.map((s) => s.name);
