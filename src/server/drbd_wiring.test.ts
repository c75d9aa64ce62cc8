import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AioBdev } from "../bdev/aio/aio.js";
import { DeviceTree } from "../devtree/device_tree.js";
import { readMetadata } from "../drbd/metadata.js";
import { isJsonObject, RpcError } from "../rpc/jsonrpc.js";
import { MethodRegistry } from "../rpc/registry.js";
import { DrbdWiring } from "./drbd_wiring.js";

const RES = `resource r3 {
    on here {
        address 127.0.0.1:7808;
        volume 0 { device drbd3 minor 3; disk "/UMCfuse/dev/disk_a"; meta-disk internal; }
    }
}
resource r4 {
    on elsewhere {
        address 127.0.0.1:7807;
        volume 0 { device drbd4 minor 4; disk "/UMCfuse/dev/disk_b"; meta-disk internal; }
    }
}
`;

async function setup(t: { after(fn: () => Promise<void>): void }) {
  const dir = await mkdtemp(join(tmpdir(), "drbd-wiring-"));
  const file = join(dir, "r.res");
  await writeFile(file, RES);
  const tree = new DeviceTree();
  const lower = await AioBdev.open({
    name: "disk_a",
    path: join(dir, "a.img"),
    blockSize: 512,
    blockCount: (8 << 20) / 512,
  });
  tree.add("disk_a", lower, "aio");
  const wiring = DrbdWiring.load({ configFile: file, nodeName: "here", tree });
  const registry = new MethodRegistry();
  wiring.registerMethods(registry);
  t.after(async () => {
    await wiring.downUnheld();
    await lower.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { wiring, registry, tree, lower };
}

async function rpcError(p: Promise<unknown>): Promise<RpcError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RpcError, `expected an RpcError, got ${String(err)}`);
    return err;
  }
  assert.fail("the call succeeded");
}

test("only this node's resources are built; drbd_adm runs commands; errors carry drbdsetup text", async (t) => {
  const { wiring, registry } = await setup(t);
  assert.deepEqual([...wiring.resources.keys()], ["r3"]);

  const notMine = await rpcError(registry.call("drbd_adm", { command: "up", resource: "r4" }));
  assert.equal(notMine.code, -19);
  assert.match(notMine.message, /'r4' not defined in your config \(for this host here\)/);
  const unsupported = await rpcError(registry.call("drbd_adm", { command: "pause-sync", resource: "r3" }));
  assert.equal(unsupported.code, -32602);
  assert.match(unsupported.message, /pause-sync: not supported/);

  // No metadata yet: up fails with the engine's hint.
  const noMd = await rpcError(registry.call("drbd_adm", { command: "up", resource: "r3" }));
  assert.equal(noMd.code, -32000);
  assert.match(noMd.message, /create-md/);

  await registry.call("drbd_adm", { command: "create-md", resource: "r3" });
  const up = await registry.call("drbd_adm", { command: "up", resource: "r3" });
  assert.ok(isJsonObject(up));
  assert.equal(up.status, "r3 role:Secondary\n  disk:Inconsistent\n");
  const refused = await rpcError(registry.call("drbd_adm", { command: "primary", resource: "r3" }));
  assert.match(refused.message, /^drbd3: State change failed: \(-2\) Need access to UpToDate data$/);
  await registry.call("drbd_adm", { command: "primary", resource: "r3", force: true });

  const st = await registry.call("drbd_status", {});
  assert.ok(isJsonObject(st) && Array.isArray(st.resources));
  const [r3] = st.resources;
  assert.ok(isJsonObject(r3));
  const uuids = r3.uuids;
  assert.ok(Array.isArray(uuids) && uuids.length === 4, "four generation UUIDs");
  assert.match(String(uuids[0]), /^[0-9A-F]{16}$/);
  assert.notEqual(uuids[0], "0000000000000004", "primary --force started a new generation");
  assert.deepEqual(st, {
    status: "r3 role:Primary\n  disk:UpToDate\n",
    resources: [
      {
        name: "r3",
        device: "drbd3",
        backing: "/UMCfuse/dev/disk_a",
        role: "Primary",
        disk: "UpToDate",
        out_of_sync_kib: 0,
        uuids,
      },
    ],
  });
});

test("drbdadm_up_primary: by disk when no resource has the name; create-md, up, primary --force", async (t) => {
  const { wiring, tree } = await setup(t);
  await assert.rejects(
    wiring.upPrimary(["spdk", "/UMCfuse/dev/nothing"]),
    /no resource named spdk and none with disk/,
  );
  await wiring.upPrimary(["spdk", "/UMCfuse/dev/disk_a"]);
  assert.equal(wiring.status("r3"), "r3 role:Primary\n  disk:UpToDate\n");
  assert.ok(tree.get("drbd3"), "drbd3 is in the tree for the BIO bdev to open");
  // Idempotent: a second run (a second BIO line) changes nothing.
  await wiring.upPrimary(["r3"]);
  assert.equal(wiring.status("r3"), "r3 role:Primary\n  disk:UpToDate\n");
});

