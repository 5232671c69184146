// Every parser of outside input, as a fuzz target for the engine (engine.ts). Each calls the
// product's own entry point the way the service does on a message from outside:
//   batch-chunk     the uplink's check of a chunk on .../batch (re-order answers): JSON, then verifyChunk
//   mqtt-command    ops commands on .../cmd: verifyCommand (envelope, ops signature, payload, args)
//   mqtt-kms        acks, certificate and sync answers on .../ack|cert|sync: KmsAnswers (signature, body)
//   tester-api      request bodies over mTLS to the real tester API (schemas, handlers, keystore stub)
//   config          every service's config file through loadConfig (JSON, schema, freeze)
//   she             SHE messages: M4/M5 hex of a confirm, sheVerify, and M1..M3 at the strict simulator
//   unlock-token    the token format: decodeToken, signature check, and the ECU's 0x29 proof handling
//   doip            DoIP header + payload decode and the stream reassembly
//   isotp           ISO-TP frame decode (classic and FD), SocketCAN frames, UDS answer parsers
// Signed formats: an input starting with 0x00 is a payload text the harness signs with a key
// the parser trusts (so the fuzzer reaches what lies behind the signature check); any other
// input is the message as it arrives on the wire.
import fc from 'fast-check';
import { createSign, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadTrustAnchor, verifyChunk, type TrustAnchor } from '../../../appliance/batch-format.js';
import { loadConfig } from '../../../appliance/config.js';
import { DoipDecodeError, DoipStream, decodeHeader, decodePayload } from '../../../appliance/doip/codec.js';
import { isPksError } from '../../../appliance/errors.js';
import { parseJsonOr } from '../../../appliance/json.js';
import { decodeFrame } from '../../../appliance/isotp/frames.js';
import { decodeSocketCan } from '../../../appliance/isotp/socketcan.js';
import { parseHex, sheVerify } from '../../../appliance/she.js';
import { decodeToken, describeToken, tokenSignatureValid } from '../../../appliance/unlock-token.js';
import { parseChallenge, parseProof } from '../../../appliance/uds/auth.js';
import { expectPositive } from '../../../appliance/uds/codec.js';
import { SheEcu, SheError } from '../../../scripts/plant/ecu-sim.js';
import { UnlockEcu } from '../../../scripts/plant/ecu-unlock.js';
import { makeKmsPki } from '../../../scripts/plant/keystore.js';
import { keystoreSchema } from '../../../services/keystore/config.js';
import { sentinelSchema } from '../../../services/sentinel/config.js';
import { testerApiSchema } from '../../../services/tester-api/config.js';
import { unlockSchema } from '../../../services/unlock/config.js';
import { updaterSchema } from '../../../services/updater/config.js';
import { verifyCommand } from '../../../appliance/contracts/commands.js';
import { uplinkSchema } from '../../../services/uplink/config.js';
import { KmsAnswers } from '../../../services/uplink/kms-answers.js';
import { vaultSchema } from '../../../services/vault/config.js';
import { call, startRig, type Rig } from '../../tester-api/fixture.js';
import type { FuzzTarget } from './engine.js';

export const BOX_ID = 'box-fuzz-01';

interface Pki {
  dir: string;
  trust: TrustAnchor;
  signerKey: KeyObject;
  signerCert: string;
  opsKey: KeyObject;
  opsPub: KeyObject;
}
let pkiP: Promise<Pki> | undefined;
/** the KMS CA with its batch signer, and an ops key pair: made once per process */
function pki(): Promise<Pki> {
  return (pkiP ??= (async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-fuzz-pki-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    const kms = await makeKmsPki(dir);
    const ops = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return { dir, trust: loadTrustAnchor(readFileSync(kms.caCert, 'utf8')), signerKey: kms.signer.key, signerCert: kms.signer.certPem, opsKey: ops.privateKey, opsPub: ops.publicKey };
  })());
}

const sign = (key: KeyObject, text: string): string => createSign('sha256').update(text).sign(key).toString('base64');

