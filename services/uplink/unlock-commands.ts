// Central ops' unlock commands (signed like every ops command, appliance/contracts/commands.ts): onboard a user,
// approve a request (ops counts as one approver, "ops": a high-privilege role still needs a
// second, different admin), revoke a user at once. The uplink relays them to the unlock
// service on its own socket (/run/pks/unlock/uplink.sock); the unlock service checks and logs
// them like a console admin's.
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { UNLOCK_COMMANDS, type UnlockCommandName } from '../../appliance/contracts/commands.js';

export const isUnlockCommand = (c: string): c is UnlockCommandName => (UNLOCK_COMMANDS as readonly string[]).includes(c);

let client: IpcClient | null = null;

/** Runs one (verified) unlock command; the unlock service's answer is the command's result. */
export async function runUnlockCommand(command: UnlockCommandName, args: Record<string, unknown>, unlock: IpcClient = (client ??= ipcClient(socketPath('unlock', 'uplink'), { timeoutMs: 10_000, connections: 2 }))): Promise<Record<string, unknown>> {
  const verb = command.slice('unlock-'.length);
  return (await unlock.call(verb, args)) as Record<string, unknown>;
}
