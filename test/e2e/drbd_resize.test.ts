/**
 * `drbdadm resize` on two running servers (drbd_fixture.ts with backing files that may grow): under
 * continuous writes through alpha's LUN both backing files grow (truncate), `drbdadm resize r0` on alpha
 * rescans them, both nodes agree on the new size over P_SIZES, the internal metadata moves to the new end,
 * the new area is resynced, and alpha's LUN reports CAPACITY DATA HAS CHANGED and the new READ CAPACITY.
 * Every acknowledged write (old area during the resize, new area after) reads back from both nodes; after
 * a clean restart of both, the moved metadata attaches, the size stays and nothing resyncs. Then a second
 * grow with --assume-clean: no resync at all.
 *
 * DRBD ports 8070-8079, iSCSI 3670-3679.
 */
import assert from "node:assert/strict";
import { truncate } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { computeLayout, SECTOR } from "../../src/drbd/metadata.js";
import type { RawInitiator } from "../support/raw_initiator.js";
import { blockPattern, DrbdPair, rw10, until, type NodeName } from "./drbd_fixture.js";

const BS = 4096;
const MiB = 1024 * 1024;

/** Usable 4 KiB blocks of a DRBD device with internal metadata on a backing file of `mib` MiB. */
function usableBlocks(mib: number): number {
  const layout = computeLayout({ lowerSectors: (mib * MiB) / SECTOR, placement: { kind: "internal" } });
  return Math.floor((layout.usableSectors * SECTOR) / BS);
}

/** A WRITE that retries once over a unit attention (what an initiator does after CAPACITY DATA HAS CHANGED). */
async function writeBlocks(ini: RawInitiator, lba: number, data: Buffer): Promise<void> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const r = await ini.scsi(rw10(0x2a, lba, data.length / BS), { write: data });
    if (r.status === 0) return;
    assert.equal(
      r.sense[2] & 0x0f,
      0x06,
      `WRITE ${lba}: status ${r.status} sense ${r.sense.toString("hex")}`,
    );
  }
  assert.fail(`WRITE ${lba}: unit attentions did not clear`);
}

/** Writers that record every acknowledged block (writer, counter) in `acked`, in [first, last). */
class Writers {
  readonly acked = new Map<number, number>();
  writes = 0;
  private stopping = false;
  private loops: Promise<void>[] = [];
  private counter = 0;

  constructor(
    private readonly sessions: RawInitiator[],
    private readonly first: number,
    private readonly last: number,
  ) {
    this.loops = sessions.map((s, w) => this.loop(s, w));
  }

