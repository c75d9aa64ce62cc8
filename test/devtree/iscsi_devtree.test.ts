/**
 * The device tree end to end: TCMUR and BIO LUNs served over iSCSI by the real server, with the device tree
 * mounted over FUSE in a temp dir. Bytes written through iSCSI are the bytes of the FUSE file; a LUN's
 * device refuses a FUSE writer; INQUIRY names the module. (Needs root and /dev/fuse for the FUSE half.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { accessSync, constants } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseSpdkConfig } from "../../src/config/spdk_config.js";
import { DevtreeService } from "../../src/devtree/devtree_service.js";
import { UsertgtServer } from "../../src/server/server.js";
import { log } from "../../src/util/log.js";
import { RawInitiator } from "../support/raw_initiator.js";
import { inquiry, read10, write10 } from "../iscsi/harness.js";

const IQN = "iqn.2016-06.io.spdk:devtree";

function fuseUsable(): boolean {
  try {
    accessSync("/dev/fuse", constants.R_OK | constants.W_OK);
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}

test(
  "iSCSI on TCMUR ram, TCMUR file and BIO LUNs; same bytes in the FUSE files",
  { skip: fuseUsable() ? false : "needs FUSE" },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "usertgt-devtree-e2e-"));
    const logger = log.child({ test: "devtree-e2e" });
    logger.level = "warn";
    const devtree = await DevtreeService.create({ mountPoint: join(dir, "mnt"), logger });
    const config = parseSpdkConfig(
      `[Malloc]
  NumberOfLuns 1
  LunSizeInMB 8
  BlockSize 4096
[TCMUR]
  TCMUR 0 ram_a /ram/tmp/tcmur_ram00?size=16M
  TCMUR 1 file_a /file/${dir}/tcmur_file00?size=16M
  TCMUR 2 file_b /file/${dir}/tcmur_file01 size=16M bs=512
[BIO]
  BIO bio0 /UMCfuse/dev/file_b
[PortalGroup1]
  Portal A 127.0.0.1:0
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  LUN0 Malloc0
  LUN2 ram_a
  LUN3 file_a
  LUN4 bio0
`,
      "<devtree-e2e>",
    );
    const server = await UsertgtServer.start(config, {
      logger,
      bdevModules: { tcmur: (s) => devtree.openTcmur(s), bio: (s) => devtree.openBio(s) },
    });
    const ini = await RawInitiator.connect(server.addresses()[0].port);
    try {
      devtree.claimForLun("ram_a", `LUN2 of ${IQN}`);
      devtree.claimForLun("file_a", `LUN3 of ${IQN}`);
      assert.ok(await devtree.mount());
      const login = await ini.login({ targetName: IQN });
      assert.equal(login.statusClass, 0);

      for (const [lun, product, dev, bs] of [
        [2, "TCMU ram", "ram_a", 4096],
        [3, "TCMU file", "file_a", 4096],
        [4, "BIO disk", "file_b", 512],
      ] as const) {
        const inq = await ini.scsi(inquiry(36), { read: 36, lun });
        assert.equal(inq.status, 0);
        assert.equal(inq.data.toString("latin1", 16, 32).trim(), product);

        // The first command after login reports the power-on unit attention (SAM-5 5.14); clear it.
        let tur = await ini.scsi(Buffer.alloc(6), { lun });
        for (let i = 0; i < 3 && tur.status !== 0; i++) tur = await ini.scsi(Buffer.alloc(6), { lun });
        assert.equal(tur.status, 0, `TEST UNIT READY on LUN${lun}`);
        const data = randomBytes(8 * bs);
        const w = await ini.scsi(write10(100, 8), { write: data, lun });
        assert.equal(w.status, 0, `WRITE(10) on LUN${lun}`);
        const fh = await open(join(dir, "mnt/dev", dev), "r");
        const seen = Buffer.alloc(data.length);
        await fh.read(seen, 0, seen.length, 100 * bs);
        await fh.close();
        assert.deepEqual(seen, data, `LUN${lun}: the FUSE file shows what iSCSI wrote`);
        const r = await ini.scsi(read10(100, 8), { read: data.length, lun });
        assert.deepEqual(r.data, data);

        // The LUN (directly or through BIO) holds the device: a FUSE writer is a second writer.
        await assert.rejects(open(join(dir, "mnt/dev", dev), "r+"), { code: "EBUSY" });
      }
      await ini.logout();
    } finally {
      ini.close();
      await devtree.stop();
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  },
);
