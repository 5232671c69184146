// pksctl setup (issue 16 §1) against the real parts: swtpm with an EK certificate (AK, sealed
// PINs), SoftHSM2 through PKCS#11 (a new token from the sealed PINs), the test SMTP server with
// STARTTLS (the test mail), a running keystore (the first testers), systemd-analyze (network and
// time files). An answer-file run, a second run that changes nothing, bad answers that change
// nothing, a kill -9 mid-setup that resumes, and a scripted interactive run under tmux.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pkcs11js from 'pkcs11js';
import { readPcrs } from '../../services/attest/measure.js';
import { decodeBlob, signPcr11Policies, unsealFile } from '../../services/attest/seal.js';
import { makeCa } from '../../scripts/plant/pki.js';
import { makeKmsPki, startKeystore, type KeystoreHandle } from '../../scripts/plant/keystore.js';
import { ROOT } from '../../scripts/plant/process.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp.js';
import { startSwtpm, type Swtpm } from '../attest/swtpm.js';
import { startBroker, type TestBroker } from '../../scripts/plant/broker.js';
import { startKms, type TestKms } from '../../scripts/plant/kms.js';
import { writePlantSentinelConfig } from '../../services/sentinel/plant-config.js';

const run = promisify(execFile);
const MODULE = process.env.PKCS11_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';
const POOL = 'oem1.bcm.key4';

interface Ctx {
  base: string;
  tpm: Swtpm;
  smtp: TestSmtp;
  ks: KeystoreHandle;
  runDir: string;
  pubkey: string;
  privkey: string;
  policy: string;
  testerCa: string;
  smtpCa: string;
  broker: TestBroker;
  kms: TestKms;
}

const t = suite<Ctx>('pksctl setup');

t.before(async (c) => {
  c.base = mkdtempSync(path.join(os.tmpdir(), 'pks-setup-'));
  c.tpm = await startSwtpm({ ekCert: true });
  const key = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  c.pubkey = path.join(c.base, 'pcr-signing.pem');
  c.privkey = key.privateKey;
  writeFileSync(c.pubkey, key.publicKey);
  // the image build's signature for the PCR 11 value this (firmware-less) TPM shows
  const live = (await readPcrs([11], c.tpm.tcti)).get(11)!;
  c.policy = path.join(c.base, 'pcr11-policy.json');
  writeFileSync(c.policy, JSON.stringify(signPcr11Policies([live], key.privateKey)));
  c.smtp = await startSmtp({ starttls: true });
  c.smtpCa = path.join(c.base, 'smtp-ca.pem');
  writeFileSync(c.smtpCa, c.smtp.ca!);
  c.testerCa = (await makeCa(path.join(c.base, 'pki'), 'tester-ca')).cert;
  c.broker = await startBroker();
  c.kms = await startKms(c.broker, path.join(c.base, 'kms'));
  const kms = await makeKmsPki(path.join(c.base, 'kms-pki'));
  c.runDir = path.join(c.base, 'run');
  mkdirSync(path.join(c.base, 'logs'), { recursive: true });
  c.ks = await startKeystore({ dir: path.join(c.base, 'keystore'), runDir: c.runDir, logDir: path.join(c.base, 'logs'), boxId: 'box-setup-1', kmsCa: kms.caCert, pools: [{ pool: POOL, minimum: 1, reorder: 10 }] });
});

t.after(async (c) => {
  await c.ks?.stop();
  await c.kms?.stop();
  await c.broker?.stop();
  await c.smtp?.stop();
  await c.tpm?.stop();
  if (!process.env.PKS_KEEP_TMP) await rm(c.base, { recursive: true, force: true });
});

/** A fresh root and an empty SoftHSM (one free slot) per run. */
function fresh(c: Ctx, name: string): { root: string; conf: string; tokens: string } {
  const dir = path.join(c.base, name);
  const root = path.join(dir, 'root');
  const tokens = path.join(dir, 'tokens');
  execFileSync('mkdir', ['-p', root, tokens]);
  const conf = path.join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  return { root, conf, tokens };
}