/** 0x00 + payload: signed here with `key`; anything else: the wire message */
function signedOrRaw(input: Buffer, wrap: (payload: string) => Record<string, unknown>): Buffer {
  if (input[0] !== 0) return input;
  // the corpus holds no times: a committed seed would expire
  const payload = input.subarray(1).toString('utf8').replaceAll('"@now"', JSON.stringify(new Date().toISOString())).replaceAll('"@expires"', JSON.stringify(new Date(Date.now() + 3_600_000).toISOString()));
  return Buffer.from(JSON.stringify(wrap(payload)));
}

let p: Pki;
const needPki = async (): Promise<void> => {
  p = await pki();
};

const batchChunk: FuzzTarget = {
  name: 'batch-chunk',
  what: 'batch chunks (KMS re-order answers on .../batch): uplink JSON + verifyChunk',
  json: true,
  setup: needPki,
  run(input) {
    const raw = signedOrRaw(input, (payload) => ({ v: 1, payload, sig: sign(p.signerKey, payload), cert: p.signerCert }));
    const chunk = parseJsonOr('PKS_BATCH_INVALID', 'batch chunk', raw);
    const b = verifyChunk(chunk, p.trust, BOX_ID);
    return `${b.pool}:${b.records.length > 1 ? 'n' : '1'}`;
  },
};

const mqttCommand: FuzzTarget = {
  name: 'mqtt-command',
  what: 'ops commands on .../cmd: verifyCommand (envelope, ops signature, payload, arguments)',
  json: true,
  setup: needPki,
  run(input) {
    const raw = signedOrRaw(input, (payload) => ({ payload, sig: sign(p.opsKey, payload) }));
    return verifyCommand(raw, { opsKey: p.opsPub, boxId: BOX_ID, lastSeq: 3 }).command;
  },
};

let answers: KmsAnswers;
const KINDS = ['ack', 'cert', 'sync'] as const;
const mqttKms: FuzzTarget = {
  name: 'mqtt-kms',
  what: 'KMS answers on .../ack, .../cert, .../sync: signature, kind, box, body (KmsAnswers)',
  json: true,
  async setup() {
    await needPki();
    answers = new KmsAnswers(p.trust, BOX_ID);
  },
  run(input) {
    // the kind is the topic the message came on: from the payload's own claim when there is one
    const text = input.toString('utf8');
    const kind = KINDS.find((k) => text.includes(`\\"kind\\":\\"${k}\\"`) || text.includes(`"kind":"${k}"`)) ?? KINDS[input.length % 3]!;
    const raw = signedOrRaw(input, (payload) => ({ v: 1, payload, sig: sign(p.signerKey, payload), cert: p.signerCert }));
    answers[kind](raw);
    return kind;
  },
};

let rig: Rig;
const ROUTE_OF = [
  (_id: string) => ['POST', '/v1/she/packages', 'alice'],
  (id: string) => ['POST', `/v1/she/packages/${id}/confirm`, 'alice'],
  (id: string) => ['POST', `/v1/she/packages/${id}/fail`, 'alice'],
  (_id: string) => ['GET', '/v1/history', 'alice'],
  (_id: string) => ['POST', '/v1/ecu/certificates', 'ecu-station'],
  (_id: string) => ['POST', '/v1/she/packages', 'bob'],
] as const;
const clients = new Map<string, ReturnType<Rig['client']>>();
let lastPackage = 'none';
const testerApi: FuzzTarget = {
  name: 'tester-api',
  what: 'tester API request bodies over mTLS: route schemas, handlers, problems (keystore stub)',
  json: true,
  hangMs: 5000,
  async setup() {
    rig = await startRig({ limits: { requestsPerSecond: 100_000, burst: 100_000, newReservationsPerHour: 10_000_000 } });
  },
  async teardown() {
    clients.clear();
    await rig.close();
  },
  async run(input) {
    // first byte: the route; the rest: the body as sent (a GET takes it as the query string)
    const [method, url, who] = ROUTE_OF[(input[0] ?? 0) % ROUTE_OF.length]!(lastPackage);
    let c = clients.get(who);
    if (!c) clients.set(who, (c = rig.client(who)));
    const body = input.subarray(1).toString('utf8');
    const r = await call(c, method as 'GET' | 'POST', method === 'GET' ? `${url}?${encodeURIComponent(body).slice(0, 2000)}` : url, method === 'GET' ? undefined : body);
    rig.stub.calls.length = 0;
    if (r.status === 200 && r.body?.packageId) lastPackage = r.body.packageId;
    // a clean refusal is a coded problem; a 500 or an answer without our code is a crash
    if (r.status >= 500 && r.body?.code !== 'PKS_KEYSTORE_UNAVAILABLE') throw new Error(`HTTP ${r.status}: ${r.text.slice(0, 200)}`);
    if (r.status >= 400 && !/^PKS_[A-Z0-9_]+$/.test(String(r.body?.code))) throw new Error(`HTTP ${r.status} without a code: ${r.text.slice(0, 200)}`);
    if (r.status >= 400) return `${r.status}:${r.body.code}`;
    return String(r.status);
  },
};

