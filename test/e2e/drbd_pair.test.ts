/**
 * DRBD across two servers (drbd_fixture.ts): alpha's BIO runs `drbdadm_up_primary` (fresh metadata →
 * primary --force), beta's runs `drbdadm_up` (Secondary); the initial full sync runs, a pattern written
 * through alpha's LUN reaches beta's backing file at the same offset, beta's LUN reads it too and refuses
 * writes. DRBD ports 7800-7809, iSCSI ports 3420-3439.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { open } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { DrbdPair, rw10, until } from "./drbd_fixture.js";

const BS = 512;

describe("two servers replicating one DRBD resource", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-pair", {
      blockSize: BS,
      drbdPorts: [7800, 7809],
      iscsiPorts: [3420, 3439],
    });
  });
  after(async () => {
    await pair.close();
  });

  it("sync, replicate an iSCSI write, Secondary refuses writes", { timeout: 5 * 60 * 1000 }, async () => {
    const pattern = randomBytes(64 * 1024);
    const lba = 1000;
    await pair.start("alpha", "drbdadm_up_primary");
    assert.match(
      await pair.statusText("alpha"),
      /^r0 role:Primary\n {2}disk:UpToDate\n {2}peer connection:Connecting\n$/,
    );
    await pair.start("beta", "drbdadm_up");
    await until("initial sync", async () => /peer-disk:UpToDate/.test(await pair.statusText("alpha")));
    assert.equal(
      await pair.statusText("alpha"),
      "r0 role:Primary\n  disk:UpToDate\n  peer role:Secondary\n    replication:Established peer-disk:UpToDate\n",
    );
    await until("beta UpToDate", async () => /disk:UpToDate\n/.test(await pair.statusText("beta")));
    assert.equal(
      await pair.statusText("beta"),
      "r0 role:Secondary\n  disk:UpToDate\n  peer role:Primary\n    replication:Established peer-disk:UpToDate\n",
    );

    const ia = await pair.session("alpha");
    const w = await ia.scsi(rw10(0x2a, lba, pattern.length / BS), { write: pattern });
    assert.equal(w.status, 0, `WRITE on the Primary: sense ${w.sense.toString("hex")}`);
    ia.close();

    const ib = await pair.session("beta");
    const r = await ib.scsi(rw10(0x28, lba, pattern.length / BS), { read: pattern.length });
    assert.equal(r.status, 0, `READ on the Secondary: sense ${r.sense.toString("hex")}`);
    assert.ok(r.data.equals(pattern), "the Secondary reads what was written on the Primary");
    const refused = await ib.scsi(rw10(0x2a, lba, 1), { write: Buffer.alloc(BS, 0x5a) });
    assert.equal(refused.status, 2, "WRITE on the Secondary: CHECK CONDITION");
    assert.equal(refused.sense[2] & 0x0f, 0x07, `DATA PROTECT, got sense ${refused.sense.toString("hex")}`);
    ib.close();

    await pair.stop("beta");
    await pair.stop("alpha");
    // beta's backing file holds the pattern at the same offset (internal metadata sits at the end).
    const fh = await open(pair.nodes.beta.file, "r");
    try {
      const got = Buffer.alloc(pattern.length);
      await fh.read(got, 0, got.length, lba * BS);
      assert.ok(got.equals(pattern), "the Secondary's lower device holds the Primary's write");
    } finally {
      await fh.close();
    }
  });
});
