// pksctl: the admin CLI of the box. Each subcommand lives in its own module; this file only
// dispatches, so a subcommand that needs no service (she) never opens a socket.
import { pksError, isPksError } from '../errors.js';

type Command = (argv: string[], out: (s: string) => void) => Promise<number>;

const commands: Record<string, { help: string; load: () => Promise<Command> }> = {
  she: { help: 'compute SHE M1..M5 (no service needed)', load: async () => (await import('./she.js')).sheCommand },
  stock: { help: 'stock per pool: available, reserved, injected, burned, burn rate', load: async () => (await import('./keystore.js')).stockCommand },
  tester: { help: 'tester list | add CN --station S --pools P,.. --expires DATE | revoke CN', load: async () => (await import('./keystore.js')).testerCommand },
  pool: { help: 'pool set POOL --minimum N --reorder N [--critical N]', load: async () => (await import('./keystore.js')).poolCommand },
  handover: { help: 'handover (--package ID | --pool P --uid U) --to TESTER --reason TEXT: move an open reservation to a rework station', load: async () => (await import('./handover.js')).handoverCommand },
  outbox: { help: 'outbox rejected: records the KMS refused, kept with its reason', load: async () => (await import('./keystore.js')).outboxCommand },
  import: { help: 'import a signed key batch file (one chunk per line)', load: async () => (await import('./import.js')).importCommand },
  audit: { help: 'audit verify: check the audit chain and its signed checkpoints', load: async () => (await import('./audit.js')).auditCommand },
  alerts: { help: 'alerts [--all] [--json] | alerts check', load: async () => (await import('./alerts.js')).alertsCommand },
  status: { help: 'measured boot: PCRs and measurements vs the expected values', load: async () => (await import('./status.js')).statusCommand },
  vault: { help: 'vault status | vault public-key NAME', load: async () => (await import('./vault.js')).vaultCommand },
  ipc: { help: 'ipc SERVICE VERB [JSON] [--as CALLER]: one verb on a service socket (debugging)', load: async () => (await import('./ipc.js')).ipcCommand },
  unlock: { help: 'unlock onboard|approve|reject|revoke|cert|users|requests|log|tokens|public-key|show ...', load: async () => (await import('./unlock.js')).unlockCommand },
  setup: { help: 'setup [--answers FILE] [--root DIR]: one-time setup of the box (interactive, or from an answer file), resumable', load: async () => (await import('./setup.js')).setupCommand },
  zeroize: { help: 'zeroize [--yes] [--force]: decommission: final sync to the KMS, HSM keys destroyed, data and credentials wiped, certificate revoked', load: async () => (await import('./zeroize.js')).zeroizeCommand },
  update: { help: 'update install FILE | update status: signed A/B updates', load: async () => (await import('./update.js')).updateCommand },
};

function usage(): string {
  return ['usage: pksctl <command> [options]', '', ...Object.entries(commands).map(([n, c]) => `  ${n.padEnd(10)} ${c.help}`)].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const cmd = Object.prototype.hasOwnProperty.call(commands, name) ? commands[name] : undefined;
  if (!cmd) {
    console.error(`pksctl: unknown command '${name.slice(0, 32)}'\n${usage()}`);
    return 2;
  }
  return (await cmd.load())(rest, (s) => console.log(s));
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  // node:util parseArgs says what is wrong with the command line: pass that on as bad input
  const parse = (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? pksError('PKS_BAD_REQUEST', (err as Error).message) : undefined;
  const e = isPksError(err) ? err : (parse ?? pksError('PKS_INTERNAL'));
  console.error(`pksctl: ${e.code}: ${e.detail}`);
  process.exitCode = e.status >= 500 ? 1 : 2;
}
