/**
 * A Diskless node on two usertgt servers (drbd_fixture.ts; DRBD ports 8270-8279, iSCSI 3780-3799), under
 * load through alpha's LUN (the Primary): `drbdadm detach` leaves alpha Primary, Diskless and connected, its
 * writes land on beta's disk (and a disconnect is refused); `drbdadm attach` brings its disk back, the blocks
 * written meanwhile are resynced from beta's bitmap and alpha is UpToDate. No WRITE fails; every acknowledged block reads back through both nodes, and the two
 * backing files are equal at the end.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { DrbdPair, LoadWriter, until } from "./drbd_fixture.js";

describe("DRBD Diskless Primary: detach and re-attach under load", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-diskless", {
      sizeMiB: 16,
      drbdPorts: [8270, 8279],
      iscsiPorts: [3780, 3799],
    });
  });
  after(async () => {
    await pair.close();
  });

  it("detach, Diskless writes land on the peer, attach resyncs them", { timeout: 180000 }, async () => {
    await pair.start("alpha", "drbdadm_up_primary");
    await pair.start("beta", "drbdadm_up");
    await pair.waitInSync();
    const load = new LoadWriter(pair, "alpha", {
      sessions: 2,
      blocksPerWrite: 8,
      firstBlock: 0,
      lastBlock: 1536,
    });
    await load.start();
    await load.waitWrites(100, 30000);

    await pair.admOk("alpha", "detach");
    let st = await pair.status("alpha");
    assert.equal(st.role, "Primary");
    assert.equal(st.disk, "Diskless");
    assert.equal(st.connection, "Connected");
    assert.equal(st.peer_disk, "UpToDate");
    await until(
      "beta sees a Diskless peer",
      async () => (await pair.status("beta")).peer_disk === "Diskless",
    );
    await load.waitWrites(load.writes + 200, 30000);
    await load.stop();
    assert.deepEqual(load.failures, [], "no WRITE failed across the detach");
    const outOfSync = (await pair.status("beta")).out_of_sync_kib ?? 0;
    assert.ok(outOfSync > 0, "beta tracks the Diskless Primary's writes");
    assert.equal(await load.verify("beta"), load.acked.size, "beta's disk has every acknowledged block");

    // A Diskless Primary cannot drop the only UpToDate data it has (drbdsetup's "(-2)").
    const refused = await pair.adm("alpha", "disconnect");
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /Need access to UpToDate data/);
    assert.equal(await load.verify("alpha"), load.acked.size, "alpha reads every block from beta");

    // Blocks of their own, so that both loads' acknowledged blocks can be checked at the end.
    const second = new LoadWriter(pair, "alpha", {
      sessions: 2,
      blocksPerWrite: 8,
      firstBlock: 1536,
      lastBlock: 3072,
      tagBase: 10,
    });
    await second.start();
    await second.waitWrites(100, 30000);
    await pair.admOk("alpha", "attach");
    // On failure with DRBD_TEST_LOGS set: both servers' logs.
    const dump = (e: Error): never => {
      if (process.env.DRBD_TEST_LOGS)
        process.stderr.write(
          `${pair.stderr("alpha").slice(-5000)}\n=====BETA\n${pair.stderr("beta").slice(-5000)}`,
        );
      throw e;
    };
    await until(
      "alpha UpToDate after the resync",
      async () => {
        const s = await pair.status("alpha");
        return s.disk === "UpToDate" && s.connection === "Connected" && s.peer_disk === "UpToDate";
      },
      60000,
    ).catch(dump);
    await second.waitWrites(second.writes + 100, 30000).catch(dump);
    await second.stop();
    assert.deepEqual(second.failures, [], "no WRITE failed across the attach");
    st = await pair.status("alpha");
    assert.equal(st.role, "Primary");
    assert.ok((st.resync?.requested_blocks ?? 0) > 0, "the re-attached disk was resynced");
    assert.ok(
      (st.resync?.requested_blocks ?? 0) < (st.resync?.total_bits ?? 0) ||
        (st.resync?.total_bits ?? 0) < 4096,
      "a bitmap-based resync, not a full one",
    );
    for (const l of [load, second]) {
      assert.equal(await l.verify("alpha").catch(dump), l.acked.size);
      assert.equal(await l.verify("beta"), l.acked.size);
    }
    await pair.waitInSync();
    await pair.assertFilesEqual(3072 * 4096);
  });
});