  private async loop(ini: RawInitiator, writer: number): Promise<void> {
    const n = 4;
    const runs = Math.floor((this.last - this.first) / n);
    while (!this.stopping) {
      // Each writer owns every sessions-th run, so no two writes to one block are in flight at once.
      const run =
        Math.floor(Math.random() * Math.floor(runs / this.sessions.length)) * this.sessions.length + writer;
      const lba = this.first + run * n;
      const c = ++this.counter;
      const data = Buffer.concat(Array.from({ length: n }, (_, i) => blockPattern(BS, lba + i, writer, c)));
      await writeBlocks(ini, lba, data);
      for (let i = 0; i < n; i++) this.acked.set(lba + i, (writer << 24) | c);
      this.writes++;
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
  }
}

async function readCapacity(ini: RawInitiator): Promise<number> {
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x25;
  for (let attempt = 0; attempt < 3; attempt++) {
    const r = await ini.scsi(cdb, { read: 8 });
    if (r.status === 0) return r.data.readUInt32BE(0) + 1;
  }
  throw new Error("READ CAPACITY failed 3 times");
}

/** Reads every recorded block through `name`'s LUN and compares it with its last acknowledged pattern. */
async function verify(pair: DrbdPair, name: NodeName, acked: Map<number, number>): Promise<number> {
  const ini = await pair.session(name, 0x70);
  try {
    let checked = 0;
    for (const [lba, v] of [...acked].sort((a, b) => a[0] - b[0])) {
      const r = await ini.scsi(rw10(0x28, lba, 1), { read: BS });
      assert.equal(r.status, 0, `READ ${lba} on ${name}: ${r.sense.toString("hex")}`);
      assert.ok(r.data.equals(blockPattern(BS, lba, v >>> 24, v & 0xffffff)), `block ${lba} on ${name}`);
      checked++;
    }
    return checked;
  } finally {
    ini.close();
  }
}

describe("drbdadm resize on a running pair", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-resize", {
      drbdPorts: [8070, 8079],
      iscsiPorts: [3670, 3679],
      blockSize: BS,
      sizeMiB: 16,
      sizeFromFile: true,
      disk: "resync-rate 100M; c-plan-ahead 0;",
    });
    await pair.start("alpha", "drbdadm_up_primary");
    await pair.start("beta", "drbdadm_up");
    await pair.waitInSync();
  });
  after(async () => {
    await pair.close();
  });

  it(
    "grows both nodes under writes, resyncs the new area, keeps every write",
    { timeout: 5 * 60 * 1000 },
    async () => {
      const oldBlocks = usableBlocks(16);
      const newBlocks = usableBlocks(32);
      assert.equal(await pair.usableBlocks("alpha"), oldBlocks);
      const watcher = await pair.session("alpha", 0x60);
      const sessions = [await pair.session("alpha", 1), await pair.session("alpha", 2)];
      const writers = new Writers(sessions, 0, oldBlocks);
      try {
        await until("writes before the resize", async () => writers.writes >= 100);
        // Not grown yet: without both backing disks larger, resize changes nothing.
        await truncate(pair.nodes.alpha.file, 32 * MiB);
        await pair.admOk("alpha", "resize");
        assert.equal(await pair.usableBlocks("alpha"), oldBlocks, "only alpha's disk grew: the size stays");
        await truncate(pair.nodes.beta.file, 32 * MiB);
        await pair.admOk("alpha", "resize");
        // The session that was logged in hears of it first (SBC-4 4.8), then reads the new capacity.
        const tur = await watcher.scsi(Buffer.alloc(6));
        assert.equal(tur.status, 2, "TEST UNIT READY after the resize: CHECK CONDITION");
        assert.equal(tur.sense[2] & 0x0f, 0x06, "UNIT ATTENTION");
        assert.equal(
          tur.sense[12],
          0x2a,
          `ASC CAPACITY DATA HAS CHANGED, sense ${tur.sense.toString("hex")}`,
        );
        assert.equal(tur.sense[13], 0x09);
        assert.equal(await readCapacity(watcher), newBlocks);
        const more = writers.writes + 100;
        await until("writes during the resync", async () => writers.writes >= more);
      } finally {
        await writers.stop();
      }
      await pair.waitInSync();
      assert.equal(await pair.usableBlocks("beta"), newBlocks);
      assert.match(pair.drbdLog("alpha", 400), /Resync of new storage after online grow/);
      // The new area takes writes and they reach beta.
      const tail = new Writers([watcher], oldBlocks, newBlocks);
      await until("writes into the new area", async () => tail.writes >= 50);
      await tail.stop();
      watcher.close();
      for (const s of sessions) s.close();
      const all = new Map([...writers.acked, ...tail.acked]);
      await pair.waitInSync();
      for (const name of ["alpha", "beta"] as const) {
        const s = await pair.status(name);
        assert.equal(s.out_of_sync_kib, 0, `${name} ${JSON.stringify(s)}`);
        assert.equal(await verify(pair, name, all), all.size);
      }

      // The moved metadata is what both attach after a clean restart: same size, no resync.
      // The Primary first: a Primary that loses its peer would start a new generation (and a resync).
      await pair.stop("alpha");
      await pair.stop("beta");
      // Both come up Secondary and connect before alpha is promoted: no new generation (docs/drbd.md).
      await pair.start("alpha", "drbdadm_up");
      await pair.start("beta", "drbdadm_up");
      await pair.waitInSync();
      await pair.admOk("alpha", "primary");
      assert.equal(await pair.usableBlocks("alpha"), newBlocks);
      assert.equal(await pair.usableBlocks("beta"), newBlocks);
      const alpha = await pair.status("alpha");
      assert.equal(alpha.sync_decision?.result, 0, `no resync after the restart: ${JSON.stringify(alpha)}`);
      assert.equal(await verify(pair, "beta", all), all.size);
    },
  );

  it("--assume-clean: grows without a resync", { timeout: 2 * 60 * 1000 }, async () => {
    const seen = new Set<string>();
    await truncate(pair.nodes.alpha.file, 48 * MiB);
    await truncate(pair.nodes.beta.file, 48 * MiB);
    await pair.admOk("beta", "resize", "--assume-clean");
    for (const name of ["alpha", "beta"] as const) {
      const s = await pair.status(name);
      seen.add(`${s.connection}/${s.out_of_sync_kib}`);
    }
    assert.deepEqual([...seen], ["Connected/0"]);
    assert.equal(await pair.usableBlocks("alpha"), usableBlocks(48));
    assert.equal(await pair.usableBlocks("beta"), usableBlocks(48));
    assert.match(pair.drbdLog("alpha", 400), /suppressed with --assume-clean/);
  });
});