function answers(c: Ctx, conf: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    v: 1,
    plant: 'plant-ingolstadt',
    box: 'box-setup-1',
    network: { interface: 'eth0', mode: 'static', address: '10.20.0.5/24', gateway: '10.20.0.1', dns: ['10.20.0.1'], testerVlan: { id: 120, address: '10.120.0.1/24' } },
    time: { ntp: ['ntp1.plant.example', '10.20.0.1'] },
    tpm: { tcti: c.tpm.tcti, pcrSigningKey: c.pubkey, signedPolicy: c.policy },
    hsm: { module: MODULE, tokenLabel: 'pks-box-setup-1', mode: 'new', softhsm2Conf: conf },
    kms: { enrolSocket: c.kms.socket, caFile: c.kms.caCert, broker: { host: '127.0.0.1', port: c.broker.port, caFile: c.broker.caCert } },
    smtp: { host: '127.0.0.1', port: c.smtp.port, starttls: 'required', from: 'pks-box-setup-1@plant.example', to: ['it@plant.example', 'line@plant.example'], caFile: c.smtpCa },
    testers: { ca: c.testerCa, first: [{ cn: 'eol-07', station: 'line3-eol', pools: [POOL], expires: '2030-01-01T00:00:00Z' }] },
    pools: [{ pool: POOL, minimum: 100, reorder: 500 }],
    quotas: { openPerTester: 4, testerPerHour: 300, poolPerHour: 9000 },
    ...over,
  };
}

interface Result {
  code: number | null;
  out: string;
  err: string;
}

function pksctl(c: Ctx, args: string[], env: Record<string, string> = {}): { done: Promise<Result>; pid: number; onErr: (re: RegExp) => Promise<void> } {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'pksctl.mjs'), ...args], { env: { ...process.env, PKS_RUN_DIR: c.runDir, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => {
    err += b.toString();
    for (const w of waiters) if (w.re.test(err)) w.resolve();
  });
  const done = new Promise<Result>((resolve) => child.on('close', (code) => resolve({ code, out, err })));
  return {
    done,
    pid: child.pid!,
    onErr: (re) => new Promise<void>((resolve, reject) => {
      if (re.test(err)) return resolve();
      waiters.push({ re, resolve });
      void done.then(() => reject(new Error(`exited before ${re}: ${err}`)));
    }),
  };
}

const writeAnswers = (dir: string, a: unknown): string => {
  const f = path.join(dir, 'answers.json');
  writeFileSync(f, JSON.stringify(a, null, 1));
  return f;
};

const tokenLabels = (conf: string): string[] => {
  const p11 = new pkcs11js.PKCS11();
  process.env.SOFTHSM2_CONF = conf;
  p11.load(MODULE);
  p11.C_Initialize();
  try {
    return p11.C_GetSlotList(true).map((s) => p11.C_GetTokenInfo(s)).filter((i) => i.flags & pkcs11js.CKF_TOKEN_INITIALIZED).map((i) => i.label.trim());
  } finally {
    p11.C_Finalize();
  }
};

const walk = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => path.join(d.parentPath, d.name)) : []);

async function unsealed(c: Ctx, root: string, name: string): Promise<Buffer> {
  const { parseSignedPolicyFile } = await import('../../services/attest/seal.js');
  return unsealFile({ tcti: c.tpm.tcti, blob: decodeBlob(readFileSync(path.join(root, 'etc/pks/credentials', name), 'utf8')), publicKeyPem: readFileSync(c.pubkey, 'utf8'), signed: parseSignedPolicyFile(JSON.parse(readFileSync(c.policy, 'utf8'))) });
}

