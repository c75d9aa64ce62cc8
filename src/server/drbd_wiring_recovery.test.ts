/**
 * The recovery commands over the drbd_adm / drbd_status RPC of two nodes in one process (ports 7918-7919):
 * .res options after-sb-*, always-asbp and verify-alg reach the connection; verify (with its status line and
 * counters), invalidate-remote, connect --discard-my-data (refused on a Primary).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AioBdev } from "../bdev/aio/aio.js";
import { DeviceTree } from "../devtree/device_tree.js";
import { isJsonObject, RpcError, type JsonObject } from "../rpc/jsonrpc.js";
import { MethodRegistry } from "../rpc/registry.js";
import { AFTER_SB_POLICY } from "../drbd/protocol.js";
import { DrbdWiring } from "./drbd_wiring.js";

const RES = `resource r9 {
    net { protocol C; ping-int 1; connect-int 1; verify-alg sha256; always-asbp yes;
          after-sb-0pri discard-least-changes; after-sb-1pri discard-secondary; after-sb-2pri violently-as0p; }
    disk { resync-rate 2M; }
    on alpha {
        address 127.0.0.1:7918;
        volume 0 { device drbd9 minor 9; disk "/UMCfuse/dev/disk_a"; meta-disk internal; }
    }
    on beta {
        address 127.0.0.1:7919;
        volume 0 { device drbd9 minor 9; disk "/UMCfuse/dev/disk_b"; meta-disk internal; }
    }
}
`;

interface NodeUnderTest {
  wiring: DrbdWiring;
  registry: MethodRegistry;
  lower: AioBdev;
  adm(command: string, extra?: JsonObject): Promise<unknown>;
  state(): Promise<JsonObject>;
}

async function until(cond: () => Promise<boolean>, what: string, ms = 15000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("verify, invalidate-remote and --discard-my-data through drbd_adm; drbd_status verify counters", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-recovery-"));
  const file = join(dir, "r9.res");
  await writeFile(file, RES);
  const nodes: NodeUnderTest[] = [];
  for (const [node, disk] of [
    ["alpha", "disk_a"],
    ["beta", "disk_b"],
  ] as const) {
    const tree = new DeviceTree();
    const lower = await AioBdev.open({
      name: disk,
      path: join(dir, `${node}.img`),
      blockSize: 512,
      blockCount: (4 << 20) / 512,
    });
    tree.add(disk, lower, "aio");
    const wiring = DrbdWiring.load({ configFile: file, nodeName: node, tree });
    const registry = new MethodRegistry();
    wiring.registerMethods(registry);
    nodes.push({
      wiring,
      registry,
      lower,
      adm: (command, extra = {}) => registry.call("drbd_adm", { command, resource: "r9", ...extra }),
      state: async () => {
        const st = await registry.call("drbd_status", { resource: "r9" });
        assert.ok(isJsonObject(st) && Array.isArray(st.resources) && isJsonObject(st.resources[0]));
        return st.resources[0];
      },
    });
  }
  t.after(async () => {
    for (const n of nodes) {
      await n.wiring.downUnheld();
      await n.lower.close();
    }
    await rm(dir, { recursive: true, force: true });
  });
  const [alpha, beta] = nodes as [NodeUnderTest, NodeUnderTest];
  const conn = alpha.wiring.get("r9");
  assert.deepEqual(conn.opts.afterSb, {
    after0p: AFTER_SB_POLICY["discard-least-changes"],
    after1p: AFTER_SB_POLICY["discard-secondary"],
    after2p: AFTER_SB_POLICY["violently-as0p"],
  });
  assert.equal(conn.opts.alwaysAsbp, true);
  assert.equal(conn.opts.verifyAlg, "sha256");

  for (const n of nodes) await n.adm("create-md");
  for (const n of nodes) await n.adm("up");
  const connected = async () =>
    (await alpha.state()).connection === "Connected" && (await beta.state()).connection === "Connected";
  await until(connected, "Connected");
  await alpha.adm("new-current-uuid", { clear_bitmap: true });
  await until(async () => (await beta.state()).disk === "UpToDate", "both UpToDate");
  assert.deepEqual((await alpha.state()).verify, {
    running: false,
    checked_blocks: 0,
    out_of_sync_blocks: 0,
  });

  // One block differs behind DRBD's back; 4 MiB at resync-rate 2M: the run lasts about 2 s.
  await beta.lower.writev(77 * 8, [Buffer.alloc(4096, 0xee)]);
  await alpha.adm("verify");
  const text = alpha.wiring.status("r9");
  assert.match(text, /replication:VerifyS peer-disk:UpToDate done:\d+\.\d\d/);
  assert.match(beta.wiring.status("r9"), /replication:VerifyT peer-disk:UpToDate done:/);
  const busy = await rpcError(beta.adm("verify"));
  assert.match(busy.message, /\(-8\) Can not start OV\/resync since it is already active/);
  // Both back to Connected: the VerifyT side ends its run a little after the VerifyS side.
  await until(connected, "verify done");
  const blocks = conn.device?.bitmap.bits ?? -1;
  assert.ok(blocks > 1000, "every 4 KiB block of the 4 MiB device less its metadata");
  const s = await alpha.state();
  assert.deepEqual(s.verify, { running: false, checked_blocks: blocks, out_of_sync_blocks: 1 });
  assert.equal(s.out_of_sync_kib, 4);

  // invalidate-remote from alpha: beta resynced in full, then verify finds nothing.
  await alpha.adm("invalidate-remote");
  await until(async () => (await beta.state()).connection === "SyncTarget", "beta SyncTarget", 5000);
  await until(connected, "resync done", 20000);
  assert.equal((await beta.state()).disk, "UpToDate");
  await alpha.adm("verify");
  await until(async () => (await alpha.state()).connection === "Connected", "second verify done");
  assert.deepEqual((await alpha.state()).verify, {
    running: false,
    checked_blocks: blocks,
    out_of_sync_blocks: 0,
  });

  // --discard-my-data is refused on a Primary, as drbdsetup refuses it.
  await alpha.adm("primary");
  await alpha.adm("disconnect");
  const refused = await rpcError(alpha.adm("connect", { discard_my_data: true }));
  assert.equal(refused.code, -32000);
  assert.match(refused.message, /--discard-my-data not allowed when primary\./);
});

async function rpcError(p: Promise<unknown>): Promise<RpcError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RpcError, `expected an RpcError, got ${String(err)}`);
    return err;
  }
  assert.fail("the call succeeded");
}
