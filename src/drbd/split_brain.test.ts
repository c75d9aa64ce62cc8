/**
 * Split brain between two real nodes on 127.0.0.1 (ports 7900-7909): both change the data while
 * disconnected, then reconnect under an after-sb policy or --discard-my-data. The loser's changed blocks
 * must be overwritten by a bitmap-based resync from the winner, and both lower devices end byte-identical.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { AFTER_SB_POLICY } from "./protocol.js";
import type { AfterSbPolicies } from "./after_sb.js";
import type { DrbdConnection } from "./connection.js";
import { dataEqual, link, pattern, sharedGenerationPair, type Node, type Pair } from "./pair_fixture.js";

const n = (name: string) => AFTER_SB_POLICY[name] as number;
let nextPort = 7900;
/** Tests in this file run one after another; five port pairs in turn. */
function ports(): [number, number] {
  const p = nextPort;
  nextPort = nextPort >= 7908 ? 7900 : nextPort + 2;
  return [p, p + 1];
}

interface Scenario {
  /** Policies as node A configures them; B gets the mirrored discard-local/-remote. */
  policies?: Partial<AfterSbPolicies>;
  /** 4 KiB blocks each side writes while disconnected (A from block 100, B from block 98: they overlap). */
  aBlocks: number;
  bBlocks: number;
  /** Roles when they reconnect. */
  aPrimary?: boolean;
  bPrimary?: boolean;
  aDiscardMyData?: boolean;
}

interface Outcome {
  aBlocks: number;
  bBlocks: number;
  pair: Pair;
  ca: DrbdConnection;
  cb: DrbdConnection;
}

const swapLocal = (v: number) =>
  v === n("discard-local") ? n("discard-remote") : v === n("discard-remote") ? n("discard-local") : v;

/** Connected pair, A Primary; the link drops; A writes, B is promoted and writes; then they reconnect. */
async function splitBrain(t: { after: (fn: () => Promise<void>) => void }, s: Scenario): Promise<Outcome> {
  const pair = await sharedGenerationPair(t);
  const { a, b } = pair;
  const asb: AfterSbPolicies = { after0p: 0, after1p: 0, after2p: 0, ...s.policies };
  const [pa, pb] = ports();
  const ca = link(t, a.dev, pa, pb, { afterSb: asb });
  const cb = link(t, b.dev, pb, pa, { afterSb: { ...asb, after0p: swapLocal(asb.after0p) } });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await a.dev.primary();
  await a.dev.writev(0, [pattern(4096, 7)]); // mirrored: in sync
  await ca.disconnect();
  await cb.disconnect();
  await write(a, 100, s.aBlocks, 1);
  await b.dev.primary();
  await write(b, 98, s.bBlocks, 2);
  if (!s.aPrimary) await a.dev.secondary();
  if (!s.bPrimary) await b.dev.secondary();
  await Promise.all([ca.connect({ discardMyData: s.aDiscardMyData === true }), cb.connect()]);
  return { pair, ca, cb, aBlocks: s.aBlocks, bBlocks: s.bBlocks };
}

async function write(node: Node, firstBlock: number, blocks: number, seed: number): Promise<void> {
  for (let i = 0; i < blocks; i++)
    await node.dev.writev(((firstBlock + i) * 4096) / 512, [pattern(4096, seed + i)]);
}

async function read(node: Node, block: number): Promise<Buffer> {
  const buf = Buffer.alloc(4096);
  await node.lower.readv((block * 4096) / 512, [buf]);
  return buf;
}

