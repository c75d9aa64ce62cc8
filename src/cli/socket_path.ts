/**
 * Which control socket the client commands (`usertgt rpc`, `usertgt drbdadm`) talk to without -s:
 * $USERTGT_RPC_SOCKET when set; else the server's own default, /var/tmp/usertgt.sock (beside SPDK's
 * /var/tmp/spdk.sock, where SPDK users look); else, when only it exists, /run/usertgt.sock, the
 * path the systemd unit gives the service (root-only /run, docs/systemd.md).
 */
import { existsSync } from "node:fs";
import { DEFAULT_RPC_SOCKET } from "../rpc/client.js";

export const SERVICE_RPC_SOCKET = "/run/usertgt.sock";

export function clientSocketPath(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (explicit !== undefined) return explicit;
  if (env.USERTGT_RPC_SOCKET) return env.USERTGT_RPC_SOCKET;
  if (!existsSync(DEFAULT_RPC_SOCKET) && existsSync(SERVICE_RPC_SOCKET)) return SERVICE_RPC_SOCKET;
  return DEFAULT_RPC_SOCKET;
}
