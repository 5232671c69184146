// One "boot" of the updater for the fault tests, as its own process so a test can SIGKILL it
// (with rauc service) at any phase: a power cut. argv[2] is a JSON job; stdout gets one JSON
// line per event: {progress}, {reboot: true} (then it waits for the power to go), {result}.
import { createLogger } from '../../appliance/log.js';
import { ipcClient } from '../../appliance/ipc.js';
import { Updater } from '../../services/updater/updater.js';

const job = JSON.parse(process.argv[2]!) as {
  action: 'install' | 'recover';
  file?: string;
  stateDir: string;
  conf: string;
  env: NodeJS.ProcessEnv;
  reportDir: string;
  tcti: string;
  healthCommand?: string[];
  /** the vault's updater socket: the gate is authorised, checked and settled (issue 12) */
  vaultSocket?: string;
};
const line = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const updater = new Updater({
  stateDir: job.stateDir,
  rauc: { conf: job.conf, env: job.env, reportDir: job.reportDir },
  compatible: 'pks-appliance',
  tcti: job.tcti,
  keystore: null,
  vault: job.vaultSocket ? ipcClient(job.vaultSocket, { timeoutMs: 30_000 }) : null,
  health: { units: [], keystore: false, vault: !!job.vaultSocket, ...(job.healthCommand ? { command: job.healthCommand } : {}), timeoutSeconds: 2, intervalSeconds: 0.2 },
  drain: { retryAfterSeconds: 30, timeoutSeconds: 5 },
  reboot: async () => {
    line({ reboot: true });
    // the machine goes down now: nothing after this point runs
    await new Promise(() => undefined);
  },
  factoryVersion: '1.0.0',
  log: createLogger('updater'),
  report: (e) => line({ event: e }),
});
try {
  if (job.action === 'install') {
    await updater.recover();
    await updater.install(job.file!);
    await updater.switching;
  } else {
    await updater.recover();
  }
  line({ result: updater.status() });
} catch (e) {
  line({ error: (e as { code?: string }).code ?? String(e), detail: (e as { detail?: string }).detail, status: updater.status() });
}
process.exit(0);
