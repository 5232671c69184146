// Host side of the dev image's command channel: the guest's vm-agent.sh reads
// `<id> <base64 command>` lines on /dev/hvc0, which QEMU connects to a unix socket in the VM's
// state directory, and answers `@@PKS-RESULT <id> <rc> <base64 output>`.
// CLI: node --import tsx scripts/image/vm-exec.ts AGENT_SOCK TIMEOUT_S 'command'
//   prints the command's output, exits with its exit code (124 when the agent did not answer).
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

export interface VmExecResult {
  readonly rc: number;
  readonly output: string;
}

/**
 * Runs `command` with bash as root in the guest, once. The agent may not be up yet (boot) or may
 * have missed what was written before it opened the console, so a no-op ping is re-sent every
 * `pingMs` until the agent answers it; only then does the command go out, exactly once.
 */
export function vmExec(agentSock: string, command: string, timeoutMs = 120_000, pingMs = 2_000): Promise<VmExecResult> {
  const id = randomBytes(8).toString('hex');
  const pingId = randomBytes(8).toString('hex');
  const line = `${id} ${Buffer.from(command).toString('base64')}\n`;
  const ping = `${pingId} ${Buffer.from('true').toString('base64')}\n`;
  let sent = false;
  return new Promise((resolve, reject) => {
    let buf = '';
    let sock: net.Socket | undefined;
    let resend: NodeJS.Timeout | undefined;
    let retry: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (err: Error | undefined, res?: VmExecResult): void => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      clearInterval(resend);
      clearTimeout(retry);
      sock?.destroy();
      if (err) reject(err);
      else resolve(res!);
    };
    const deadline = setTimeout(() => finish(new Error(`guest agent did not answer within ${timeoutMs} ms`)), timeoutMs);
    const connect = (): void => {
      sock = net.connect(agentSock);
      sock.setEncoding('utf8');
      sock.on('connect', () => {
        if (sent) return; // the VM went away mid-command: its answer is lost with it
        sock!.write(ping);
        resend = setInterval(() => sock!.write(ping), pingMs);
      });
      sock.on('data', (d: string) => {
        buf += d;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const l = buf.slice(0, i).replace(/\r$/, '');
          buf = buf.slice(i + 1);
          const m = /^@@PKS-RESULT ([0-9a-f]+) (\d+) ?([A-Za-z0-9+/=]*)$/.exec(l);
          if (m && m[1] === pingId && !sent) {
            sent = true;
            clearInterval(resend);
            sock!.write(line);
          } else if (m && m[1] === id) finish(undefined, { rc: Number(m[2]), output: Buffer.from(m[3] ?? '', 'base64').toString() });
        }
      });
      // QEMU not listening yet, or the VM went away: try again until the deadline.
      sock.on('error', () => undefined);
      sock.on('close', () => {
        clearInterval(resend);
        if (sent) finish(new Error('guest agent went away before answering'));
        else if (!done) retry = setTimeout(connect, 500);
      });
    };
    connect();
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [sockPath, timeoutS, ...rest] = process.argv.slice(2);
  if (!sockPath || !timeoutS || rest.length === 0 || !/^\d+$/.test(timeoutS)) {
    process.stderr.write('usage: vm-exec.ts AGENT_SOCK TIMEOUT_S COMMAND\n');
    process.exit(2);
  }
  vmExec(sockPath, rest.join(' '), Number(timeoutS) * 1000).then(
    (r) => {
      process.stdout.write(r.output.endsWith('\n') || r.output === '' ? r.output : `${r.output}\n`);
      process.exit(r.rc);
    },
    (e: Error) => {
      process.stderr.write(`vm-exec: ${e.message}\n`);
      process.exit(124);
    },
  );
}
