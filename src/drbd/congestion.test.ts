/**
 * net { on-congestion; congestion-fill; congestion-extents }: the thresholds, the accounting of data in
 * flight per epoch, the protocol-A rule, and the options read from a .res file down to `drbdadm status`.
 * Ports 7936-7939.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AioBdev } from "../bdev/aio/aio.js";
import { DeviceTree } from "../devtree/device_tree.js";
import { findResource, parseDrbdConfig, selectLocalHost } from "./config/res_parser.js";
import { congestionConfigError, CongestionMonitor } from "./congestion.js";
import { TransferLog } from "./transfer_log.js";
import type { DrbdConnection } from "./connection.js";
import { DrbdResource } from "./resource.js";
import { eventually, MiB, pattern } from "./test_support.js";

test("the transfer log counts data in flight per epoch, releases it by barrier ack, returns the rest on loss", () => {
  const tl = new TransferLog();
  tl.add(0, 0, 51200, 100);
  tl.add(0, 65536, 25600, 50);
  tl.add(1, 1 << 20, 102400, 200);
  tl.add(1, 8 << 20, 4 << 20, 0); // a discard: no payload
  assert.equal(tl.inFlightSectors, 350);
  const m = new CongestionMonitor({ onCongestion: "pull-ahead", congestionFillSectors: 300 });
  assert.match(
    m.congested(tl.inFlightSectors, 0) ?? "",
    /congestion-fill threshold reached \(350 sectors in flight, limit 300\)/,
  );
  tl.release(0);
  assert.equal(tl.inFlightSectors, 200);
  assert.equal(m.congested(tl.inFlightSectors, 0), undefined, "below the fill threshold again");
  tl.release(0);
  assert.equal(tl.inFlightSectors, 200, "a repeated ack changes nothing");
  assert.equal(tl.pendingRequests, 2);
  assert.deepEqual(tl.clear(), [
    [1 << 20, 102400],
    [8 << 20, 4 << 20],
  ]);
  assert.equal(tl.inFlightSectors, 0);
  assert.deepEqual(tl.clear(), []);
});

test("congestion-extents counts activity-log extents in use; congestion-fill 0 is off; block never congests", () => {
  const m = new CongestionMonitor({ onCongestion: "disconnect", congestionExtents: 7 });
  assert.equal(m.congested(1 << 20, 6), undefined, "congestion-fill 0: no fill check");
  assert.match(m.congested(0, 7) ?? "", /congestion-extents threshold reached \(7 extents in use, limit 7\)/);
  const block = new CongestionMonitor({ congestionFillSectors: 1, congestionExtents: 7 });
  assert.equal(block.active, false);
  assert.equal(block.congested(100, 100), undefined);
});

test("on-congestion other than block is refused with protocols B and C, and bad thresholds", () => {
  assert.equal(congestionConfigError("A", { onCongestion: "pull-ahead" }), undefined);
  assert.equal(congestionConfigError("C", { onCongestion: "block" }), undefined);
  assert.match(
    congestionConfigError("C", { onCongestion: "disconnect" }) ?? "",
    /on-congestion disconnect; \} needs protocol A, not C/,
  );
  assert.match(congestionConfigError("B", { onCongestion: "pull-ahead" }) ?? "", /needs protocol A, not B/);
  assert.match(
    congestionConfigError("A", { congestionExtents: 3 }) ?? "",
    /congestion-extents 3; \} outside/,
  );
});

const RES = (net: string) => `resource r9 {
    net { ${net} ping-int 1; connect-int 1; }
    disk { resync-rate 512M; }
    on alpha {
        address 127.0.0.1:7936;
        volume 0 { device drbd9 minor 9; disk "/UMCfuse/dev/file_a"; meta-disk internal; }
    }
    on beta {
        address 127.0.0.1:7937;
        volume 0 { device drbd9 minor 9; disk "/UMCfuse/dev/file_b"; meta-disk internal; }
    }
}
`;

test("a .res with on-congestion pull-ahead and protocol C is refused when read, naming the line", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-cong-"));
  const file = join(dir, "r9.res");
  await writeFile(file, RES("protocol C; on-congestion pull-ahead; congestion-fill 2M;"));
  assert.throws(
    () => parseDrbdConfig(file),
    /r9\.res:2: on-congestion pull-ahead needs protocol A, got protocol C/,
  );
  // A resource built without the parser gets the same rule from the connection options.
  const tree = new DeviceTree();
  const res = new DrbdResource({
    name: "r9",
    tree,
    minor: 9,
    backing: "x",
    protocol: "C",
    onCongestion: "disconnect",
    local: { host: "127.0.0.1", port: 7938 },
    peer: { host: "127.0.0.1", port: 7939 },
  });
  const lower = await AioBdev.open({
    name: "x",
    path: join(dir, "x.img"),
    blockSize: 512,
    blockCount: (4 * MiB) / 512,
  });
  t.after(async () => {
    await res.down().catch(() => {});
    await lower.close();
    await rm(dir, { recursive: true, force: true });
  });
  tree.add("x", lower, "aio");
  await res.createMd();
  await res.attach();
  await assert.rejects(res.connect(), /drbd9: net \{ on-congestion disconnect; \} needs protocol A, not C/);
});

test("from a .res (protocol A, pull-ahead, congestion-fill): drbdadm status shows Ahead and Behind", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-cong-"));
  const file = join(dir, "r9.res");
  await writeFile(
    file,
    RES("protocol A; on-congestion pull-ahead; congestion-fill 32k; congestion-extents 500;"),
  );
  const config = parseDrbdConfig(file);
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
      const res = DrbdResource.fromConfig(selectLocalHost(findResource(config, "r9"), node), tree);
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
  const [alpha, beta] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
  assert.equal(alpha.res.opts.onCongestion, "pull-ahead");
  assert.equal(alpha.res.opts.congestionFillSectors, 64, "32k = 64 sectors");
  assert.equal(alpha.res.opts.congestionExtents, 500);
  for (const n of nodes) await n.res.createMd();
  for (const n of nodes) await n.res.up();
  await alpha.res.primary({ force: true });
  const ca = alpha.res.connection as DrbdConnection;
  const cb = beta.res.connection as DrbdConnection;
  assert.ok(
    await eventually(() => ca.state === "Connected" && cb.state === "Connected", 20000),
    "initial sync",
  );
  const dev = alpha.res.device;
  assert.ok(dev);
  const peer = (cb as unknown as { data: { socket: Socket } }).data.socket;
  peer.pause();
  const chunk = 16 * 1024; // far below a socket buffer: no write waits for the paused peer
  for (let i = 0; i < 8; i++) await dev.writev((i * chunk) / 512, [pattern(chunk, i)]);
  assert.match(alpha.res.status(), /replication:Ahead peer-disk:/);
  let behind = "";
  const watcher = setInterval(() => {
    const s = beta.res.status();
    if (s.includes("replication:Behind")) behind = s;
  }, 2);
  t.after(() => clearInterval(watcher));
  peer.resume();
  assert.ok(await eventually(() => ca.state === "Connected" && cb.state === "Connected", 15000));
  assert.match(behind, /disk:Outdated\n {2}peer role:Primary\n {4}replication:Behind peer-disk:UpToDate/);
  assert.match(alpha.res.status(), /replication:Established peer-disk:UpToDate/);
});