/** The winner became SyncSource, the resync ran, both are Connected and equal; the loser has the winner's blocks. */
async function assertSyncedFrom(o: Outcome, winner: "a" | "b"): Promise<void> {
  const [src, dst] = winner === "a" ? [o.ca, o.cb] : [o.cb, o.ca];
  await Promise.all([src.waitFor("Connected"), dst.waitFor("Connected")]);
  assert.ok(src.lastSplitBrain && src.lastSplitBrain.result > 0, `${winner} is the sync source`);
  assert.ok(dst.lastSplitBrain && dst.lastSplitBrain.result < 0, "the other is the sync target");
  // Bitmap-based: exactly the blocks either side changed (both bitmaps merged), not a full sync.
  const changed = new Set<number>();
  for (let i = 0; i < o.aBlocks; i++) changed.add(100 + i);
  for (let i = 0; i < o.bBlocks; i++) changed.add(98 + i);
  assert.equal(dst.resyncStats.total, changed.size);
  assert.equal(src.resyncStats.total, changed.size);
  const { a, b } = o.pair;
  assert.equal(a.dev.bitmap.outOfSyncBits + b.dev.bitmap.outOfSyncBits, 0);
  assert.ok(await dataEqual(o.pair), "both lower devices are equal");
  // Block 98 was written only by B, block 100+ by both: they now hold the winner's version everywhere.
  const w = winner === "a" ? a : b;
  assert.deepEqual(await read(a, 98), await read(w, 98));
  assert.deepEqual(await read(b, 100), await read(w, 100));
  if (winner === "a")
    assert.notDeepEqual(await read(b, 98), pattern(4096, 2), "B's own block 98 was overwritten");
  else assert.deepEqual(await read(a, 98), pattern(4096, 2), "B's block 98 reached A");
  assert.equal(a.dev.disk, "UpToDate");
  assert.equal(b.dev.disk, "UpToDate");
}

async function assertUnresolved(o: Outcome): Promise<void> {
  await Promise.all([o.ca.waitFor("StandAlone"), o.cb.waitFor("StandAlone")]);
  for (const c of [o.ca, o.cb]) {
    assert.equal(c.error, "Split-Brain detected but unresolved, dropping connection!");
    assert.equal(c.lastSplitBrain?.by, "unresolved");
    assert.equal(Math.abs(c.lastDecision?.result ?? 0), 100);
  }
  assert.equal(await dataEqual(o.pair), false, "nothing was synced");
}

test("after-sb-0pri disconnect (the default): StandAlone on both sides, data untouched", async (t) => {
  await assertUnresolved(await splitBrain(t, { aBlocks: 2, bBlocks: 2 }));
});

test("after-sb-0pri discard-younger-primary: the node that was Primary at the split wins", async (t) => {
  const o = await splitBrain(t, {
    policies: { after0p: n("discard-younger-primary") },
    aBlocks: 1,
    bBlocks: 4,
  });
  await assertSyncedFrom(o, "a");
  assert.equal(o.ca.lastSplitBrain?.primaries, 0);
});

test("after-sb-0pri discard-older-primary: the node promoted after the split wins", async (t) => {
  const o = await splitBrain(t, {
    policies: { after0p: n("discard-older-primary") },
    aBlocks: 4,
    bBlocks: 1,
  });
  await assertSyncedFrom(o, "b");
});

test("after-sb-0pri discard-least-changes: the node with fewer changed blocks loses", async (t) => {
  const o = await splitBrain(t, {
    policies: { after0p: n("discard-least-changes") },
    aBlocks: 1,
    bBlocks: 5,
  });
  await assertSyncedFrom(o, "b");
});

test("after-sb-0pri discard-zero-changes with changes on both sides: unresolved", async (t) => {
  await assertUnresolved(
    await splitBrain(t, { policies: { after0p: n("discard-zero-changes") }, aBlocks: 1, bBlocks: 1 }),
  );
});

test("after-sb-0pri discard-local on A (discard-remote on B): A loses", async (t) => {
  const o = await splitBrain(t, { policies: { after0p: n("discard-local") }, aBlocks: 6, bBlocks: 1 });
  await assertSyncedFrom(o, "b");
});

test("after-sb-1pri discard-secondary: the Primary wins", async (t) => {
  const o = await splitBrain(t, {
    policies: { after1p: n("discard-secondary") },
    aBlocks: 5,
    bBlocks: 1,
    bPrimary: true,
  });
  await assertSyncedFrom(o, "b");
  assert.equal(o.cb.lastSplitBrain?.primaries, 1);
  assert.equal(o.pair.b.dev.role, "Primary");
});

test("after-sb-1pri call-pri-lost-after-sb: the losing Primary gives up its role and becomes SyncTarget", async (t) => {
  const o = await splitBrain(t, {
    policies: { after0p: n("discard-least-changes"), after1p: n("call-pri-lost-after-sb") },
    aBlocks: 5,
    bBlocks: 1,
    bPrimary: true,
  });
  await assertSyncedFrom(o, "a");
  assert.equal(o.pair.b.dev.role, "Secondary");
});

