// Dev image only: one verb on a PKS service's admin socket, /run/pks/<service>/pksctl.sock,
// through the appliance's own IPC client (msgpack frames). Usage: node ipc.mjs SERVICE VERB
// [JSON]; prints the answer as JSON, exit 0 on success, 1 on a coded refusal, 3 when the
// socket does not answer.
const { ipcClient } = await import('/usr/lib/pks/dist/appliance/ipc.js');

const [service, verb, body = '{}'] = process.argv.slice(2);
if (!/^[a-z][a-z0-9-]{0,31}$/.test(service ?? '') || !/^[a-z][a-z0-9-]{0,31}$/.test(verb ?? '')) {
  console.error('usage: ipc.mjs SERVICE VERB [JSON]');
  process.exit(2);
}
const client = ipcClient(`/run/pks/${service}/pksctl.sock`, { timeoutMs: 60_000 });
try {
  process.stdout.write(JSON.stringify(await client.call(verb, JSON.parse(body))) + '\n');
} catch (e) {
  const unreachable = e.code === 'PKS_IPC_UNAVAILABLE' || e.code === 'PKS_IPC_TIMEOUT';
  if (unreachable) console.error(`ipc.mjs: ${service}: ${e.code}: ${e.detail}`);
  else process.stdout.write(JSON.stringify(typeof e.toJSON === 'function' ? e.toJSON() : { code: 'PKS_INTERNAL' }) + '\n');
  process.exitCode = unreachable ? 3 : 1;
} finally {
  await client.close();
}
