import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BdevRegistry } from "../bdev/registry.js";
import { ConfigError } from "../config/errors.js";
import { parseSpdkConfig } from "../config/spdk_config.js";
import { log } from "../util/log.js";
import { BUILTIN_BDEV_MODULES, createBdevs, type BdevModuleContext } from "./bdev_modules.js";

const CONFIG = `[Malloc]
  NumberOfLuns 2
  LunSizeInMB 1
  BlockSize 4096
[TCMUR]
  TCMUR 0 ram_a /ram/x
`;

function context(registry: BdevRegistry): BdevModuleContext {
  return { registry, logger: log.child({ test: "bdev_modules" }, { level: "silent" }), onStop: () => {} };
}

describe("block device modules", () => {
  it("creates Malloc devices of the configured size, registered under their names", async () => {
    const registry = new BdevRegistry();
    const config = parseSpdkConfig(CONFIG.replace(/\[TCMUR\][^]*$/, ""), "m.conf");
    await createBdevs(config.bdevs, BUILTIN_BDEV_MODULES, context(registry));
    assert.deepEqual(
      registry.list().map((d) => [d.name, d.blockSize, d.blockCount]),
      [
        ["Malloc0", 4096, 256],
        ["Malloc1", 4096, 256],
      ],
    );
    const buf = Buffer.alloc(4096, 0x5a);
    await registry.get("Malloc1")!.writev(255, [buf]);
    const back = Buffer.alloc(4096);
    await registry.get("Malloc1")!.readv(255, [back]);
    assert.deepEqual(back, buf);
    await registry.closeAll();
  });

  it("names the config line of a kind with no module", async () => {
    const registry = new BdevRegistry();
    const config = parseSpdkConfig(CONFIG, "t.conf");
    await assert.rejects(
      createBdevs(config.bdevs, BUILTIN_BDEV_MODULES, context(registry)),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          't.conf:6: [TCMUR] devices are not available in this server (no "tcmur" block device module)',
    );
    // What was created before the failure stays registered, for the caller to close.
    assert.equal(registry.list().length, 2);
    await registry.closeAll();
  });

  it("wraps a module's failure with the config line, and uses added modules", async () => {
    const registry = new BdevRegistry();
    const config = parseSpdkConfig(CONFIG, "t.conf");
    await assert.rejects(
      createBdevs(
        config.bdevs,
        {
          ...BUILTIN_BDEV_MODULES,
          tcmur: async (spec) => {
            throw new Error(`handler ${spec.handler} is missing`);
          },
        },
        context(registry),
      ),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message === "t.conf:6: cannot create block device ram_a: handler ram is missing",
    );
    await registry.closeAll();
  });
});
