/**
 * on-io-error detach on two usertgt servers (drbd_fixture.ts; DRBD ports 8140-8149, iSCSI 3700-3719): both
 * backing files are served by the test's TCMUR handler `faulty` (test/support/tcmur_faulty), which fails
 * every request with EIO while `<file>.fail` exists. Under load through alpha's LUN (the Primary), alpha's
 * disk is made to fail: alpha goes Diskless and stays Primary, no WRITE fails, the load goes on with reads
 * and writes served by beta, and every acknowledged block reads back correct through alpha (from beta) and
 * through beta.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { DrbdPair, LoadWriter, until } from "./drbd_fixture.js";

const HANDLER_DIR = fileURLToPath(new URL("../support/tcmur_faulty", import.meta.url));

describe("DRBD on-io-error detach: a failing backing disk under load", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-io-error", {
      sizeMiB: 16,
      disk: "resync-rate 100M; on-io-error detach;",
      tcmurHandler: "faulty",
      drbdPorts: [8140, 8149],
      iscsiPorts: [3700, 3719],
    });
  });
  after(async () => {
    await pair.close();
  });

  it(
    "the Primary detaches and serves its LUN from the peer; every acknowledged block reads back",
    { timeout: 180000 },
    async () => {
      await pair.start("alpha", "drbdadm_up_primary", ["--handler-dir", HANDLER_DIR]);
      await pair.start("beta", "drbdadm_up", ["--handler-dir", HANDLER_DIR]);
      await pair.waitInSync();

      const load = new LoadWriter(pair, "alpha", {
        sessions: 3,
        blocksPerWrite: 8,
        firstBlock: 0,
        lastBlock: 2048,
      });
      await load.start();
      await load.waitWrites(150, 30000);
      await writeFile(`${pair.nodes.alpha.file}.fail`, "");
      await until("alpha Diskless", async () => (await pair.status("alpha")).disk === "Diskless", 20000);
      const atFailure = load.writes;
      await load.waitWrites(atFailure + 300, 30000);
      await load.stop();
      assert.deepEqual(load.failures, [], "no WRITE failed");

      const st = await pair.status("alpha");
      assert.equal(st.role, "Primary");
      assert.equal(st.disk, "Diskless");
      assert.equal(st.connection, "Connected");
      assert.equal(st.peer_disk, "UpToDate");
      assert.match(await pair.statusText("alpha"), /^r0 role:Primary\n {2}disk:Diskless\n/);
      assert.match(pair.stderr("alpha"), /Local IO failed in (read|write)/);

      // Every acknowledged block, through alpha (read from beta) and through beta's own disk.
      assert.equal(
        await load.verify("alpha"),
        load.acked.size,
        "alpha reads every acknowledged block from beta",
      );
      assert.equal(await load.verify("beta"), load.acked.size);
    },
  );
});
