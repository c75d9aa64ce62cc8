/**
 * Checksum-based resync between two usertgt servers (`net { csums-alg crc32c; }` in the .res both read;
 * DRBD ports 8040-8049, iSCSI 3640-3659): the initial full sync of two zeroed disks sends no data; after a
 * `drbdadm disconnect`, 4 blocks changed and 3 rewritten with the data they hold through iSCSI on the
 * Primary, `drbdadm connect` resyncs exactly the 4 as P_RS_DATA_REPLY and the 3 as P_RS_IS_IN_SYNC
 * (drbd_status `resync`, both nodes), and the backing files end equal.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { DrbdPair, rw10, until } from "./drbd_fixture.js";

interface CsumsResync {
  total_bits: number;
  csums: boolean;
  same_csum_blocks: number;
  transferred_blocks: number;
}

const CHANGED = [100, 300, 500, 700];
const SAME = [10, 40, 1000];

describe("DRBD csums-alg: checksum-based resync between two servers", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-csums", {
      sizeMiB: 16,
      net: "csums-alg crc32c;",
      drbdPorts: [8040, 8049],
      iscsiPorts: [3640, 3659],
    });
  });
  after(async () => {
    await pair.close();
  });

  it("sends only the blocks that differ", { timeout: 120000 }, async () => {
    await pair.start("alpha", "drbdadm_up_primary");
    await pair.start("beta", "drbdadm_up");
    await pair.waitInSync();
    const bits = (await pair.usableBlocks("alpha")) * (pair.blockSize / 4096);
    const first = (await pair.status("beta")).resync as unknown as CsumsResync;
    assert.deepEqual(
      first,
      { ...first, total_bits: bits, csums: true, transferred_blocks: 0, same_csum_blocks: bits },
      "two zeroed disks: the full sync found every block equal",
    );

    const bs = pair.blockSize;
    const ini = await pair.session("alpha");
    const write = async (lba: number, data: Buffer) => {
      const r = await ini.scsi(rw10(0x2a, lba, data.length / bs), { write: data });
      assert.equal(r.status, 0, `WRITE at ${lba}: ${r.sense.toString("hex")}`);
    };
    const data = Buffer.alloc(64 * bs);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32BE(Math.imul(i, 2654435761) >>> 0, i);
    await write(0, data); // mirrored: both copies hold it

    await pair.admOk("alpha", "disconnect");
    await until(
      "beta sees the peer gone",
      async () => (await pair.status("beta")).connection !== "Connected",
      20000,
    );
    for (const [n, lba] of CHANGED.entries()) await write(lba, Buffer.alloc(bs, 0x41 + n));
    for (const lba of SAME)
      await write(lba, lba < 64 ? data.subarray(lba * bs, (lba + 1) * bs) : Buffer.alloc(bs));
    ini.close();
    assert.equal((await pair.status("alpha")).out_of_sync_kib, (CHANGED.length + SAME.length) * 4);

    await pair.admOk("alpha", "connect");
    await pair.waitInSync();
    const want = {
      total_bits: CHANGED.length + SAME.length,
      csums: true,
      transferred_blocks: CHANGED.length,
      same_csum_blocks: SAME.length,
    };
    for (const name of ["beta", "alpha"] as const) {
      const rs = (await pair.status(name)).resync as unknown as CsumsResync;
      process.stderr.write(`drbd_csums: ${name} resync ${JSON.stringify(rs)}\n`);
      assert.equal(rs.csums, true, name);
      assert.equal(rs.transferred_blocks, want.transferred_blocks, `${name}: blocks sent as data`);
      assert.equal(rs.same_csum_blocks, want.same_csum_blocks, `${name}: blocks found equal`);
    }
    assert.equal(((await pair.status("beta")).resync as unknown as CsumsResync).total_bits, want.total_bits);

    await pair.stop("beta");
    await pair.stop("alpha");
    await pair.assertFilesEqual(bits * 4096);
  });
});
