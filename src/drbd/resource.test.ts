import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AioBdev } from "../bdev/aio/aio.js";
import { DeviceTree } from "../devtree/device_tree.js";
import { parseDrbdConfig, selectLocalHost, findResource } from "./config/res_parser.js";
import { DrbdResource } from "./resource.js";
import type { DrbdDevice } from "./device.js";

const MiB = 1024 * 1024;

const RES = `resource r7 {
    net { protocol C; ping-int 1; connect-int 1; }
    disk { resync-rate 512M; }
    on alpha {
        address 127.0.0.1:7796;
        volume 0 { device drbd7 minor 7; disk "/UMCfuse/dev/file_a"; meta-disk internal; }
    }
    on beta {
        address 127.0.0.1:7797;
        volume 0 { device drbd7 minor 7; disk "/UMCfuse/dev/file_b"; meta-disk internal; }
    }
}
`;

async function until(cond: () => boolean, ms = 15000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("a two-node resource from a .res file: create-md, up, forced primary, full sync, status, down", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-res-"));
  const resFile = join(dir, "r7.res");
  await writeFile(resFile, RES);
  const config = parseDrbdConfig(resFile);
  const nodes = await Promise.all(
    (["alpha", "beta"] as const).map(async (node, i) => {
      const tree = new DeviceTree();
      const backingName = i === 0 ? "file_a" : "file_b";
      const lower = await AioBdev.open({
        name: backingName,
        path: join(dir, `${node}.img`),
        blockSize: 512,
        blockCount: (8 * MiB) / 512,
      });
      tree.add(backingName, lower, "aio");
      const res = DrbdResource.fromConfig(selectLocalHost(findResource(config, "r7"), node), tree);
      return { tree, lower, res };
    }),
  );
  t.after(async () => {
    for (const n of nodes) {
      await n.res.down().catch(() => {});
      await n.lower.close();
    }
    await rm(dir, { recursive: true, force: true });
  });
  const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
  assert.equal(a.res.deviceName, "drbd7");
  for (const n of nodes) await n.res.createMd();
  await a.res.up();
  // The backing disk is held exclusively; drbd7 is in the tree.
  assert.throws(() => a.tree.claim("file_a", "someone else", "read"), /busy/);
  assert.equal(a.tree.get("drbd7")?.kind, "drbd");
  assert.match(
    a.res.status(),
    /^r7 role:Secondary\n {2}disk:Inconsistent\n {2}peer connection:Connecting\n$/,
  );
  await b.res.up();
  await until(() => a.res.connection?.state === "Connected" && b.res.connection?.state === "Connected");
  assert.equal(
    a.res.status(),
    "r7 role:Secondary\n  disk:Inconsistent\n  peer role:Secondary\n    replication:Established peer-disk:Inconsistent\n",
  );
  // The classic first promotion: alone, --force, then reconnect and sync everything to the peer.
  await a.res.disconnect();
  await assert.rejects(a.res.primary(), /Need access to UpToDate data/);
  await a.res.primary({ force: true });
  const data = Buffer.alloc(64 * 1024, 0x5a);
  await a.res.device?.writev(0, [data]);
  await a.res.connect();
  await until(() => a.res.connection?.state === "Connected" && b.res.connection?.state === "Connected");
  assert.equal(
    a.res.status(),
    "r7 role:Primary\n  disk:UpToDate\n  peer role:Secondary\n    replication:Established peer-disk:UpToDate\n",
  );
  assert.match(b.res.status(), /^r7 role:Secondary\n {2}disk:UpToDate\n {2}peer role:Primary\n/);
  const got = Buffer.alloc(data.length);
  await b.lower.readv(0, [got]);
  assert.deepEqual(got, data);
  // A LUN holding drbd7 keeps detach from pulling the device away.
  const lun = a.tree.claim("drbd7", "LUN0", "write");
  await a.res.secondary();
  await assert.rejects(a.res.detach(), /claimed by LUN0/);
  lun.release();
  await a.res.down();
  assert.equal(a.tree.get("drbd7"), undefined);
  assert.equal(a.tree.holders("file_a").length, 0, "down releases the backing disk");
  assert.match(a.res.status(), /disk:Diskless/);
});

