// The TPM's way in, cut and restored: a loopback TCP relay in front of swtpm's two ports (the
// swtpm TCTI uses PORT for commands and PORT + 1 for control). down() closes both listeners and
// drops every open connection, as a TPM whose device node went away (tpm2-tools get
// ECONNREFUSED at once, no hang); up() listens again on the same ports with the TPM's state,
// PCRs included, untouched behind it (a TPM restart would reset them: not this fault).
import net from 'node:net';

export interface TpmGate {
  readonly tcti: string;
  down(): Promise<void>;
  up(): Promise<void>;
  stop(): Promise<void>;
}

const portOf = (tcti: string): number => Number(/port=(\d+)/.exec(tcti)?.[1] ?? NaN);

async function listen(s: net.Server, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => resolve(true));
  });
}

export async function startTpmGate(targetTcti: string): Promise<TpmGate> {
  const target = portOf(targetTcti);
  if (!Number.isInteger(target)) throw new Error(`no port in ${targetTcti}`);
  const sockets = new Set<net.Socket>();
  const relay = (to: number): net.Server =>
    net.createServer((c) => {
      const u = net.connect(to, '127.0.0.1');
      sockets.add(c).add(u);
      const end = (): void => {
        c.destroy();
        u.destroy();
        sockets.delete(c);
        sockets.delete(u);
      };
      c.on('error', end).on('close', end);
      u.on('error', end).on('close', end);
      c.pipe(u);
      u.pipe(c);
    });
  let servers: net.Server[] = [];
  let port = 0;
  const open = async (p: number): Promise<boolean> => {
    const a = relay(target);
    const b = relay(target + 1);
    if (!(await listen(a, p))) return false;
    if (!(await listen(b, p + 1))) {
      await new Promise((r) => a.close(r));
      return false;
    }
    servers = [a, b];
    return true;
  };
  for (let i = 0; i < 50 && !port; i++) {
    const p = 20_000 + Math.floor(Math.random() * 30_000);
    if (await open(p)) port = p;
  }
  if (!port) throw new Error('no two free ports for the TPM gate');
  const down = async (): Promise<void> => {
    const s = servers;
    servers = [];
    for (const x of sockets) x.destroy();
    sockets.clear();
    await Promise.all(s.map((x) => new Promise((r) => x.close(r))));
  };
  return {
    tcti: `swtpm:host=127.0.0.1,port=${port}`,
    down,
    async up() {
      if (servers.length) return;
      if (!(await open(port))) throw new Error('the TPM gate could not listen again');
    },
    stop: down,
  };
}
