/**
 * DRBD, split brain: the pair is disconnected, both sides write, and on reconnect the UUIDs
 * show that both changed the data since their last shared generation.
 *   First pair (after-sb-1pri/2pri at their default, disconnect; `after-sb-0pri discard-zero-changes`):
 *   - both Primary: unresolved, both StandAlone with the kernel's message; manual recovery `drbdadm
 *     secondary` + `connect --discard-my-data` on the victim (beta) makes it SyncTarget;
 *   - a side promoted and demoted while apart without writing has zero changes and loses.
 *   Second pair (`after-sb-0pri discard-younger-primary; after-sb-1pri discard-secondary;`):
 *   - one Primary: discard-secondary, the Secondary's changes are overwritten;
 *   - no Primary: discard-younger-primary, the node that was Secondary when they parted loses.
 * After each resolution both backing files are equal and the loser's writes are gone.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { blockPattern, DrbdPair, rw10, until, type NodeName } from "./drbd_fixture.js";

async function writeBlock(pair: DrbdPair, node: NodeName, lba: number, tag: number): Promise<void> {
  const ini = await pair.session(node, 0x30 + tag);
  try {
    const r = await ini.scsi(rw10(0x2a, lba, 1), { write: blockPattern(pair.blockSize, lba, tag, tag) });
    assert.equal(r.status, 0, `WRITE ${lba} on ${node}: ${r.sense.toString("hex")}`);
  } finally {
    ini.close();
  }
}

async function readBlock(pair: DrbdPair, node: NodeName, lba: number): Promise<Buffer> {
  const ini = await pair.session(node, 0x20);
  try {
    const r = await ini.scsi(rw10(0x28, lba, 1), { read: pair.blockSize });
    assert.equal(r.status, 0, `READ ${lba} on ${node}: ${r.sense.toString("hex")}`);
    return r.data;
  } finally {
    ini.close();
  }
}

async function bothStandAlone(pair: DrbdPair): Promise<void> {
  await until(
    "both StandAlone",
    async () =>
      (await pair.status("alpha")).connection === "StandAlone" &&
      (await pair.status("beta")).connection === "StandAlone",
    20000,
  );
}

/** Disconnect both, then each side's writes (and role changes) while apart. */
async function apart(pair: DrbdPair): Promise<void> {
  await pair.admOk("alpha", "disconnect");
  await pair.admOk("beta", "disconnect");
  await bothStandAlone(pair);
}

/** Connect both and wait for the resync to end; returns the split-brain records of both sides. */
async function rejoin(pair: DrbdPair, betaFlags: string[] = []): Promise<void> {
  await pair.admOk("beta", "connect", ...betaFlags);
  await pair.admOk("alpha", "connect");
  await pair.waitInSync(30000);
}

interface SplitBrainStatus {
  split_brain?: { primaries: number; result: number; by: string };
}

async function splitBrain(pair: DrbdPair, node: NodeName): Promise<SplitBrainStatus["split_brain"]> {
  return ((await pair.status(node)) as SplitBrainStatus).split_brain;
}

const ZERO = (bs: number) => Buffer.alloc(bs);

/** alpha Primary, beta Secondary, in sync, 8 MiB, protocol C with `net` options; and the usable bytes. */
async function syncedPair(label: string, net: string): Promise<{ pair: DrbdPair; bytes: number }> {
  const pair = await DrbdPair.create(label, { protocol: "C", sizeMiB: 8, net });
  await pair.start("alpha", "drbdadm_up_primary");
  await pair.start("beta", "drbdadm_up");
  await pair.waitInSync();
  return { pair, bytes: (await pair.usableBlocks("alpha")) * pair.blockSize };
}

