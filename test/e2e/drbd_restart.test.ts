/**
 * DRBD restarts: a clean restart of both nodes (SIGTERM, start again) needs no resync
 * (sync decision 0, no resync request, nothing out of sync); a crash of the Primary (kill -9 during a
 * 4-session write load spread over the whole device; restarted, the Secondary not promoted) resyncs no
 * more than the activity log covers: `al-extents 7` × 1024 blocks of 4 KiB, against a 64 MiB device
 * (16 extents) — and afterwards both backing files are equal and every acknowledged write is there.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { DrbdPair, LoadWriter } from "./drbd_fixture.js";

const AL_EXTENTS = 7;

describe("DRBD restarts: clean, and a crash of the Primary", () => {
  let pair: DrbdPair;
  let blocks = 0;
  before(async () => {
    pair = await DrbdPair.create("drbd-restart", {
      protocol: "C",
      sizeMiB: 64,
      disk: `resync-rate 100M; al-extents ${AL_EXTENTS};`,
    });
  });
  after(async () => {
    await pair.close();
  });

  it("a clean restart of both nodes needs no resync", { timeout: 90000 }, async () => {
    await pair.start("alpha", "drbdadm_up_primary");
    await pair.start("beta", "drbdadm_up");
    await pair.waitInSync();
    blocks = await pair.usableBlocks("alpha");
    const load = new LoadWriter(pair, "alpha", {
      sessions: 2,
      blocksPerWrite: 8,
      firstBlock: 0,
      lastBlock: blocks,
    });
    await load.start();
    await load.waitWrites(100);
    await load.stop();

    await pair.stop("alpha");
    await pair.stop("beta");
    // Both come up Secondary (drbdadm up) and connect; alpha is promoted afterwards. (Promoting before the
    // peer connects starts a new generation, as the kernel's drbd_set_role does, and a 0-block resync.)
    await pair.start("alpha", "drbdadm_up");
    await pair.start("beta", "drbdadm_up");
    await pair.waitInSync();
    for (const name of ["alpha", "beta"] as const) {
      const s = await pair.status(name);
      assert.deepEqual(
        s.sync_decision?.result,
        0,
        `${name} sync decision: ${JSON.stringify(s.sync_decision)}`,
      );
      assert.equal(s.resync?.requests, 0, `${name} resync: ${JSON.stringify(s.resync)}`);
      assert.equal(s.resync?.requested_blocks, 0);
      assert.equal(s.out_of_sync_kib, 0, `${name} out of sync`);
    }
    await pair.admOk("alpha", "primary");
    assert.equal((await pair.status("alpha")).role, "Primary");
    assert.equal(await load.verify("beta"), load.acked.size);
  });

  it("a crash of the Primary resyncs no more than its activity log", { timeout: 90000 }, async () => {
    assert.ok(blocks > 0, "the first test ran");
    const load = new LoadWriter(pair, "alpha", {
      sessions: 4,
      blocksPerWrite: 4,
      firstBlock: 0,
      lastBlock: blocks,
      tagBase: 0x10,
    });
    await load.start();
    await load.waitWrites(300, 45000);
    await pair.kill("alpha");
    await load.lost();
    const sb = await pair.status("beta");
    assert.equal(sb.role, "Secondary");
    assert.equal(sb.disk, "UpToDate");

    await pair.start("alpha", "drbdadm_up_primary");
    await pair.waitInSync();
    const sa = await pair.status("alpha");
    const sbAfter = await pair.status("beta");
    assert.equal(sa.role, "Primary");
    assert.ok(
      sa.sync_decision !== undefined && sa.sync_decision.result > 0,
      `the crashed Primary becomes SyncSource: ${JSON.stringify(sa.sync_decision)}`,
    );
    const rs = sbAfter.resync as { total_bits: number; requests: number; requested_blocks: number };
    const bound = AL_EXTENTS * 1024;
    const all = (blocks * pair.blockSize) / 4096;
    process.stderr.write(
      `drbd_restart: crash resync ${rs.requests} requests / ${rs.requested_blocks} blocks (AL bound ${bound}, device ${all}), decision ${JSON.stringify(sa.sync_decision)}\n`,
    );
    assert.ok(rs.requested_blocks > 0, `the crash left something to resync: ${JSON.stringify(rs)}`);
    assert.ok(
      rs.requested_blocks <= bound,
      `resync ${rs.requested_blocks} blocks exceeds the activity log (${AL_EXTENTS} extents = ${bound} blocks; device ${all})`,
    );
    assert.equal(sa.out_of_sync_kib, 0);
    assert.equal(sbAfter.out_of_sync_kib, 0);
    assert.equal(await load.verify("beta"), load.acked.size);

    await pair.stop("beta");
    await pair.stop("alpha");
    await pair.assertFilesEqual(blocks * pair.blockSize);
  });
});