test("new-current-uuid --clear-bitmap on a fresh connected pair skips the initial full sync", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-skip-"));
  const nodes = await Promise.all(
    [0, 1].map(async (i) => {
      const tree = new DeviceTree();
      const lower = await AioBdev.open({
        name: "disk",
        path: join(dir, `${i}.img`),
        blockSize: 512,
        blockCount: (8 * MiB) / 512,
      });
      tree.add("disk", lower, "aio");
      const res = new DrbdResource({
        name: "r9",
        tree,
        minor: 9,
        backing: "disk",
        local: { host: "127.0.0.1", port: 7798 + i },
        peer: { host: "127.0.0.1", port: 7799 - i },
        connectIntSec: 1,
        pingIntSec: 1,
      });
      return { lower, res };
    }),
  );
  t.after(async () => {
    for (const n of nodes) {
      await n.res.down().catch(() => {});
      await n.lower.close();
    }
    await rm(dir, { recursive: true, force: true });
  });
  const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
  for (const n of nodes) {
    await n.res.createMd();
    await n.res.up();
  }
  await until(() => a.res.connection?.state === "Connected" && b.res.connection?.state === "Connected");
  await a.res.newCurrentUuid({ clearBitmap: true });
  await until(() => b.res.device?.disk === "UpToDate");
  assert.equal(a.res.device?.disk, "UpToDate");
  assert.equal(b.res.device?.uuids[0], a.res.device?.uuids[0]);
  assert.equal(b.res.device?.bitmap.outOfSyncBits, 0);
  await a.res.primary();
  await a.res.device?.writev(0, [Buffer.alloc(4096, 7)]);
  assert.equal(a.res.connection?.resyncStats.requested, 0, "no resync ran");
  assert.equal(b.res.connection?.resyncStats.requested, 0);
});

test("external metadata: meta-disk on its own tree device (flexible), the whole backing disk usable", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-extmd-"));
  const resFile = join(dir, "r8.res");
  await writeFile(
    resFile,
    `resource r8 {
    on solo {
        address 127.0.0.1:7798;
        volume 0 { device drbd8 minor 8; disk "/UMCfuse/dev/data_x"; meta-disk "/UMCfuse/dev/meta_x"; }
    }
}
`,
  );
  const tree = new DeviceTree();
  const data = await AioBdev.open({
    name: "data_x",
    path: join(dir, "data.img"),
    blockSize: 4096,
    blockCount: 2048,
  });
  const meta = await AioBdev.open({
    name: "meta_x",
    path: join(dir, "meta.img"),
    blockSize: 4096,
    blockCount: 256,
  });
  tree.add("data_x", data, "aio");
  tree.add("meta_x", meta, "aio");
  const res = DrbdResource.fromConfig(
    selectLocalHost(findResource(parseDrbdConfig(resFile), "r8"), "solo"),
    tree,
  );
  t.after(async () => {
    await res.down().catch(() => {});
    await data.close();
    await meta.close();
    await rm(dir, { recursive: true, force: true });
  });
  await res.createMd();
  await res.attach();
  const dev = res.device!;
  assert.equal(dev.blockCount, 2048, "no metadata at the end of the backing disk: all 8 MiB usable");
  assert.deepEqual(tree.holders("meta_x"), [{ owner: "DRBD drbd8 (r8) metadata", mode: "exclusive" }]);
  await res.primary({ force: true });
  const block = Buffer.alloc(4096, 0x5c);
  await dev.writev(2047, [block]);
  assert.equal(dev.bitmap.outOfSyncBits, 1);
  await res.down();
  assert.deepEqual(tree.holders("meta_x"), [], "down releases the metadata device");
  // The last block of the backing disk holds data, not metadata; the bitmap came back from meta_x.
  const onData = Buffer.alloc(4096);
  await data.readv(2047, [onData]);
  assert.ok(onData.equals(block));
  await res.attach();
  assert.equal(res.device!.bitmap.outOfSyncBits, 1, "bitmap persisted on the metadata device");
  assert.equal(res.device!.disk, "UpToDate");
});

const RES_VOLUMES = `resource r9 {
    net { protocol C; ping-int 1; connect-int 1; }
    disk { resync-rate 512M; }
    on alpha {
        address 127.0.0.1:8210;
        volume 0 { device drbd9 minor 9; disk "/UMCfuse/dev/a0"; meta-disk internal; }
        volume 1 { device drbd10 minor 10; disk "/UMCfuse/dev/a1"; meta-disk internal; }
    }
    on beta {
        address 127.0.0.1:8211;
        volume 0 { device drbd9 minor 9; disk "/UMCfuse/dev/b0"; meta-disk internal; }
        volume 1 { device drbd10 minor 10; disk "/UMCfuse/dev/b1"; meta-disk internal; }
    }
}
`;