t('answer-file run: every step done, checked by the real parts; a second run changes nothing', async (c) => {
  const { root, conf } = fresh(c, 'file');
  const mails = c.smtp.mails.length;
  // a box whose first boot already wrote the sentinel's config: setup gives it the plant's relay
  await writePlantSentinelConfig({ dir: path.join(root, 'etc/pks'), boxId: 'box-setup-1', smtpPort: 2525 });
  const file = writeAnswers(path.dirname(root), answers(c, conf));
  const r = await pksctl(c, ['setup', '--answers', file, '--root', root]).done;
  assert.is(r.code, 0, r.err + r.out);
  assert.match(r.out, 'setup of box box-setup-1 in plant plant-ingolstadt: done');
  assert.match(r.out, 'pksctl status:');
  // network and time, as systemd reads them
  const net = readFileSync(path.join(root, 'etc/systemd/network/10-pks-plant.network'), 'utf8');
  assert.match(net, /\[Match\]\nName=eth0\n/);
  assert.match(net, /Address=10\.20\.0\.5\/24\nGateway=10\.20\.0\.1\nDNS=10\.20\.0\.1\n/);
  assert.match(net, /VLAN=pks-tester/);
  assert.match(readFileSync(path.join(root, 'etc/systemd/network/20-pks-tester.netdev'), 'utf8'), /Kind=vlan\n\n\[VLAN\]\nId=120\n/);
  const cat = await run('systemd-analyze', ['cat-config', `--root=${root}`, 'systemd/timesyncd.conf']);
  assert.match(cat.stdout, 'NTP=ntp1.plant.example 10.20.0.1');
  // the HSM token exists and opens with the PIN that comes out of the TPM
  assert.equal(tokenLabels(conf), ['pks-box-setup-1']);
  const pin = await unsealed(c, root, 'hsm-pin.sealed');
  assert.ok(/^[0-9a-f]{32}$/.test(pin.toString()), 'a random 16-byte PIN');
  assert.not.match(JSON.stringify(walk(root).map((f) => readFileSync(f, 'latin1'))), pin.toString(), 'the clear PIN is in no file');
  assert.ok(existsSync(path.join(root, 'var/lib/pks/attest/ak-public.tss')));
  // the updater's version floor: a TPM NV counter, defined by setup (issue 12, item 4)
  const { readVersionCounter } = await import('../../services/attest/counter.js');
  assert.ok((await readVersionCounter(c.tpm.tcti)) >= 1n, 'version floor defined');
  // enrolled: the KMS pinned the box's HSM keys and issued its MQTT certificate (the broker took it)
  const pinned = await c.kms.fleet.call<{ boxId: string; events: { type: string }[] }>('box', { boxId: 'box-setup-1' });
  assert.ok(pinned.events.some((e) => e.type === 'enrolled'));
  assert.match(readFileSync(path.join(root, 'etc/pks/uplink/mqtt-client.crt'), 'utf8'), 'BEGIN CERTIFICATE');
  assert.match(r.out, /accepted the credentials/);
  // the MQTT key only sealed (issue 12): no private key in clear anywhere under the root, and
  // the sealed one opens to the key the broker just accepted
  assert.not.ok(existsSync(path.join(root, 'etc/pks/credentials/mqtt-key')), 'no clear MQTT key');
  assert.match((await unsealed(c, root, 'mqtt-key.sealed')).toString(), 'BEGIN PRIVATE KEY');
  assert.equal(walk(root).filter((f) => readFileSync(f, 'latin1').includes('PRIVATE KEY')), [], 'no clear private key in any file');
  // the test mail arrived over STARTTLS at every recipient
  assert.is(c.smtp.mails.length, mails + 1);
  const m = c.smtp.mails.at(-1)!;
  assert.equal(m.to, ['it@plant.example', 'line@plant.example']);
  assert.ok(m.secure, 'STARTTLS');
  assert.match(m.subject, 'PKS setup: test mail from box box-setup-1');
  const sentinel = JSON.parse(readFileSync(path.join(root, 'etc/pks/sentinel.json'), 'utf8'));
  assert.equal([sentinel.mail.port, sentinel.mail.starttls, sentinel.mail.caFile, sentinel.mail.to.critical], [c.smtp.port, 'required', c.smtpCa, ['it@plant.example', 'line@plant.example']]);
  // the first tester is in the keystore's registry; pools and quotas in the keystore's config
  const testers = await c.ks.client('pksctl').call<{ items: { cn: string; pools: string[] }[] }>('tester-list');
  assert.ok(testers.items.some((x) => x.cn === 'eol-07' && x.pools.includes(POOL)));
  const ks = JSON.parse(readFileSync(path.join(root, 'etc/pks/keystore.json'), 'utf8'));
  assert.equal(ks.pools, [{ pool: POOL, minimum: 100, reorder: 500 }]);
  assert.equal(ks.quotas, { openPerTester: 4, testerPerHour: 300, poolPerHour: 9000 });

  const again = await pksctl(c, ['setup', '--answers', file, '--root', root, '--no-status']).done;
  assert.is(again.code, 0, again.err);
  assert.is((again.out.match(/\(done before\)/g) ?? []).length, 8);
  assert.is(c.smtp.mails.length, mails + 1, 'no second test mail');
});