const CONFIGS = [
  ['vault', vaultSchema],
  ['keystore', keystoreSchema],
  ['tester-api', testerApiSchema],
  ['uplink', uplinkSchema],
  ['sentinel', sentinelSchema],
  ['unlock', unlockSchema],
  ['updater', updaterSchema],
] as const;
let cfgDir = '';
const config: FuzzTarget = {
  name: 'config',
  what: "every service's config file through loadConfig (read, JSON, schema with defaults, freeze)",
  json: true,
  async setup() {
    cfgDir = mkdtempSync(path.join(process.env.PKS_FUZZ_TMP ?? '/dev/shm', 'pks-fuzz-cfg-'));
  },
  async teardown() {
    rmSync(cfgDir, { recursive: true, force: true });
  },
  run(input) {
    // first line names the service (as the file name would); the rest is the file
    const nl = input.indexOf(0x0a);
    const name = nl > 0 ? input.subarray(0, nl).toString('latin1') : '';
    const [service, schema] = CONFIGS.find(([s]) => s === name) ?? CONFIGS[input.length % CONFIGS.length]!;
    const file = path.join(cfgDir, `${service}.json`);
    writeFileSync(file, nl > 0 ? input.subarray(nl + 1) : input);
    loadConfig(schema, file);
    return service;
  },
};

// the strict SHE simulator with a known master key, and the box's own checks of a proof
const SHE_MASTER = Buffer.alloc(16, 0x42);
const SHE_UID = Buffer.from('0102030405060708090a0b0c0d0e0f', 'hex');
const she: FuzzTarget = {
  name: 'she',
  what: 'SHE messages: M4/M5 hex of a confirm (parseHex), sheVerify, M1..M3 at the strict simulator',
  clean: (e) => isPksError(e) || e instanceof SheError,
  arbitrary: fc.uint8Array({ minLength: 64, maxLength: 64 }).map((b) => Uint8Array.from([0x01, ...b])),
  run(input) {
    const mode = (input[0] ?? 0) % 3;
    const b = input.subarray(1);
    if (mode === 0) {
      // a tester's confirm body as text: "m4hex m5hex"
      const [m4, m5] = b.toString('latin1').split(' ');
      const m4b = parseHex(m4, 32, 'm4');
      const m5b = parseHex(m5, 16, 'm5');
      return String(sheVerify({ uid: SHE_UID, keyId: 4, authKeyId: 1, authKey: SHE_MASTER, newKey: Buffer.alloc(16, 7), counter: 1, flags: 0 }, m4b, m5b));
    }
    if (mode === 1) {
      // M1 | M2 | M3 as the ECU receives them (lengths as they come)
      const ecu = new SheEcu(SHE_UID, SHE_MASTER);
      const m1 = b.subarray(0, 16);
      const m2 = b.subarray(16, 48);
      const m3 = b.subarray(48);
      ecu.loadKey(m1, m2, m3);
      return 'loaded';
    }
    // sheVerify with proofs of any length (the vault's she-verify is called with what the tester sent)
    return String(sheVerify({ uid: SHE_UID, keyId: 4, authKeyId: 1, authKey: SHE_MASTER, newKey: Buffer.alloc(16, 7), counter: 1, flags: 0 }, b.subarray(0, 32), b.subarray(32)));
  },
};

