/**
 * DRBD protocol C failover: four iSCSI sessions write patterns to the Primary (alpha)
 * under load, alpha is killed with SIGKILL mid-load, the Secondary (beta) is promoted without --force and
 * every WRITE that returned GOOD reads back from beta's LUN. alpha then rejoins with `drbdadm_up` as
 * SyncTarget, resyncs (its activity log's extents and beta's new writes), ends UpToDate, and both backing
 * files are byte-equal over the usable area.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { blockPattern, DrbdPair, LoadWriter, rw10, until } from "./drbd_fixture.js";

/** The load writes the first 8 MiB (two activity-log extents) of the 32 MiB device. */
const HOT_BLOCKS = 2048;

describe("DRBD protocol C failover (kill -9 of the Primary)", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-failover", { protocol: "C", sizeMiB: 32 });
  });
  after(async () => {
    await pair.close();
  });

  it(
    "every acknowledged write survives on the promoted Secondary; the old Primary resyncs",
    { timeout: 90000 },
    async () => {
      await pair.start("alpha", "drbdadm_up_primary");
      await pair.start("beta", "drbdadm_up");
      await pair.waitInSync();
      const blocks = await pair.usableBlocks("alpha");
      const bs = pair.blockSize;

      const load = new LoadWriter(pair, "alpha", {
        sessions: 4,
        blocksPerWrite: 4,
        firstBlock: 0,
        lastBlock: HOT_BLOCKS,
      });
      await load.start();
      await load.waitWrites(400, 45000);
      await pair.kill("alpha");
      await load.lost();
      assert.ok(load.acked.size > 0);

      // beta notices the lost peer (socket closed) and may be promoted without --force.
      await until(
        "beta sees the peer gone",
        async () => (await pair.status("beta")).connection !== "Connected",
        20000,
      );
      const sb = await pair.status("beta");
      assert.equal(sb.disk, "UpToDate", `beta after the loss: ${JSON.stringify(sb)}`);
      const promote = await pair.adm("beta", "primary");
      assert.equal(promote.code, 0, `drbdadm primary on beta without --force: ${promote.stderr}`);
      assert.equal((await pair.status("beta")).role, "Primary");

      const checked = await load.verify("beta");
      assert.equal(checked, load.acked.size, "every acknowledged block was checked");

      // The new Primary serves writes too: one run beta alone has (alpha must get it by resync).
      const ib = await pair.session("beta", 0x40);
      const lba = 8;
      const data = Buffer.concat([0, 1, 2, 3].map((i) => blockPattern(bs, lba + i, 99, 1)));
      const w = await ib.scsi(rw10(0x2a, lba, 4), { write: data });
      assert.equal(w.status, 0, `WRITE on the promoted beta: ${w.sense.toString("hex")}`);
      ib.close();
      const oos = (await pair.status("beta")).out_of_sync_kib ?? 0;
      assert.ok(oos >= 16, `beta marks its write out of sync for the absent peer: ${oos} KiB`);

      // alpha rejoins as Secondary: SyncTarget, and ends UpToDate.
      await pair.start("alpha", "drbdadm_up");
      await pair.waitInSync(60000);
      const sa = await pair.status("alpha");
      assert.equal(sa.role, "Secondary");
      assert.ok(
        sa.sync_decision && sa.sync_decision.result < 0,
        `alpha's sync decision makes it SyncTarget: ${JSON.stringify(sa.sync_decision)}`,
      );
      const rs = sa.resync as { total_bits: number; requests: number; requested_blocks: number };
      assert.ok(rs.requested_blocks >= 4, `alpha resynced ${rs.requested_blocks} blocks`);
      assert.ok(
        rs.requested_blocks <= (HOT_BLOCKS * bs) / 4096,
        `no more than the two written extents: ${rs.requested_blocks} 4 KiB blocks, ${(blocks * bs) / 4096} in all`,
      );
      assert.equal(sa.out_of_sync_kib, 0);
      assert.equal((await pair.status("beta")).out_of_sync_kib, 0);

      await pair.stop("alpha");
      await pair.stop("beta");
      await pair.assertFilesEqual(blocks * bs);
      process.stderr.write(
        `drbd_failover: ${load.writes} WRITEs acked, ${checked} blocks checked, resync ${rs.requests} requests / ${rs.requested_blocks} blocks, decision ${JSON.stringify(sa.sync_decision)}\n`,
      );
    },
  );

  it(
    "a promoted Secondary that has not written yet still takes the old Primary back as SyncTarget",
    { timeout: 90000 },
    async () => {
      // The first test stopped alpha first, so beta (Primary then) started a new generation: both come up
      // Secondary, beta's newer generation syncs to alpha, and alpha is promoted afterwards.
      await pair.start("alpha", "drbdadm_up");
      await pair.start("beta", "drbdadm_up");
      await pair.waitInSync();
      await pair.admOk("alpha", "primary");
      const load = new LoadWriter(pair, "alpha", {
        sessions: 2,
        blocksPerWrite: 4,
        firstBlock: 0,
        lastBlock: HOT_BLOCKS,
        tagBase: 0x20,
      });
      await load.start();
      await load.waitWrites(50);
      await pair.kill("alpha");
      await load.lost();
      await until(
        "beta sees the peer gone",
        async () => (await pair.status("beta")).connection !== "Connected",
        20000,
      );
      await pair.admOk("beta", "primary");
      // DRBD 8.4 drbd_set_role: a promotion while not connected starts a new current UUID at once, so the
      // returning crashed Primary finds beta's bitmap UUID = its current UUID and becomes SyncTarget.
      await pair.start("alpha", "drbdadm_up");
      await until(
        "alpha and beta connect again (alpha SyncTarget, then both UpToDate)",
        async () => {
          const a = await pair.status("alpha");
          const b = await pair.status("beta");
          if (b.connection === "StandAlone")
            assert.fail(
              `beta went StandAlone: ${b.last_error} (sync decision ${JSON.stringify(b.sync_decision)})`,
            );
          return a.connection === "Connected" && a.disk === "UpToDate" && b.peer_disk === "UpToDate";
        },
        20000,
        async () =>
          `alpha ${JSON.stringify(await pair.status("alpha"))} beta ${JSON.stringify(await pair.status("beta"))}`,
      );
      assert.equal(await load.verify("beta"), load.acked.size);
      assert.equal(await load.verify("alpha"), load.acked.size);
    },
  );
});
