// pksctl alerts: open alerts (and with --all the recent history) from the running sentinel,
// asked over its pksctl socket. --json prints the sentinel's answer unchanged.
import { pksError } from '../errors.js';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';

interface AlertLine {
  key: string;
  severity: string;
  message: string;
  action?: string;
  raisedAt: string;
  updatedAt: string;
}
interface EventLine {
  at: string;
  type: string;
  alert: AlertLine;
}

const USAGE = 'usage: pksctl alerts [--all] [--json] [--limit N] | pksctl alerts check [--json]';
// terminal output: no escape sequences from alert text
const clean = (s: string, max = 160): string => {
  const t = String(s).replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ');
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
};

export async function alertsCommand(argv: string[], out: (s: string) => void): Promise<number> {
  let all = false;
  let json = false;
  let check = false;
  let limit = 50;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--all') all = true;
    else if (a === '--json') json = true;
    else if (a === 'check' && i === 0) check = true;
    else if (a === '--limit') {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1 || n > 1000) throw pksError('PKS_BAD_REQUEST', '--limit must be 1..1000');
      limit = n;
    } else throw pksError('PKS_BAD_REQUEST', USAGE);
  }
  const client = ipcClient(socketPath('sentinel', 'pksctl'), { timeoutMs: 120_000, connections: 1 });
  try {
    if (check) {
      // runs every check now and prints what the run did
      const s = await client.call<Record<string, unknown>>('run-now');
      out(json ? JSON.stringify(s) : JSON.stringify(s, null, 2));
      return 0;
    }
    const r = await client.call<{ open: AlertLine[]; history?: EventLine[] }>('alerts', { state: all ? 'all' : 'open', limit });
    if (json) {
      out(JSON.stringify(r));
      return 0;
    }
    out(r.open.length === 0 ? 'no open alerts' : `open alerts (${r.open.length}):`);
    for (const a of r.open) {
      out(`  ${a.severity.toUpperCase().padEnd(8)} ${clean(a.key, 60).padEnd(36)} since ${a.raisedAt}`);
      out(`           ${clean(a.message)}`);
      if (a.action) out(`           to do: ${clean(a.action, 200)}`);
    }
    if (all) {
      const h = r.history ?? [];
      out('');
      out(h.length === 0 ? 'no alert history' : `history, newest first (${h.length}):`);
      for (const e of h) out(`  ${e.at}  ${e.type.padEnd(11)} ${e.alert.severity.padEnd(8)} ${clean(e.alert.key, 60)}: ${clean(e.alert.message, 100)}`);
    }
    return 0;
  } finally {
    await client.close();
  }
}
