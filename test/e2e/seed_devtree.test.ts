/**
 * The reference deployment's config with its device tree sections too: [TCMUR] devices and the [BIO] bdev over one of them
 * become LUNs 2-4 of TargetNode1 through `usertgt serve` (the CLI wires the device tree in), and the
 * tree is visible through FUSE. `BIO bio1 /UMCfuse/dev/drbd2 drbdadm_up_primary ...` and its LUN5 need a
 * DRBD config and are covered by drbd_seed.test.ts. Paths move to a temp dir; the portal to 127.0.0.1.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { access, open, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RawInitiator } from "../support/raw_initiator.js";
import { cleanup, makeTempDir, run, startServer, stopCleanly } from "./harness.js";
import { SEED_FIXTURE as SEED, localSeedWithDevices } from "./seed_fixture.js";

const IQN = "iqn.2016-06.io.spdk:disk1";

function seedConfig(seed: string, port: number, dir: string): string {
  return localSeedWithDevices(seed, port, dir)
    .replace(/ {2}BIO bio1 .*\n/, "") // DRBD: drbd_seed.test.ts
    .replace(/ {2}LUN5 bio1\n/, "").text;
}

function rw10(op: 0x28 | 0x2a, lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10);
  c[0] = op;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
}

describe("the reference config with TCMUR and BIO devices", () => {
  let seed: string;
  let dir: string;
  before(async () => {
    seed = await readFile(SEED, "utf8");
    dir = await makeTempDir("seed-devtree");
  });
  after(async () => {
    await cleanup(dir);
  });

  it("serves LUN0-4 (Malloc, AIO, TCMUR file x2, BIO) and shows the tree through FUSE", async (t) => {
    const mnt = join(dir, "mnt");
    const server = await startServer((ports, d) => seedConfig(seed, ports[0], d), {
      dir,
      args: ["--mount-point", mnt],
    });
    const port = server.ports[0];
    try {
      const ls = await run("iscsi-ls", ["-s", `iscsi://127.0.0.1:${port}`]);
      assert.equal(ls.code, 0, ls.stderr);
      for (const lun of [0, 1, 2, 3, 4])
        assert.match(ls.stdout, new RegExp(`Lun:${lun}\\s+Type:DIRECT_ACCESS`));
      assert.doesNotMatch(ls.stdout, /Lun:5/);
      const products: [number, RegExp][] = [
        [0, /^Product:Malloc disk/m],
        [1, /^Product:AIO disk/m],
        [2, /^Product:TCMU file/m],
        [4, /^Product:BIO disk/m],
      ];
      for (const [lun, product] of products) {
        const inq = await run("iscsi-inq", [`iscsi://127.0.0.1:${port}/${IQN}/${lun}`]);
        assert.equal(inq.code, 0, inq.stderr);
        assert.match(inq.stdout, product, `LUN${lun}`);
      }

      // Bytes written to LUN3 (TCMUR file_a) land in its backing file, and show in the FUSE view.
      const ini = await RawInitiator.connect(port);
      t.after(() => ini.close());
      assert.equal((await ini.login({ targetName: IQN })).statusClass, 0);
      const data = randomBytes(16 * 4096);
      let w = await ini.scsi(rw10(0x2a, 100, 16), { lun: 3, write: data });
      if (w.status === 2) w = await ini.scsi(rw10(0x2a, 100, 16), { lun: 3, write: data }); // POWER ON UA
      assert.equal(w.status, 0, `WRITE(10) to LUN3: sense ${w.sense.toString("hex")}`);
      const sync = Buffer.alloc(10);
      sync[0] = 0x35; // SYNCHRONIZE CACHE(10)
      assert.equal((await ini.scsi(sync, { lun: 3 })).status, 0);
      const fh = await open(join(dir, "tcmur_file00"), "r");
      try {
        const back = Buffer.alloc(data.length);
        await fh.read(back, 0, back.length, 100 * 4096);
        assert.ok(back.equals(data), "backing file of file_a does not hold what LUN3 wrote");
      } finally {
        await fh.close();
      }

      const fuseFile = join(mnt, "dev", "file_a");
      const mounted = await access(fuseFile).then(
        () => true,
        () => false,
      );
      if (!mounted) {
        t.diagnostic(`FUSE view not mounted here (no /dev/fuse?); server said:\n${server.stderr()}`);
      } else {
        assert.equal((await stat(fuseFile)).size, 64 * 1048576);
        const fuse = await open(fuseFile, "r");
        try {
          const back = Buffer.alloc(data.length);
          await fuse.read(back, 0, back.length, 100 * 4096);
          assert.ok(back.equals(data), "FUSE view of file_a differs from what LUN3 wrote");
        } finally {
          await fuse.close();
        }
      }
      ini.close();
    } finally {
      await stopCleanly(server);
    }
    // Unmounted at shutdown.
    await assert.rejects(access(join(mnt, "dev", "file_a")));
  });
});
