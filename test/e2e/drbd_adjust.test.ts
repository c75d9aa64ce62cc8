/**
 * `drbdadm adjust` on two running servers (drbd_fixture.ts): the .res is edited and each node adjusts.
 *
 * - protocol C → A and back while alpha (Primary) takes continuous iSCSI writes: the connection stays
 *   Connected throughout (no resync state seen, out-of-sync stays 0), the first node's adjust sends
 *   P_PROTOCOL_UPDATE and the second finds nothing left to do, and every acknowledged write reads back
 *   from both nodes;
 * - a changed address (beta's port): both reconnect on the new port;
 * - a disconnected (StandAlone) resource is connected again; nothing changed → no action.
 *
 * DRBD ports 8050-8069, iSCSI 3660-3669.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { RpcClient } from "../../src/rpc/client.js";
import { DrbdPair, LoadWriter, until, type DrbdResStatus, type NodeName } from "./drbd_fixture.js";
import { freePorts } from "./drbd_ports.js";

interface AdjustResult {
  adjusted: Record<string, string[]>;
}

async function rpcAdjust(pair: DrbdPair, name: NodeName): Promise<string[]> {
  const c = await RpcClient.connect(pair.nodes[name].sock, 10000);
  try {
    const r = (await c.call("drbd_adm", { command: "adjust", resource: "r0" })) as unknown as AdjustResult;
    return r.adjusted.r0 ?? [];
  } finally {
    c.close();
  }
}

/** Watches both nodes' status until stopped: every connection state and the largest out-of-sync seen. */
class StateWatch {
  readonly seen = new Set<string>();
  maxOutOfSyncKiB = 0;
  private running = true;
  private readonly loop: Promise<void>;

  constructor(private readonly pair: DrbdPair) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (this.running) {
      for (const name of ["alpha", "beta"] as const) {
        const s: DrbdResStatus = await this.pair.status(name);
        this.seen.add(`${name}:${s.connection}`);
        this.maxOutOfSyncKiB = Math.max(this.maxOutOfSyncKiB, s.out_of_sync_kib ?? 0);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}

describe("drbdadm adjust on a running pair", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-adjust", {
      drbdPorts: [8050, 8059],
      iscsiPorts: [3660, 3669],
      disk: "resync-rate 100M; c-plan-ahead 0;",
    });
    await pair.start("alpha", "drbdadm_up_primary");
    await pair.start("beta", "drbdadm_up");
    await pair.waitInSync();
  });
  after(async () => {
    await pair.close();
  });

  const editRes = async (edit: (text: string) => string) => {
    const text = await readFile(pair.resPath, "utf8");
    const next = edit(text);
    assert.notEqual(next, text, "the edit changed the .res");
    await writeFile(pair.resPath, next);
  };
  const protocolOf = async (name: NodeName) => ((await pair.status(name)) as { protocol?: string }).protocol;

  it("nothing changed: no action", async () => {
    assert.deepEqual(await rpcAdjust(pair, "alpha"), []);
    assert.deepEqual(await rpcAdjust(pair, "beta"), []);
  });

  it(
    "protocol C → A → C under continuous writes: Connected throughout, no resync, no lost write",
    { timeout: 5 * 60 * 1000 },
    async () => {
      const blocks = await pair.usableBlocks("alpha");
      const load = new LoadWriter(pair, "alpha", {
        sessions: 3,
        blocksPerWrite: 4,
        firstBlock: 0,
        lastBlock: Math.min(blocks, 3000),
      });
      await load.start();
      const watch = new StateWatch(pair);
      try {
        await load.waitWrites(200);
        await editRes((t) => t.replace("protocol C;", "protocol A;"));
        // The first node's adjust changes both (P_PROTOCOL_UPDATE); the second's finds nothing to do.
        assert.deepEqual(await rpcAdjust(pair, "alpha"), ["net-options protocol"]);
        await until(
          "beta took protocol A from its peer",
          async () => (await protocolOf("beta")) === "A",
          5000,
        );
        assert.deepEqual(await rpcAdjust(pair, "beta"), []);
        assert.equal(await protocolOf("alpha"), "A");
        const before = load.writes;
        await load.waitWrites(before + 300);

        await editRes((t) => t.replace("protocol A;", "protocol C;"));
        // Back, the other node first this time, through the command line.
        await pair.admOk("beta", "adjust");
        await until("alpha took protocol C", async () => (await protocolOf("alpha")) === "C", 5000);
        await pair.admOk("alpha", "adjust");
        assert.equal(await protocolOf("beta"), "C");
        await load.waitWrites(load.writes + 200);
      } finally {
        await load.stop();
        await watch.stop();
      }
      assert.deepEqual(load.failures, []);
      assert.deepEqual(
        [...watch.seen].sort(),
        ["alpha:Connected", "beta:Connected"],
        "no state but Connected (no resync, no reconnect)",
      );
      assert.equal(watch.maxOutOfSyncKiB, 0, "nothing went out of sync");
      for (const name of ["alpha", "beta"] as const) {
        const s = await pair.status(name);
        assert.equal(s.connection, "Connected", `${name} ${JSON.stringify(s)}`);
        assert.equal(s.out_of_sync_kib, 0);
      }
      const checkedA = await load.verify("alpha");
      const checkedB = await load.verify("beta");
      assert.ok(
        checkedA > 0 && checkedA === checkedB,
        `checked ${checkedA} blocks on alpha, ${checkedB} on beta`,
      );
      assert.match(pair.drbdLog("alpha", 400), /the peer changed the net options \(P_PROTOCOL_UPDATE\)/);
      assert.match(pair.drbdLog("beta", 400), /the peer changed the net options \(P_PROTOCOL_UPDATE\)/);
    },
  );

  it("resync-rate changed on one node reaches the other (P_SYNC_PARAM89)", async () => {
    await editRes((t) => t.replace("resync-rate 100M;", "resync-rate 50M;"));
    assert.deepEqual(await rpcAdjust(pair, "beta"), ["disk-options resyncRateKiB"]);
    // alpha took 50M from beta's P_SYNC_PARAM89: its own adjust has nothing left.
    await until(
      "alpha took the new resync-rate",
      async () => (await rpcAdjust(pair, "alpha")).length === 0,
      5000,
    );
  });

  it("a StandAlone resource is connected again", async () => {
    await pair.admOk("beta", "disconnect");
    assert.equal((await pair.status("beta")).connection, "StandAlone");
    assert.deepEqual(await rpcAdjust(pair, "beta"), ["connect"]);
    await pair.waitInSync();
  });

  it("a new address: both reconnect to it", { timeout: 2 * 60 * 1000 }, async () => {
    const old = pair.nodes.beta.drbdPort;
    const [port] = await freePorts(1, 8060, 8069, "127.0.0.2");
    await editRes((t) => t.replace(`127.0.0.2:${old};`, `127.0.0.2:${port};`));
    assert.deepEqual(await rpcAdjust(pair, "alpha"), ["disconnect", "connect"]);
    assert.deepEqual(await rpcAdjust(pair, "beta"), ["disconnect", "connect"]);
    await pair.waitInSync();
    assert.deepEqual(await rpcAdjust(pair, "alpha"), []);
  });
});