describe("DRBD split brain: default 1pri/2pri policies (disconnect), after-sb-0pri discard-zero-changes", () => {
  let pair: DrbdPair;
  let bytes = 0;
  before(async () => {
    ({ pair, bytes } = await syncedPair("drbd-sb0", "after-sb-0pri discard-zero-changes;"));
  });
  after(async () => {
    await pair.close();
  });

  it(
    "two Primaries (after-sb-2pri disconnect): both StandAlone; connect --discard-my-data on the victim",
    { timeout: 60000 },
    async () => {
      const bs = pair.blockSize;
      await apart(pair);
      await writeBlock(pair, "alpha", 100, 1);
      await pair.admOk("beta", "primary");
      await writeBlock(pair, "beta", 200, 2);
      await pair.admOk("beta", "connect");
      await pair.admOk("alpha", "connect");
      await bothStandAlone(pair);
      for (const node of ["alpha", "beta"] as const) {
        const s = await pair.status(node);
        assert.match(
          s.last_error ?? "",
          /Split-Brain detected but unresolved, dropping connection!/,
          `${node}: ${JSON.stringify(s)}`,
        );
        assert.deepEqual(await splitBrain(pair, node), { primaries: 2, result: -100, by: "unresolved" });
        assert.equal(s.role, "Primary");
      }
      assert.ok(
        (await readBlock(pair, "beta", 200)).equals(blockPattern(bs, 200, 2, 2)),
        "beta keeps its write",
      );

      // Manual recovery: beta is the victim.
      const refused = await pair.adm("beta", "connect", "--discard-my-data");
      assert.notEqual(refused.code, 0, "connect --discard-my-data is refused on a Primary");
      assert.match(refused.stderr, /not allowed when primary/);
      await pair.admOk("beta", "secondary");
      await rejoin(pair, ["--discard-my-data"]);
      const sb = await splitBrain(pair, "beta");
      assert.equal(sb?.by, "discard-my-data", JSON.stringify(sb));
      assert.ok((sb?.result ?? 0) < 0, "beta is the SyncTarget");
      assert.ok(
        (await readBlock(pair, "beta", 100)).equals(blockPattern(bs, 100, 1, 1)),
        "alpha's write reached beta",
      );
      assert.ok((await readBlock(pair, "beta", 200)).equals(ZERO(bs)), "beta's write was discarded");
      assert.equal((await pair.status("alpha")).role, "Primary");
      await pair.assertFilesEqual(bytes);
    },
  );

  it("a side promoted and demoted while apart without writing loses", { timeout: 60000 }, async () => {
    const bs = pair.blockSize;
    await writeBlock(pair, "alpha", 700, 7);
    await apart(pair);
    await writeBlock(pair, "alpha", 800, 8);
    await pair.admOk("alpha", "secondary");
    // beta: Primary for a while, no write (DRBD 8.4 drbd_set_role starts a new generation on promotion
    // while disconnected, so this is a split brain with zero changes on beta's side).
    await pair.admOk("beta", "primary");
    const promoted = (await pair.status("beta")).uuids ?? [];
    await pair.admOk("beta", "secondary");
    await rejoin(pair);
    assert.ok(
      (await readBlock(pair, "beta", 800)).equals(blockPattern(bs, 800, 8, 8)),
      "alpha's change reached beta",
    );
    assert.ok((await readBlock(pair, "beta", 700)).equals(blockPattern(bs, 700, 7, 7)));
    const sb = await splitBrain(pair, "beta");
    assert.deepEqual(
      sb,
      { primaries: 0, result: -1, by: "after-sb" },
      `split brain resolved by discard-zero-changes (beta's UUIDs when promoted: ${promoted.join(" ")})`,
    );
  });
});

describe("DRBD split brain: after-sb-1pri discard-secondary, after-sb-0pri discard-younger-primary", () => {
  let pair: DrbdPair;
  let bytes = 0;
  before(async () => {
    ({ pair, bytes } = await syncedPair(
      "drbd-sb",
      "after-sb-0pri discard-younger-primary; after-sb-1pri discard-secondary;",
    ));
  });
  after(async () => {
    await pair.close();
  });

  it(
    "one Primary (after-sb-1pri discard-secondary): the Secondary's changes are discarded",
    { timeout: 60000 },
    async () => {
      const bs = pair.blockSize;
      await apart(pair);
      await writeBlock(pair, "alpha", 300, 3);
      await pair.admOk("beta", "primary");
      await writeBlock(pair, "beta", 400, 4);
      await pair.admOk("beta", "secondary");
      await rejoin(pair);
      const sa = await splitBrain(pair, "alpha");
      const sb = await splitBrain(pair, "beta");
      assert.deepEqual(sb?.primaries, 1, JSON.stringify(sb));
      assert.equal(sb?.by, "after-sb");
      assert.ok((sb?.result ?? 0) < 0, `beta SyncTarget: ${JSON.stringify(sb)}`);
      assert.ok((sa?.result ?? 0) > 0, `alpha SyncSource: ${JSON.stringify(sa)}`);
      assert.ok((await readBlock(pair, "beta", 300)).equals(blockPattern(bs, 300, 3, 3)));
      assert.ok((await readBlock(pair, "beta", 400)).equals(ZERO(bs)), "the Secondary's write was discarded");
      await pair.assertFilesEqual(bytes);
    },
  );

  it(
    "no Primary (after-sb-0pri discard-younger-primary): the node promoted later loses",
    { timeout: 60000 },
    async () => {
      const bs = pair.blockSize;
      await apart(pair);
      // alpha was Primary when they parted; beta becomes Primary only afterwards (the younger one).
      await writeBlock(pair, "alpha", 500, 5);
      await pair.admOk("alpha", "secondary");
      await pair.admOk("beta", "primary");
      await writeBlock(pair, "beta", 600, 6);
      await pair.admOk("beta", "secondary");
      await rejoin(pair);
      const sb = await splitBrain(pair, "beta");
      assert.deepEqual(sb?.primaries, 0, JSON.stringify(sb));
      assert.equal(sb?.by, "after-sb");
      assert.ok((sb?.result ?? 0) < 0, `beta SyncTarget: ${JSON.stringify(sb)}`);
      assert.ok((await readBlock(pair, "beta", 500)).equals(blockPattern(bs, 500, 5, 5)));
      assert.ok(
        (await readBlock(pair, "beta", 600)).equals(ZERO(bs)),
        "the younger Primary's write was discarded",
      );
      await pair.assertFilesEqual(bytes);
      await pair.admOk("alpha", "primary");
    },
  );
});
