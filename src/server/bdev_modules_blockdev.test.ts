/**
 * An [AIO] line over a real block device (a loop device with 4096-byte sectors), built the way the
 * server builds it: a block size smaller than the device's is a config error naming the line;
 * without one the device's own block size is used. Both I/O engines.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { attachLoop, canUseLoopDevices, type LoopDevice } from "../../test/support/loop_device.js";
import { AioBdev } from "../bdev/aio/aio.js";
import { BdevRegistry } from "../bdev/registry.js";
import { ConfigError } from "../config/errors.js";
import { parseSpdkConfig } from "../config/spdk_config.js";
import type { IoEngineName } from "../io_engine/engine.js";
import { log } from "../util/log.js";
import { createBdevs } from "./bdev_modules.js";

const skip = await canUseLoopDevices();

for (const engine of ["io_uring", "threadpool"] as IoEngineName[]) {
  describe(`[AIO] over a block device (${engine})`, { skip }, () => {
    let dir: string;
    let loop: LoopDevice;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "usertgt-aio-cfg-"));
      loop = await attachLoop(join(dir, "loop4096.img"), 32 * 1024 * 1024, 4096);
    });
    after(async () => {
      await loop.detach();
      await rm(dir, { recursive: true, force: true });
    });

    it("a config line asking for a smaller block than the device's is an error naming the line; omitted, the device's is used", async () => {
      const registry = new BdevRegistry();
      const ctx = {
        registry,
        logger: log.child({ test: "aio_blockdev" }, { level: "silent" }),
        onStop: () => {},
      };
      const bad = parseSpdkConfig(`[AIO]\n  AIO ${loop.device} B0 512\n`, "disk.conf");
      await assert.rejects(
        createBdevs(bad.bdevs, { aio: (spec) => AioBdev.open({ ...spec, engine }) }, ctx),
        (e: unknown) =>
          e instanceof ConfigError &&
          /^disk\.conf:2: .*block size 512 is smaller than the device's logical block size 4096/.test(
            e.message,
          ),
      );
      const good = parseSpdkConfig(`[AIO]\n  AIO ${loop.device} B1\n`, "disk.conf");
      await createBdevs(
        good.bdevs,
        {
          aio: (spec) =>
            AioBdev.open({
              ...spec,
              blockSize: spec.blockSizeFromDevice ? undefined : spec.blockSize,
              engine,
            }),
        },
        ctx,
      );
      const dev = registry.get("B1")!;
      assert.equal(dev.blockSize, 4096);
      await dev.close();
    });
  });
}