t('bad answers: a clear coded message naming the answer, nothing changed', async (c) => {
  const { root, conf, tokens } = fresh(c, 'bad');
  const mails = c.smtp.mails.length;
  const good = answers(c, conf);
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['unknown key', { ...good, colour: 'blue' }, /unknown key 'colour'/],
    ['VLAN id out of range', { ...good, network: { interface: 'eth0', mode: 'dhcp', testerVlan: { id: 5000, address: '10.1.0.1/24' } } }, /network\.testerVlan\.id/],
    ['static without address', { ...good, network: { interface: 'eth0', mode: 'static' } }, /network\.address/],
    ['address that is no address', { ...good, network: { interface: 'eth0', mode: 'static', address: '10.300.0.1/24' } }, /network\.address/],
    ['a newline smuggled into a name', { ...good, box: 'box\n[Network]' }, /key 'box'/],
    ['tester given a pool not set up', { ...good, testers: { ca: c.testerCa, first: [{ cn: 'eol-1', station: 's', pools: ['oem9.x.key1'], expires: '2030-01-01T00:00:00Z' }] } }, /not in pools/],
    ['tester CA that is no CA', { ...good, testers: { ca: c.pubkey, first: [] } }, /testers\.ca .* is not a PEM certificate/],
    ['missing tester CA', { ...good, testers: { ca: '/nonexistent/ca.crt', first: [] } }, /testers\.ca \/nonexistent\/ca\.crt does not exist/],
    ['join without a PIN file', { ...good, hsm: { module: MODULE, mode: 'join', softhsm2Conf: conf } }, /hsm\.pinFile/],
    ['recipient that is no address', { ...good, smtp: { ...(good.smtp as object), to: ['nobody'] } }, /smtp\.to/],
  ];
  for (const [what, a, re] of cases) {
    const r = await pksctl(c, ['setup', '--answers', writeAnswers(path.dirname(root), a), '--root', root]).done;
    assert.is(r.code, 2, `${what}: ${r.err}`);
    assert.match(r.err, /PKS_SETUP_ANSWERS/, what);
    assert.match(r.err, re, what);
  }
  const notJson = path.join(path.dirname(root), 'answers.json');
  writeFileSync(notJson, '{"v": 1,');
  const r = await pksctl(c, ['setup', '--answers', notJson, '--root', root]).done;
  assert.match(r.err, /PKS_SETUP_ANSWERS: .*is not JSON/);
  assert.equal(walk(root), [], 'no file under the root');
  assert.equal(walk(tokens), [], 'no token');
  assert.is(c.smtp.mails.length, mails, 'no mail');
});

t('joining an existing token: its PIN from a file opens it, is sealed, the clear file goes; a wrong PIN is refused', async (c) => {
  const { makeToken } = await import('../helpers/softhsm.js');
  const token = await makeToken('pks-existing');
  try {
    const { root } = fresh(c, 'join');
    const pinFile = path.join(path.dirname(root), 'user-pin');
    writeFileSync(pinFile, 'wrong-pin\n', { mode: 0o600 });
    const hsm = { module: MODULE, tokenLabel: 'pks-existing', mode: 'join', pinFile, softhsm2Conf: token.conf };
    const file = writeAnswers(path.dirname(root), answers(c, token.conf, { box: 'box-join', hsm, testers: { ca: c.testerCa, first: [] } }));
    const bad = await pksctl(c, ['setup', '--answers', file, '--root', root, '--no-status']).done;
    assert.is(bad.code, 1, bad.err);
    assert.match(bad.err, /PKS_HSM_LOGIN: step hsm: the user PIN does not open token 'pks-existing'/);
    assert.ok(existsSync(pinFile), 'the PIN file stays while it opens nothing');
    assert.not.ok(existsSync(path.join(root, 'etc/pks/credentials/hsm-pin.sealed')), 'nothing sealed');
    // plant IT puts the right PIN in the file and runs setup again: it resumes at the HSM step
    writeFileSync(pinFile, `${token.pin}\n`, { mode: 0o600 });
    const r = await pksctl(c, ['setup', '--root', root, '--no-status']).done;
    assert.is(r.code, 0, r.err + r.out);
    assert.not.ok(existsSync(pinFile), 'the clear PIN file is gone');
    assert.is((await unsealed(c, root, 'hsm-pin.sealed')).toString(), token.pin);
    assert.not.ok(existsSync(path.join(root, 'etc/pks/credentials/hsm-so-pin.sealed')), 'a joined token has no SO PIN of ours');
  } finally {
    await token.cleanup();
  }
});

