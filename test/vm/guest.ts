// Host side of the system tests: commands and IPC verbs in the dev image's guest, through the
// command channel of scripts/image/vm-exec.ts (root in the guest, no network involved).
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { vmExec } from '../../scripts/image/vm-exec.js';

export interface Guest {
  /** Runs `command` as root in the guest; throws with its output when it exits non-zero. */
  sh(command: string, timeoutS?: number): Promise<string>;
  /** One verb on /run/pks/<service>/pksctl.sock (the admin socket), answer parsed. */
  ipc<T = unknown>(service: string, verb: string, body?: unknown): Promise<T>;
  /** Writes `data` to `file` in the guest, in pieces the command channel can carry. */
  put(file: string, data: Buffer, mode?: string): Promise<void>;
}

export function guest(state: string): Guest {
  const sock = path.join(state, 'agent.sock');
  const sh = async (command: string, timeoutS = 120): Promise<string> => {
    const r = await vmExec(sock, command, timeoutS * 1000);
    if (r.rc !== 0) throw new Error(`guest: exit ${r.rc}: ${command.slice(0, 80)}: ${r.output.trim().slice(-400)}`);
    return r.output;
  };
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  return {
    sh,
    async ipc<T>(service: string, verb: string, body: unknown = {}): Promise<T> {
      const out = await sh(`node /usr/lib/pks-dev/ipc.mjs ${service} ${verb} "$(echo ${b64(JSON.stringify(body))} | base64 -d)"`);
      return JSON.parse(out) as T;
    },
    async put(file: string, data: Buffer, mode = '0600'): Promise<void> {
      if (!/^\/[A-Za-z0-9._/-]+$/.test(file)) throw new Error(`guest put: bad path ${file}`);
      // The console loses long lines (no flow control on hvc), so the guest fetches the data
      // from a one-shot server on the host's loopback, which QEMU's user network shows the
      // guest as 10.0.2.2.
      const token = randomBytes(16).toString('hex');
      const srv = http.createServer((req, res) => {
        if (req.url !== `/${token}`) return void res.writeHead(404).end();
        res.writeHead(200, { 'content-length': data.length }).end(data);
      });
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      const port = (srv.address() as AddressInfo).port;
      try {
        const js = `const r = await fetch('http://10.0.2.2:${port}/${token}'); if (!r.ok) process.exit(1); require('fs').writeFileSync('${file}.tmp', Buffer.from(await r.arrayBuffer()), { mode: 0o${mode.replace(/^0/, '')} });`;
        await sh(`node -e "(async () => { ${js.replace(/"/g, '\\"')} })().catch((e) => { console.error(e.message); process.exit(1); })" && mv ${file}.tmp ${file}`, 300);
      } finally {
        srv.close();
      }
    },
  };
}
