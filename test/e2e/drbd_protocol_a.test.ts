/**
 * DRBD protocol A: with writes running on the Primary, `drbdadm disconnect` mid-way; the
 * writes go on (StandAlone Primary, marking its bitmap), stop; `drbdadm connect`: the resync transfers
 * exactly the blocks the bitmap marked (beta's requested_blocks == alpha's out_of_sync_kib / 4), and
 * afterwards both backing files are equal and every acknowledged write reads back from beta.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { DrbdPair, LoadWriter, until } from "./drbd_fixture.js";

interface VerifyStatus {
  verify?: { running: boolean; checked_blocks: number; out_of_sync_blocks: number };
}

describe("DRBD protocol A: disconnect during writes, reconnect", () => {
  let pair: DrbdPair;
  let blocks = 0;
  before(async () => {
    pair = await DrbdPair.create("drbd-proto-a", { protocol: "A", sizeMiB: 16, net: "verify-alg sha1;" });
  });
  after(async () => {
    await pair.close();
  });

  it("the resync transfers exactly the blocks marked out of sync", { timeout: 90000 }, async () => {
    await pair.start("alpha", "drbdadm_up_primary");
    await pair.start("beta", "drbdadm_up");
    await pair.waitInSync();
    blocks = await pair.usableBlocks("alpha");
    const load = new LoadWriter(pair, "alpha", {
      sessions: 3,
      blocksPerWrite: 2,
      firstBlock: 0,
      lastBlock: blocks,
    });
    await load.start();
    await load.waitWrites(150);
    await pair.admOk("alpha", "disconnect");
    const atDisconnect = load.writes;
    assert.equal((await pair.status("alpha")).connection, "StandAlone");
    await load.waitWrites(atDisconnect + 150);
    await load.stop();

    const sa = await pair.status("alpha");
    const oos = sa.out_of_sync_kib ?? 0;
    assert.ok(oos > 0, `writes while disconnected are marked: ${JSON.stringify(sa)}`);
    assert.equal(oos % 4, 0);
    await until(
      "beta sees the peer gone",
      async () => (await pair.status("beta")).connection !== "Connected",
      20000,
    );

    await pair.admOk("alpha", "connect");
    await pair.waitInSync();
    const sb = await pair.status("beta");
    const rs = sb.resync as { total_bits: number; requests: number; requested_blocks: number };
    process.stderr.write(
      `drbd_protocol_a: ${load.writes} WRITEs (${load.writes - atDisconnect} after the disconnect), alpha out of sync ${oos} KiB, beta resync ${JSON.stringify(rs)}\n`,
    );
    assert.ok(
      sb.sync_decision !== undefined && sb.sync_decision.result < 0,
      JSON.stringify(sb.sync_decision),
    );
    assert.equal(rs.total_bits, oos / 4, "the resync started with exactly the marked blocks");
    assert.equal(rs.requested_blocks, oos / 4, "the resync requested exactly the marked blocks");
    assert.equal((await pair.status("alpha")).out_of_sync_kib, 0);
    assert.equal(sb.out_of_sync_kib, 0);
    assert.equal(await load.verify("beta"), load.acked.size);

    // Online verify (net { verify-alg sha1; }) over the whole device: nothing differs.
    await pair.admOk("alpha", "verify");
    await until(
      "online verify done",
      async () => {
        const v = (await pair.status("alpha")) as VerifyStatus;
        return v.verify?.running === false && v.verify.checked_blocks > 0;
      },
      30000,
      async () => JSON.stringify(await pair.status("alpha")),
    );
    const v = ((await pair.status("alpha")) as VerifyStatus).verify;
    assert.equal(v?.checked_blocks, (blocks * pair.blockSize) / 4096, "verify checked every 4 KiB block");
    assert.equal(v?.out_of_sync_blocks, 0, "verify found no difference");
    assert.equal((await pair.status("alpha")).out_of_sync_kib, 0);

    await pair.stop("beta");
    await pair.stop("alpha");
    await pair.assertFilesEqual(blocks * pair.blockSize);
  });

  it("kill -9 of the Secondary under load: what it never wrote is resynced", { timeout: 90000 }, async () => {
    assert.ok(blocks > 0, "the first test ran");
    await pair.start("alpha", "drbdadm_up_primary");
    await pair.start("beta", "drbdadm_up");
    await pair.waitInSync();
    const load = new LoadWriter(pair, "alpha", {
      sessions: 3,
      blocksPerWrite: 8,
      firstBlock: 0,
      lastBlock: blocks,
      tagBase: 0x10,
    });
    await load.start();
    await load.waitWrites(150);
    // Protocol A acknowledged writes still in flight to beta (in its socket buffer, or not yet written)
    // are lost with it; alpha must mark them out of sync (tl_clear) for the next resync.
    await pair.kill("beta");
    const atKill = load.writes;
    await load.waitWrites(atKill + 50);
    await load.stop();
    assert.deepEqual(load.failures, []);
    await pair.start("beta", "drbdadm_up");
    await pair.waitInSync();
    assert.equal(await load.verify("beta"), load.acked.size);
    await pair.stop("beta");
    await pair.stop("alpha");
    await pair.assertFilesEqual(blocks * pair.blockSize);
  });
});