test("a resource of two volumes: each its own device and metadata, one connection, resync per volume", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-res-vol-"));
  const resFile = join(dir, "r9.res");
  await writeFile(resFile, RES_VOLUMES);
  const config = parseDrbdConfig(resFile);
  const nodes = await Promise.all(
    (["alpha", "beta"] as const).map(async (node) => {
      const tree = new DeviceTree();
      const lowers: AioBdev[] = [];
      for (const v of [0, 1]) {
        const name = `${node[0]}${v}`;
        // Volumes of different sizes: each keeps its own metadata and size.
        const lower = await AioBdev.open({
          name,
          path: join(dir, `${name}.img`),
          blockSize: 512,
          blockCount: ((v === 0 ? 8 : 12) * MiB) / 512,
        });
        tree.add(name, lower, "aio");
        lowers.push(lower);
      }
      const res = DrbdResource.fromConfig(selectLocalHost(findResource(config, "r9"), node), tree);
      return { tree, lowers, res };
    }),
  );
  t.after(async () => {
    for (const n of nodes) {
      await n.res.down().catch(() => {});
      for (const l of n.lowers) await l.close();
    }
    await rm(dir, { recursive: true, force: true });
  });
  const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
  assert.deepEqual(
    a.res.volumes.map((v) => [v.opts.volume, v.deviceName, v.opts.backing]),
    [
      [0, "drbd9", "/UMCfuse/dev/a0"],
      [1, "drbd10", "/UMCfuse/dev/a1"],
    ],
  );
  for (const n of nodes) await n.res.createMd();
  await Promise.all([a.res.up(), b.res.up()]);
  assert.equal(a.tree.get("drbd9")?.kind, "drbd");
  assert.equal(a.tree.get("drbd10")?.kind, "drbd");
  await until(() => [...a.res.volumes, ...b.res.volumes].every((v) => v.connection?.state === "Connected"));
  await a.res.primary({ force: true });
  await until(() => b.res.volumes.every((v) => v.device?.disk === "UpToDate"));
  // The source ends its resync when the target's last ack arrives, a moment after the target, and learns the
  // target's disk state from its next P_STATE.
  const inSync = `r9 role:Primary
  volume:0 disk:UpToDate
  volume:1 disk:UpToDate
  peer role:Secondary
    volume:0 replication:Established peer-disk:UpToDate
    volume:1 replication:Established peer-disk:UpToDate
`;
  await until(() => a.res.status() === inSync);
  assert.equal(a.res.status(), inSync);
  const [a0, a1] = a.res.volumes.map((v) => v.device) as [DrbdDevice, DrbdDevice];
  assert.notEqual(a0.sizeSectors, a1.sizeSectors, "each volume has its own size");
  // Different data on each volume reaches the peer's matching backing disk.
  const d0 = Buffer.alloc(64 * 1024, 0x30);
  const d1 = Buffer.alloc(64 * 1024, 0x31);
  await a0.writev(128, [d0]);
  await a1.writev(128, [d1]);
  const read = async (l: AioBdev, lba: number, bytes: number) => {
    const buf = Buffer.alloc(bytes);
    await l.readv(lba, [buf]);
    return buf;
  };
  assert.deepEqual(await read(b.lowers[0] as AioBdev, 128, d0.length), d0);
  assert.deepEqual(await read(b.lowers[1] as AioBdev, 128, d1.length), d1);
  // Disconnected, writes to volume 1 only: the reconnect resyncs volume 1 alone.
  await b.res.disconnect();
  await until(() => a.res.volumes.every((v) => v.connection?.state === "WFConnection"));
  assert.match(b.res.status(), /peer connection:StandAlone/);
  const d2 = Buffer.alloc(32 * 1024, 0x32);
  await a1.writev(4096, [d2]);
  assert.equal(a0.bitmap.outOfSyncBits, 0);
  assert.equal(a1.bitmap.outOfSyncBits, 8);
  await b.res.connect();
  await until(() => a.res.volumes.every((v) => v.connection?.state === "Connected"));
  await until(() => b.res.volumes.every((v) => v.connection?.state === "Connected"));
  const [b0, b1] = b.res.volumes.map((v) => v.connection);
  assert.equal(b0?.resyncStats.transferredBlocks ?? 0, 0, "volume 0: nothing to resync");
  assert.equal(b1?.resyncStats.transferredBlocks, 8, "volume 1: its 32 KiB");
  assert.deepEqual(await read(b.lowers[1] as AioBdev, 4096, d2.length), d2);
  await a.res.secondary();
  assert.ok(a.res.volumes.every((v) => v.device?.role === "Secondary"));
});