t('the KMS pins nothing for an enrolment whose CSR the identity key did not endorse', async (c) => {
  const { makeCsr } = await import('../../services/uplink/identity.js');
  const spki = (): string => generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  const csr = await makeCsr('box-forged');
  const err = await c.kms.fleet.call('enrol', { boxId: 'box-forged', identity: spki(), transport: spki(), audit: spki(), csr: csr.csrPem, endorsement: Buffer.alloc(64, 1).toString('base64') }).catch((e: { code?: string }) => e);
  assert.is((err as { code?: string }).code, 'PKS_CSR_INVALID');
  const box = await c.kms.fleet.call('box', { boxId: 'box-forged' }).catch((e: { code?: string }) => e);
  assert.is((box as { code?: string }).code, 'PKS_NOT_FOUND', 'not registered');
});

t('kill -9 between sealing the PINs and initialising the token: the next run resumes there', async (c) => {
  const { root, conf } = fresh(c, 'cut');
  const file = writeAnswers(path.dirname(root), answers(c, conf, { box: 'box-cut', testers: { ca: c.testerCa, first: [] } }));
  const p = pksctl(c, ['setup', '--answers', file, '--root', root, '--no-status'], { PKS_SETUP_TEST_PAUSE: 'hsm:sealed' });
  await p.onErr(/paused at hsm:sealed/);
  process.kill(p.pid, 'SIGKILL');
  await p.done;
  assert.ok(existsSync(path.join(root, 'etc/pks/credentials/hsm-pin.sealed')), 'PINs sealed');
  assert.equal(tokenLabels(conf), [], 'no token yet');
  const journal = JSON.parse(readFileSync(path.join(root, 'var/lib/pks/setup/journal.json'), 'utf8'));
  assert.ok(journal.steps.tpm.doneAt && !journal.steps.hsm.doneAt);
  // resumed without --answers: the journal's answers, the steps before not run again
  const r = await pksctl(c, ['setup', '--root', root, '--no-status']).done;
  assert.is(r.code, 0, r.err + r.out);
  assert.match(r.out, 'resuming the setup');
  assert.match(r.out, 'ok plant and box names (done before)');
  assert.match(r.out, 'ok TPM: endorsement key certificate and attestation key (done before)');
  assert.match(r.out, /HSM token and its PINs sealed to the TPM \(resumed, 2 runs\)/);
  assert.equal(tokenLabels(conf), ['pks-box-setup-1']);
  // other answers against a started journal are refused, and change nothing
  const other = writeAnswers(path.dirname(root), answers(c, conf, { box: 'box-cut', plant: 'plant-other', testers: { ca: c.testerCa, first: [] } }));
  const refused = await pksctl(c, ['setup', '--answers', other, '--root', root]).done;
  assert.is(refused.code, 2);
  assert.match(refused.err, /PKS_SETUP_RESUME/);
  assert.match(readFileSync(path.join(root, 'etc/pks/site.json'), 'utf8'), 'plant-ingolstadt');
});

