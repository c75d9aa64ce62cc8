/**
 * DRBD net { data-integrity-alg crc32c; } end to end: two `usertgt serve` nodes agree on the algorithm in
 * P_PROTOCOL, the initial resync (P_RS_DATA_REPLY with digests) and iSCSI writes replicated under load
 * (P_DATA with digests) arrive intact: every acknowledged write reads back from beta, and after a clean stop
 * both backing files are equal. Then beta restarts with a different algorithm and the pair refuses to
 * connect ("incompatible data-integrity-alg settings"), as kernel DRBD does.
 * Ports: iSCSI 3620-3639, DRBD 8000-8019.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { DrbdPair, LoadWriter, until } from "./drbd_fixture.js";

describe("DRBD data-integrity-alg crc32c", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-integrity", {
      protocol: "C",
      sizeMiB: 16,
      net: "data-integrity-alg crc32c;",
      drbdPorts: [8000, 8019],
      iscsiPorts: [3620, 3639],
    });
  });
  after(async () => {
    await pair.close();
  });

  it(
    "resync and replicated writes arrive intact; a different alg is refused",
    { timeout: 120000 },
    async () => {
      await pair.start("alpha", "drbdadm_up_primary");
      const blocks = await pair.usableBlocks("alpha");
      // Written before beta exists: these reach beta through the initial resync (P_RS_DATA_REPLY + digest).
      const early = new LoadWriter(pair, "alpha", {
        sessions: 1,
        blocksPerWrite: 4,
        firstBlock: 0,
        lastBlock: blocks,
      });
      await early.start();
      await early.waitWrites(40);
      await early.stop();
      await pair.start("beta", "drbdadm_up");
      await pair.waitInSync();
      assert.match(pair.drbdLog("beta", 200), /data-integrity-alg in use/);
      assert.equal(await early.verify("beta"), early.acked.size);

      const load = new LoadWriter(pair, "alpha", {
        sessions: 3,
        blocksPerWrite: 16,
        firstBlock: 0,
        lastBlock: blocks,
        tagBase: 0x20,
      });
      await load.start();
      await load.waitWrites(300);
      await load.stop();
      assert.deepEqual(load.failures, []);
      assert.equal(
        (await pair.status("alpha")).connection,
        "Connected",
        "no digest mismatch dropped the link",
      );
      assert.equal(await load.verify("beta"), load.acked.size);
      await pair.stop("beta");
      await pair.stop("alpha");
      await pair.assertFilesEqual(blocks * pair.blockSize);

      // beta with sha1, alpha with crc32c: receive_protocol's "incompatible data-integrity-alg settings".
      const res = await readFile(pair.resPath, "utf8");
      await pair.start("alpha", "drbdadm_up_primary");
      await writeFile(pair.resPath, res.replace("data-integrity-alg crc32c;", "data-integrity-alg sha1;"));
      await pair.start("beta", "drbdadm_up");
      await until(
        "the pair refuses the different data-integrity-alg",
        async () => /data-integrity-alg/.test((await pair.status("beta")).last_error ?? ""),
        30000,
        async () =>
          `${JSON.stringify(await pair.status("beta"))} ${JSON.stringify(await pair.status("alpha"))}`,
      );
      assert.notEqual((await pair.status("alpha")).connection, "Connected");
      await writeFile(pair.resPath, res);
    },
  );
});