test("after-sb-2pri disconnect: two Primaries stay apart", async (t) => {
  const o = await splitBrain(t, {
    policies: { after0p: n("discard-least-changes"), after1p: n("discard-secondary") },
    aBlocks: 1,
    bBlocks: 2,
    aPrimary: true,
    bPrimary: true,
  });
  await assertUnresolved(o);
  assert.equal(o.ca.lastSplitBrain?.primaries, 2);
});

test("connect --discard-my-data: the node that asked becomes SyncTarget; refused on a Primary", async (t) => {
  const o = await splitBrain(t, { aBlocks: 1, bBlocks: 5, aDiscardMyData: true });
  await assertSyncedFrom(o, "b");
  assert.equal(o.ca.lastSplitBrain?.by, "discard-my-data");
  await o.ca.disconnect();
  await o.pair.a.dev.primary();
  await assert.rejects(o.ca.connect({ discardMyData: true }), /--discard-my-data not allowed when primary\./);
});

test("different after-sb-0pri settings: incompatible, StandAlone", async (t) => {
  const { a, b } = await sharedGenerationPair(t);
  const [pa, pb] = ports();
  const ca = link(t, a.dev, pa, pb, {
    afterSb: { after0p: n("discard-least-changes"), after1p: 0, after2p: 0 },
  });
  const cb = link(t, b.dev, pb, pa);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("StandAlone"), cb.waitFor("StandAlone")]);
  assert.equal(ca.error, "incompatible after-sb-0pri settings");
});

test("after-sb-1pri violently-as0p against the Primary: 'I shall become SyncTarget, but I am primary!'", async (t) => {
  const o = await splitBrain(t, {
    policies: { after0p: n("discard-least-changes"), after1p: n("violently-as0p") },
    aBlocks: 5,
    bBlocks: 1,
    bPrimary: true,
  });
  await o.cb.waitFor("StandAlone");
  assert.equal(o.cb.error, "I shall become SyncTarget, but I am primary!");
  assert.equal(o.cb.lastSplitBrain?.by, "after-sb");
  assert.equal(o.pair.b.dev.role, "Primary", "violently-as0p does not demote");
});

test("always-asbp: an ambiguous split brain (−100, histories only) is resolved by the policy with a full sync", async (t) => {
  const pair = await sharedGenerationPair(t, 4);
  const { a, b } = pair;
  // Generations that share only a history UUID (rule 100), as after several unrelated splits.
  const g = a.dev.uuids[0] & ~1n;
  await a.dev.setUuids([0x1110n, 0x2220n, g, 0n]);
  await b.dev.setUuids([0x3330n, 0x4440n, g, 0n]);
  await b.lower.writev(8, [pattern(4096, 3)]); // unmarked: only a full sync repairs it
  const asb = { after0p: n("discard-least-changes"), after1p: 0, after2p: 0 };
  const [pa, pb] = ports();
  const ca = link(t, a.dev, pa, pb, { afterSb: asb, alwaysAsbp: true });
  const cb = link(t, b.dev, pb, pa, { afterSb: asb, alwaysAsbp: true });
  a.dev.bitmap.setRange(10, 14); // A "changed" 5 blocks, B none: B loses
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected", 15000), cb.waitFor("Connected", 15000)]);
  assert.equal(ca.lastDecision?.result, -100);
  assert.equal(ca.lastDecision?.rule, 100);
  assert.equal(ca.lastSplitBrain?.result, 2, "full sync from A");
  assert.equal(cb.resyncStats.total, b.dev.bitmap.bits);
  assert.ok(await dataEqual(pair));
});

test("without always-asbp the ambiguous split brain stays unresolved", async (t) => {
  const { a, b } = await sharedGenerationPair(t, 4);
  const g = a.dev.uuids[0] & ~1n;
  await a.dev.setUuids([0x1110n, 0x2220n, g, 0n]);
  await b.dev.setUuids([0x3330n, 0x4440n, g, 0n]);
  const asb = { after0p: n("discard-least-changes"), after1p: 0, after2p: 0 };
  const [pa, pb] = ports();
  const ca = link(t, a.dev, pa, pb, { afterSb: asb });
  const cb = link(t, b.dev, pb, pa, { afterSb: asb });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("StandAlone"), cb.waitFor("StandAlone")]);
  assert.equal(ca.error, "Split-Brain detected but unresolved, dropping connection!");
});