t('interactive run under tmux: prompts, defaults, an invalid answer refused at once', async (c) => {
  const { root, conf } = fresh(c, 'tty');
  const sock = `pks-setup-${process.pid}`;
  const script = path.join(path.dirname(root), 'run.sh');
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  writeFileSync(
    script,
    `#!/bin/sh\nexport PKS_RUN_DIR=${q(c.runDir)} NO_COLOR=1\n` +
      `${q(process.execPath)} ${q(path.join(ROOT, 'bin', 'pksctl.mjs'))} setup --root ${q(root)} --no-status\necho "SETUP-EXIT=$?"\nsleep 120\n`,
    { mode: 0o755 },
  );
  const tmux = (...a: string[]): Promise<{ stdout: string }> => run('tmux', ['-L', sock, ...a]);
  await tmux('new-session', '-d', '-s', 'setup', '-x', '200', '-y', '50', script);
  const screen = async (): Promise<string> => (await tmux('capture-pane', '-p', '-t', 'setup', '-S', '-200')).stdout;
  const waitScreen = async (text: string, ms = 60_000): Promise<string> => {
    const end = Date.now() + ms;
    for (;;) {
      const s = await screen();
      if (s.includes(text)) return s;
      if (Date.now() > end) throw new Error(`no '${text}' on the screen:\n${s}`);
      await new Promise((r) => setTimeout(r, 150));
    }
  };
  const answer = async (prompt: string, ...keys: string[]): Promise<void> => {
    await waitScreen(prompt);
    for (const k of keys) await tmux('send-keys', '-t', 'setup', ...(k === 'Enter' || k === 'Down' || k === 'BSpace' ? [k] : ['-l', k]));
    await new Promise((r) => setTimeout(r, 200));
  };
  try {
    await answer('Plant name', 'plant-tty', 'Enter');
    // a box name with a blank is refused at once, with the rule; then corrected
    await answer('Box name', 'bad box', 'Enter');
    await waitScreen('invalid: must match pattern');
    await answer('Box name', ...Array(8).fill('BSpace'), 'box-tty', 'Enter');
    await answer('Plant network', 'Enter'); // DHCP, the first option
    await answer('Plant interface', 'Enter'); // default eth0
    await answer('A VLAN for the tester network?', 'Enter'); // yes
    await answer('Tester VLAN id', 'Enter'); // default 100
    await answer('Tester network address/prefix', '10.100.0.1/24', 'Enter');
    await answer('NTP servers', '10.0.0.1, ntp.plant.example', 'Enter');
    await answer('TPM (TCTI)', c.tpm.tcti, 'Enter');
    await answer('Image PCR signing public key', c.pubkey, 'Enter');
    await answer('Signed PCR 11 policies', c.policy, 'Enter');
    await answer('PKCS#11 module', 'Enter');
    await answer('Token label', 'Enter'); // pks-box-tty
    await answer('HSM token', 'Enter'); // new
    await answer('SoftHSM config file', conf, 'Enter');
    await answer('KMS enrolment socket', c.kms.socket, 'Enter');
    await answer('KMS CA certificate', c.kms.caCert, 'Enter');
    await answer('MQTT broker host', '127.0.0.1', 'Enter');
    await answer('MQTT broker port', String(c.broker.port), 'Enter');
    await answer('MQTT broker CA certificate', c.broker.caCert, 'Enter');
    await answer('SMTP relay', '127.0.0.1', 'Enter');
    await answer('SMTP port', String(c.smtp.port), 'Enter');
    await answer('STARTTLS', 'Enter'); // required
    await answer('Sender address', 'Enter');
    await answer('Alert recipients', 'ops@plant.example', 'Enter');
    await answer('CA of the SMTP relay', c.smtpCa, 'Enter');
    await answer('Tester CA certificate', c.testerCa, 'Enter');
    await answer('Pools (OEM.TYPE.SLOT', `${POOL}:50:200`, 'Enter');
    await answer('Register a first tester?', 'y', 'Enter');
    await answer('Tester certificate CN', 'eol-tty', 'Enter');
    await answer('Station', 'line9', 'Enter');
    await answer('Pools for it', 'Enter');
    await answer('Grant until', 'Enter');
    await answer('Another tester?', 'Enter'); // no
    await answer('Open reservations per tester', 'Enter');
    await answer('New keys per hour per tester', 'Enter');
    await answer('New keys per hour per pool', 'Enter');
    await answer('Set up box box-tty in plant plant-tty now?', 'Enter');
    const s = await waitScreen('SETUP-EXIT=', 120_000);
    assert.match(s, 'SETUP-EXIT=0');
    assert.match(s, 'setup of box box-tty in plant plant-tty: done');
  } finally {
    await tmux('kill-server').catch(() => undefined);
  }
  assert.match(readFileSync(path.join(root, 'etc/systemd/network/10-pks-plant.network'), 'utf8'), 'DHCP=ipv4');
  assert.match(readFileSync(path.join(root, 'etc/systemd/network/21-pks-tester.network'), 'utf8'), 'Address=10.100.0.1/24');
  const ks = JSON.parse(readFileSync(path.join(root, 'etc/pks/keystore.json'), 'utf8'));
  assert.equal(ks.pools, [{ pool: POOL, minimum: 50, reorder: 200 }]);
  assert.equal(ks.quotas, { openPerTester: 8, testerPerHour: 500, poolPerHour: 20000 });
  const testers = await c.ks.client('pksctl').call<{ items: { cn: string; station: string }[] }>('tester-list');
  assert.ok(testers.items.some((x) => x.cn === 'eol-tty' && x.station === 'line9'));
  assert.equal(tokenLabels(conf), ['pks-box-tty']);
});

t.run();
