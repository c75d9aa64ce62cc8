/**
 * Times a DRBD resync from the SyncSource's side, for bench/drbd_bench.sh: polls `drbd_status` on one
 * server's RPC socket every 20 ms from the moment it starts (the script starts it just before the peer)
 * until the connection is Connected with both disks UpToDate. Reports, in seconds from its start: when the
 * connection left WFConnection (handshake done), when SyncSource was first seen, when both disks were
 * UpToDate; the most out-of-sync KiB seen (the resync's size) and MB/s over the SyncSource span.
 *
 *   node dist/bench/drbd/sync_watch.js SOCKET [RESOURCE=r0] [TIMEOUT_S=600]
 *
 * Prints one JSON line; exits 1 on timeout (with what it last saw) or when the RPC socket goes away.
 */
import { RpcClient } from "../../src/rpc/client.js";
import { isJsonObject, type JsonObject } from "../../src/rpc/jsonrpc.js";

const [socketPath, resource = "r0", timeoutText = "600"] = process.argv.slice(2);
if (!socketPath) throw new Error("sync_watch: usage: sync_watch.js SOCKET [RESOURCE] [TIMEOUT_S]");
const timeoutS = Number(timeoutText);

const rpc = await RpcClient.connect(socketPath);
const start = process.hrtime.bigint();
const since = () => Number(process.hrtime.bigint() - start) / 1e9;
const round = (s: number | undefined) => (s === undefined ? null : Number(s.toFixed(3)));

let handshakeS: number | undefined;
let syncStartS: number | undefined;
let syncEndS: number | undefined;
let maxOutOfSyncKiB = 0;
let last: JsonObject = {};

for (;;) {
  const reply = await rpc.call("drbd_status", { resource });
  const list = isJsonObject(reply) && Array.isArray(reply.resources) ? reply.resources : [];
  const r = list.find((x): x is JsonObject => isJsonObject(x) && x.name === resource);
  if (!r) throw new Error(`sync_watch: drbd_status has no resource ${resource}`);
  last = r;
  const t = since();
  const conn = String(r.connection ?? "");
  if (typeof r.out_of_sync_kib === "number") maxOutOfSyncKiB = Math.max(maxOutOfSyncKiB, r.out_of_sync_kib);
  if (handshakeS === undefined && !["StandAlone", "Unconnected", "WFConnection"].includes(conn))
    handshakeS = t;
  if (syncStartS === undefined && (conn === "SyncSource" || conn === "SyncTarget")) syncStartS = t;
  if (conn === "Connected" && r.disk === "UpToDate" && r.peer_disk === "UpToDate") {
    syncEndS = t;
    break;
  }
  if (t > timeoutS) break;
  await new Promise((resolve) => setTimeout(resolve, 20));
}
rpc.close();

const span = syncStartS !== undefined && syncEndS !== undefined ? syncEndS - syncStartS : undefined;
process.stdout.write(
  `${JSON.stringify({
    handshake_s: round(handshakeS),
    sync_start_s: round(syncStartS),
    uptodate_s: round(syncEndS),
    resync_kib: maxOutOfSyncKiB,
    mbs: span && span > 0 ? Number(((maxOutOfSyncKiB * 1024) / span / 1e6).toFixed(1)) : null,
    ...(syncEndS === undefined ? { timeout: true, last } : {}),
  })}\n`,
);
process.exit(syncEndS === undefined ? 1 : 0);
