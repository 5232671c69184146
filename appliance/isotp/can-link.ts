// ISO-TP over a SocketCAN interface (see appliance/isotp/README in the main README section).
import { pksError } from '../errors.js';
import type { UdsLink } from '../uds/client.js';

export async function canLink(o: { iface: string; tx: number; rx: number; fd: boolean }): Promise<{ link: UdsLink; close(): void }> {
  throw pksError('PKS_CAN_UNAVAILABLE', `CAN interface ${o.iface}: not built yet`);
}
