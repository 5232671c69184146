// A real TPM 2.0 for tests: swtpm on loopback TCP, reached by tpm2-tools through the swtpm TCTI.
// Each test gets its own state directory and process; stop() kills it by PID and removes the state.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../helpers/ports.js';

export interface Swtpm {
  readonly tcti: string;
  /** the state directory (the TPM's NV: seeds, NV indices), kept across restart() */
  readonly dir: string;
  stop(): Promise<void>;
  /** a reboot: orderly TPM2_Shutdown, process gone, started again on the same state and port (PCRs reset) */
  restart(): Promise<void>;
  /** a power cut: no TPM2_Shutdown, the process SIGKILLed and started again (the TPM sees an unorderly shutdown) */
  powerCut(): Promise<void>;
  /** SIGSTOP / SIGCONT: a TPM that takes its time (commands wait, nothing is lost) */
  pause(): void;
  resume(): void;
  /** with { ekCert: true }: the PEMs of the swtpm local CA (root, issuer) that signed the EK certificate */
  readonly ekCaPems: string[];
}

/**
 * A TPM as a vendor ships it: swtpm_setup creates the EK and its certificate, signed by a local
 * CA (swtpm_localca) whose state lives in `caDir`, so that several TPMs of one "vendor" share it.
 */
async function manufacture(dir: string, caDir: string): Promise<string[]> {
  await mkdir(caDir, { recursive: true });
  const conf = path.join(dir, '..', `${path.basename(dir)}-setup.conf`);
  const caConf = path.join(caDir, 'localca.conf');
  await writeFile(caConf, `statedir = ${caDir}\nsigningkey = ${caDir}/signkey.pem\nissuercert = ${caDir}/issuercert.pem\ncertserial = ${caDir}/certserial\n`);
  await writeFile(path.join(caDir, 'localca.options'), '--platform-manufacturer PKS-test\n--platform-version 2.1\n--platform-model swtpm\n');
  await writeFile(conf, `create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = ${caConf}\ncreate_certs_tool_options = ${caDir}/localca.options\n`);
  await new Promise<void>((resolve, reject) =>
    execFile('swtpm_setup', ['--tpm2', '--tpmstate', dir, '--create-ek-cert', '--lock-nvram', '--pcr-banks', 'sha256', '--overwrite', '--config', conf], { timeout: 60_000 }, (e, _o, err) =>
      e ? reject(new Error(`swtpm_setup: ${err}`)) : resolve(),
    ),
  );
  await rm(conf, { force: true });
  return Promise.all(['swtpm-localca-rootca-cert.pem', 'issuercert.pem'].map((f) => readFile(path.join(caDir, f), 'utf8')));
}

const listening = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

function spawnOn(dir: string, port: number): ChildProcess {
  // the swtpm TCTI talks to the control channel on port + 1
  return spawn(
    'swtpm',
    ['socket', '--tpm2', '--tpmstate', `dir=${dir}`, '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`, '--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`, '--flags', 'not-need-init,startup-clear'],
    { stdio: 'ignore' },
  );
}

async function up(child: ChildProcess, port: number): Promise<boolean> {
  let exited = child.exitCode !== null;
  child.once('exit', () => (exited = true));
  // up to 15 s: a first start under two busy test files can take more than the 5 s this had
  for (let i = 0; i < 150 && !exited; i++) {
    if (await listening(port)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
  const gone = new Promise((r) => child.once('exit', r));
  process.kill(child.pid, 'SIGTERM');
  await gone;
}

export async function startSwtpm(opts: { ekCert?: boolean; caDir?: string } = {}): Promise<Swtpm> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-swtpm-'));
  const ekCaPems = opts.ekCert ? await manufacture(dir, opts.caDir ?? path.join(dir, 'ca')) : [];
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    let child = spawnOn(dir, port);
    if (await up(child, port)) {
      const tcti = `swtpm:host=127.0.0.1,port=${port}`;
      return {
        tcti,
        dir,
        ekCaPems,
        stop: async () => {
          if (child.pid && child.exitCode === null) process.kill(child.pid, 'SIGCONT');
          await kill(child);
          await rm(dir, { recursive: true, force: true });
        },
        restart: async () => {
          await new Promise<void>((r) => execFile('tpm2_shutdown', ['-T', tcti], () => r()));
          await kill(child);
          child = spawnOn(dir, port);
          if (!(await up(child, port))) throw new Error('swtpm did not restart');
        },
        pause: () => {
          if (child.pid) process.kill(child.pid, 'SIGSTOP');
        },
        resume: () => {
          if (child.pid) process.kill(child.pid, 'SIGCONT');
        },
        powerCut: async () => {
          if (child.exitCode === null && child.pid) {
            const gone = new Promise((r) => child.once('exit', r));
            process.kill(child.pid, 'SIGKILL');
            await gone;
          }
          child = spawnOn(dir, port);
          if (!(await up(child, port))) throw new Error('swtpm did not come back after the power cut');
        },
      };
    }
    // gone before the next try: a killed swtpm still holding the state directory's lock makes
    // every later try fail too (CI: "swtpm did not start" while two test files shared the cores)
    if (child.exitCode === null && child.pid) {
      const gone = new Promise((r) => child.once('exit', r));
      process.kill(child.pid, 'SIGKILL');
      await gone;
    }
  }
  await rm(dir, { recursive: true, force: true });
  throw new Error('swtpm did not start');
}