test("down is refused while drbdN is held, without demoting; shutdown downs it once released", async (t) => {
  const { wiring, registry, tree, lower } = await setup(t);
  await wiring.upPrimary(["r3", "disk_a"]);
  const claim = tree.claim("drbd3", "BIO bio9", "write");
  const held = await rpcError(registry.call("drbd_adm", { command: "down", resource: "r3" }));
  assert.match(held.message, /\(-12\) Device is held open by someone \(BIO bio9\)/);
  assert.equal(wiring.resources.get("r3")?.device?.role, "Primary", "still Primary after the refusal");

  await wiring.hooks().beforeClose?.();
  assert.equal(wiring.resources.get("r3")?.device?.disk, "UpToDate", "held: not taken down");
  claim.release();
  await wiring.hooks().bdevClosed?.(lower);
  assert.equal(wiring.status("r3"), "r3 role:Secondary\n  disk:Diskless\n");
  assert.equal(tree.holders("disk_a").length, 0, "the backing disk is released");
  // A clean detach: the metadata reads back without replaying anything.
  const md = await readMetadata(lower, { placement: { kind: "internal" } });
  assert.ok(md.superBlock.flags & 0x80, "AL_CLEAN set");
});

test("a one-node resource gains a volume in the file: adjust asks for down; after down, adjust brings both up; RES/VOL", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-wiring-vol-"));
  const file = join(dir, "r.res");
  const res = (volumes: string) => `resource r6 {
    on here {
        address 127.0.0.1:8212;
${volumes}
    }
}
`;
  const v0 = `        volume 0 { device drbd6 minor 6; disk "/UMCfuse/dev/disk_a"; meta-disk internal; }`;
  const v1 = `        volume 1 { device drbd7 minor 7; disk "/UMCfuse/dev/disk_b"; meta-disk internal; }`;
  await writeFile(file, res(v0));
  const tree = new DeviceTree();
  const lowers: AioBdev[] = [];
  for (const name of ["disk_a", "disk_b"]) {
    const lower = await AioBdev.open({
      name,
      path: join(dir, `${name}.img`),
      blockSize: 512,
      blockCount: 8192,
    });
    tree.add(name, lower, "aio");
    lowers.push(lower);
  }
  const wiring = DrbdWiring.load({ configFile: file, nodeName: "here", tree });
  t.after(async () => {
    await wiring.downUnheld();
    for (const l of lowers) await l.close();
    await rm(dir, { recursive: true, force: true });
  });
  await wiring.adm("create-md", "r6");
  await wiring.adm("up", "r6");
  await writeFile(file, res(`${v0}\n${v1}`));
  await assert.rejects(
    wiring.adjust("r6"),
    /adjust of a resource of several volumes \(1 running, 2 in the file\) is only done when it is down; run drbdadm down r6, then up/,
  );
  await wiring.adm("down", "r6");
  // Down, the resource is built anew from the file; the new volume's disk has no metadata yet.
  await assert.rejects(wiring.adjust("r6"), /create-md/);
  await wiring.adm("down", "r6");
  await wiring.adm("create-md", "r6/1");
  assert.deepEqual(await wiring.adjust("r6"), { r6: ["attach"] });
  assert.equal(
    wiring.status("r6"),
    "r6 role:Secondary\n  volume:0 disk:Inconsistent\n  volume:1 disk:Inconsistent\n",
  );
  assert.ok(tree.get("drbd6") && tree.get("drbd7"));
  // RES/VOL: one volume detached alone; a volume the resource has not is named in the error.
  await wiring.adm("detach", "r6/1");
  assert.equal(
    wiring.status("r6"),
    "r6 role:Secondary\n  volume:0 disk:Inconsistent\n  volume:1 disk:Diskless\n",
  );
  await assert.rejects(
    async () => wiring.adm("attach", "r6/2"),
    /'r6\/2': resource r6 has no volume 2; volumes: 0, 1/,
  );
  await wiring.adm("attach", "r6/1");
  await wiring.adm("primary", "r6", { force: true });
  assert.equal(wiring.status("r6"), "r6 role:Primary\n  volume:0 disk:UpToDate\n  volume:1 disk:UpToDate\n");
  await wiring.adm("down", "r6");
  assert.equal(
    wiring.status("r6"),
    "r6 role:Secondary\n  volume:0 disk:Diskless\n  volume:1 disk:Diskless\n",
  );
});
