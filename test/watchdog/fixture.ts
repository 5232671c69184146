// A minimal service for the watchdog test: runService around a unix-socket server that only
// listens after a deliberate start delay, and a SIGUSR2 handler that blocks the event loop
// for FIXTURE_BLOCK_MS (the way a runaway synchronous job would). Inert unless the test sets
// PKS_WATCHDOG_FIXTURE, because the uvu runner imports every file matching its pattern.
import net from 'node:net';
import { runService } from '../../appliance/service.js';

if (process.env.PKS_WATCHDOG_FIXTURE === '1') {
  const sock = process.env.FIXTURE_SOCKET!;
  const delay = Number(process.env.FIXTURE_START_DELAY_MS ?? 500);
  const block = Number(process.env.FIXTURE_BLOCK_MS ?? 2000);
  await runService('watchdog-fixture', async () => {
    await new Promise((r) => setTimeout(r, delay));
    const server = net.createServer((s) => {
      s.on('error', () => {}); // the test hangs up at once
      s.end('ok\n');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(sock, () => resolve());
    });
    process.on('SIGUSR2', () => {
      const end = Date.now() + block;
      while (Date.now() < end) {
        // busy: nothing else on the loop runs, the watchdog interval included
      }
    });
    return {
      status: () => 'fixture serving',
      stop: () => new Promise<void>((r) => server.close(() => r())),
    };
  });
}
