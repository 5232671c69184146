// Central ops' unlock commands (signed like every ops command, commands.ts): onboard a user,
// approve a request (ops counts as one approver, "ops": a high-privilege role still needs a
// second, different admin), revoke a user at once. The uplink relays them to the unlock
// service on its own socket (/run/pks/unlock/uplink.sock); the unlock service checks and logs
// them like a console admin's.
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { NAME } from '../../appliance/schema.js';

export const UNLOCK_COMMANDS = ['unlock-onboard', 'unlock-approve', 'unlock-revoke'] as const;
export type UnlockCommandName = (typeof UNLOCK_COMMANDS)[number];

const ROLE = { type: 'string', pattern: '^[A-Z][A-Z0-9_]{0,31}$' } as const;
const REASON = { type: 'string', maxLength: 200, pattern: '^[\\x20-\\x7e]*$' } as const;

export const UNLOCK_ARG_SCHEMAS: Record<UnlockCommandName, Record<string, unknown>> = {
  'unlock-onboard': {
    type: 'object',
    additionalProperties: false,
    required: ['cn', 'role', 'accessSeconds'],
    properties: { cn: NAME, role: ROLE, accessSeconds: { type: 'integer', minimum: 1, maximum: 5 * 365 * 86_400 } },
  },
  'unlock-approve': { type: 'object', additionalProperties: false, required: ['id'], properties: { id: { type: 'string', pattern: '^[a-z0-9]{8,40}$' } } },
  'unlock-revoke': { type: 'object', additionalProperties: false, required: ['cn'], properties: { cn: NAME, reason: REASON } },
};

export const isUnlockCommand = (c: string): c is UnlockCommandName => (UNLOCK_COMMANDS as readonly string[]).includes(c);

let client: IpcClient | null = null;

/** Runs one (verified) unlock command; the unlock service's answer is the command's result. */
export async function runUnlockCommand(command: UnlockCommandName, args: Record<string, unknown>, unlock: IpcClient = (client ??= ipcClient(socketPath('unlock', 'uplink'), { timeoutMs: 10_000, connections: 2 }))): Promise<Record<string, unknown>> {
  const verb = command.slice('unlock-'.length);
  return (await unlock.call(verb, args)) as Record<string, unknown>;
}
