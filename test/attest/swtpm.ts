// A real TPM 2.0 for tests: swtpm on loopback TCP, reached by tpm2-tools through the swtpm TCTI.
// Each test gets its own state directory and process; stop() kills it by PID and removes the state.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../helpers/ports.js';

export interface Swtpm {
  readonly tcti: string;
  stop(): Promise<void>;
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

export async function startSwtpm(): Promise<Swtpm> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-swtpm-'));
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    // the swtpm TCTI talks to the control channel on port + 1
    const child: ChildProcess = spawn(
      'swtpm',
      ['socket', '--tpm2', '--tpmstate', `dir=${dir}`, '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`, '--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`, '--flags', 'not-need-init,startup-clear'],
      { stdio: 'ignore' },
    );
    let exited = false;
    child.once('exit', () => (exited = true));
    for (let i = 0; i < 50 && !exited; i++) {
      if (await listening(port)) {
        return {
          tcti: `swtpm:host=127.0.0.1,port=${port}`,
          stop: async () => {
            if (!exited && child.pid) {
              const gone = new Promise((r) => child.once('exit', r));
              process.kill(child.pid, 'SIGTERM');
              await gone;
            }
            await rm(dir, { recursive: true, force: true });
          },
        };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!exited && child.pid) process.kill(child.pid, 'SIGKILL');
  }
  await rm(dir, { recursive: true, force: true });
  throw new Error('swtpm did not start');
}
