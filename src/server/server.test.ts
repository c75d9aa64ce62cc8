import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { BlockDeviceError } from "../bdev/bdev.js";
import { MallocBdev } from "../bdev/malloc/malloc.js";
import { ConfigError } from "../config/errors.js";
import { parseSpdkConfig } from "../config/spdk_config.js";
import { log } from "../util/log.js";
import { UsertgtServer } from "./server.js";

const quiet = log.child({ test: "server" }, { level: "silent" });

function iscsiInq(url: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("iscsi-inq", [url], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, out }));
  });
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", () => resolve(true));
  });
}

describe("UsertgtServer", () => {
  it("builds Malloc and AIO LUNs behind an iSCSI target on ephemeral ports, and stops them", async () => {
    const dir = await mkdtemp(join(tmpdir(), "usertgt-server-"));
    try {
      const config = parseSpdkConfig(
        `[Malloc]
  NumberOfLuns 1
  LunSizeInMB 2
  BlockSize 4096
[AIO]
  AIO disk.img AIO0 512 3
[PortalGroup1]
  Portal A 127.0.0.1:0
  Portal B 127.0.0.1:0
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName unit
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 Malloc0
  LUN1 AIO0
`,
        join(dir, "u.conf"),
      );
      const server = await UsertgtServer.start(config, { logger: quiet, stateDir: join(dir, "state") });
      const addrs = server.addresses();
      assert.equal(addrs.length, 2);
      for (const a of addrs) assert.ok(a.port > 0 && a.host === "127.0.0.1" && a.portalGroup === 1);
      assert.equal((await stat(join(dir, "disk.img"))).size, 3 * 1048576);
      assert.ok((await stat(join(dir, "state", "aptpl", "iqn.2016-06.io.spdk_unit"))).isDirectory());

      const inq = await iscsiInq(`iscsi://127.0.0.1:${addrs[1].port}/iqn.2016-06.io.spdk:unit/1`);
      assert.equal(inq.code, 0, inq.out);
      assert.match(inq.out, /Product:AIO disk/);

      const aio = server.registry.get("AIO0")!;
      await Promise.all([server.stop(), server.stop()]); // idempotent
      for (const a of addrs) assert.ok(await refused(a.port), `port ${a.port} still accepts connections`);
      await assert.rejects(aio.readv(0, [Buffer.alloc(512)]), BlockDeviceError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("closes what it built when a later block device fails, and names that device's line", async () => {
    const config = parseSpdkConfig(
      `[TCMUR]
  TCMUR 0 ram_a /ram/a
[BIO]
  BIO bio0 /UMCfuse/dev/ram_a
`,
      "f.conf",
    );
    const events: string[] = [];
    const start = UsertgtServer.start(config, {
      logger: quiet,
      bdevModules: {
        tcmur: async (spec, ctx) => {
          ctx.onStop(async () => {
            events.push("module clean-up");
          });
          const dev = new MallocBdev({ name: spec.name, blockSize: 512, blockCount: 8 });
          const close = dev.close.bind(dev);
          dev.close = async () => {
            events.push(`close ${spec.name}`);
            await close();
          };
          return dev;
        },
        bio: async (spec) => {
          throw new Error(`no device at ${spec.path}`);
        },
      },
    });
    await assert.rejects(start, (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, "f.conf:4: cannot create block device bio0: no device at /UMCfuse/dev/ram_a");
      return true;
    });
    assert.deepEqual(events, ["close ram_a", "module clean-up"]);
  });
});
