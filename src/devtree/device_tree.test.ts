import { test } from "node:test";
import assert from "node:assert/strict";
import { MallocBdev } from "../bdev/malloc/malloc.js";
import { DeviceBusyError, DeviceTree, type DeviceNode } from "./device_tree.js";

const disk = (name: string) => new MallocBdev({ name, blockSize: 512, blockCount: 8 });

test("device tree: nodes by name and by <prefix>/dev/<name>, add/remove events", () => {
  const tree = new DeviceTree();
  const seen: string[] = [];
  tree.on("add", (n: DeviceNode) => seen.push(`+${n.path}`));
  tree.on("remove", (n: DeviceNode) => seen.push(`-${n.name}`));
  const node = tree.add("file_b", disk("file_b"), "tcmur");
  assert.equal(node.path, "/UMCfuse/dev/file_b");
  assert.equal(tree.resolve("/UMCfuse/dev/file_b"), node);
  assert.equal(tree.resolve("file_b"), node);
  assert.equal(tree.resolve("/other/dev/file_b"), undefined);
  assert.throws(() => tree.add("file_b", disk("x"), "tcmur"), /already exists/);
  assert.throws(() => tree.add("../etc", disk("x"), "tcmur"), /not a valid device name/);
  tree.remove("file_b");
  assert.deepEqual(seen, ["+/UMCfuse/dev/file_b", "-file_b"]);
  const other = new DeviceTree("/srv/tree/");
  assert.equal(other.add("drbd2", disk("drbd2"), "drbd").path, "/srv/tree/dev/drbd2");
});

test("device tree: a second writer is refused naming the holder; release frees the device", () => {
  const tree = new DeviceTree();
  tree.add("ram_b", disk("ram_b"), "tcmur");
  const w = tree.claim("/UMCfuse/dev/ram_b", "BIO bio0", "write");
  const r = tree.claim("ram_b", "FUSE reader", "read");
  assert.throws(
    () => tree.claim("ram_b", "LUN3 of iqn.x:disk1", "write"),
    (err: unknown) => err instanceof DeviceBusyError && err.holder === "BIO bio0" && /busy/.test(err.message),
  );
  assert.throws(() => tree.claim("ram_b", "DRBD", "exclusive"), DeviceBusyError);
  assert.throws(() => tree.remove("ram_b"), /claimed by BIO bio0 \(write\)/);
  w.release();
  w.release(); // twice is harmless
  const w2 = tree.claim("ram_b", "LUN3", "write");
  assert.deepEqual(
    tree
      .holders("ram_b")
      .map((h) => h.owner)
      .sort(),
    ["FUSE reader", "LUN3"],
  );
  r.release();
  w2.release();
  const x = tree.claim("ram_b", "DRBD minor 2", "exclusive");
  assert.throws(() => tree.claim("ram_b", "reader", "read"), /held by DRBD minor 2/);
  x.release();
  assert.throws(() => tree.claim("nope", "x", "read"), /no device "nope"/);
});

test("device tree: a read-only device refuses write claims", () => {
  const tree = new DeviceTree();
  tree.add("ro", disk("ro"), "tcmur", { readOnly: true });
  assert.throws(() => tree.claim("ro", "BIO b", "write"), /read-only/);
  tree.claim("ro", "reader", "read").release();
});