let tokenKey: { pub: Buffer; priv: KeyObject };
let ecuUnlock: UnlockEcu;
const unlockToken: FuzzTarget = {
  name: 'unlock-token',
  what: 'unlock tokens: decodeToken, signature check, and the ECU simulator taking a 0x29 proof',
  clean: (e) => isPksError(e),
  async setup() {
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    tokenKey = { pub: k.publicKey.export({ type: 'spki', format: 'der' }), priv: k.privateKey };
    ecuUnlock = new UnlockEcu('bcm', Buffer.alloc(15, 1), [tokenKey.pub]);
  },
  run(input) {
    if (input[0] === 0x29) {
      // a whole UDS request to the ECU: it answers a positive or a negative response, never throws
      const a = ecuUnlock.handle(input);
      if (a.length < 2 || (a[0] !== 0x7f && a[0] !== 0x69) || (a[0] === 0x7f && a.length !== 3)) throw new Error(`malformed UDS answer ${a.toString('hex')}`);
      return a[0] === 0x7f ? `nrc:${a[2]}` : 'positive';
    }
    const t = decodeToken(input);
    describeToken(t);
    return String(tokenSignatureValid(t, tokenKey.pub));
  },
};

const doip: FuzzTarget = {
  name: 'doip',
  what: 'DoIP frames: header + payload decode, and the stream reassembly over any cut',
  clean: (e) => e instanceof DoipDecodeError || isPksError(e),
  run(input) {
    let label = 'stream';
    try {
      const h = decodeHeader(input, 4096);
      decodePayload(h, input.subarray(8, 8 + h.length));
      label = `type:${h.type}`;
    } catch (e) {
      if (!(e instanceof DoipDecodeError || isPksError(e))) throw e;
    }
    let streamError: unknown;
    const s = new DoipStream(256, { message: () => {}, error: (e) => (streamError ??= e) });
    const cut = 1 + (input[input.length - 1] ?? 0) % 9;
    for (let off = 0; off < input.length; off += cut) s.push(input.subarray(off, off + cut));
    if (streamError && !(streamError instanceof DoipDecodeError)) throw streamError;
    return label;
  },
};

const isotp: FuzzTarget = {
  name: 'isotp',
  what: 'ISO-TP frames (classic, FD), SocketCAN frames, UDS answers (positive check, 0x29 challenge and proof)',
  run(input) {
    const mode = (input[0] ?? 0) % 4;
    const b = input.subarray(1);
    if (mode === 0) return decodeFrame({ fd: false, txDl: 8 }, b).kind;
    if (mode === 1) return decodeFrame({ fd: true, txDl: 64 }, b).kind;
    if (mode === 2) {
      decodeSocketCan(b);
      return 'can';
    }
    // each parser on its own (the request is ours, never empty): a coded refusal of one must not hide another's crash
    let refused = 0;
    for (const f of [() => expectPositive(Buffer.from([b[0] || 0x29]), b.subarray(1), 3), () => parseChallenge(b), () => parseProof(b)]) {
      try {
        f();
      } catch (e) {
        if (!isPksError(e)) throw e;
        refused++;
      }
    }
    return `uds:${refused}`;
  },
};

export const TARGETS: readonly FuzzTarget[] = [batchChunk, mqttCommand, mqttKms, testerApi, config, she, unlockToken, doip, isotp];

export const targetNamed = (name: string): FuzzTarget => {
  const t = TARGETS.find((x) => x.name === name);
  if (!t) throw new Error(`no fuzz target ${name}`);
  return t;
};
