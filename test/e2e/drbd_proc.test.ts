/**
 * `<mount point>/proc/drbd`: the kernel module's status file in the device tree's FUSE view. A server with
 * two one-node resources: r2 brought up Primary by the reference config's BIO helper, r3 configured but never up.
 * `cat` shows r2 StandAlone Primary/UpToDate with its out-of-sync KiB (a one-node Primary records every
 * write), r3 as an unconfigured minor. iSCSI ports 3400-3419.
 */
import assert from "node:assert/strict";
import { access, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RawInitiator } from "../support/raw_initiator.js";
import { freePorts } from "./drbd_ports.js";
import { cleanup, makeTempDir, run, startServer, stopCleanly } from "./harness.js";

const IQN = "iqn.2016-06.io.spdk:drbdproc";

const RES = `resource r2 {
    on procnode {
        address 127.0.0.1:7808;
        volume 0 { device drbd2 minor 2; disk "/UMCfuse/dev/ram_b"; meta-disk internal; }
    }
}
resource r3 {
    on procnode {
        address 127.0.0.1:7807;
        volume 0 { device drbd3 minor 3; disk "/UMCfuse/dev/ram_c"; meta-disk internal; }
    }
}
`;

function config(port: number): string {
  return `[TCMUR]
  TCMUR 3 ram_b /ram/procb size=16M bs=512
  TCMUR 4 ram_c /ram/procc size=16M bs=512
[BIO]
  BIO bio1 /UMCfuse/dev/drbd2 drbdadm_up_primary r2 /UMCfuse/dev/ram_b
[PortalGroup1]
  Portal A 127.0.0.1:${port}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  LUN0 bio1
`;
}

describe("proc/drbd in the FUSE view", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("drbd-proc");
    await writeFile(join(dir, "r.res"), RES);
  });
  after(async () => {
    await cleanup(dir);
  });

  it("shows each minor as the kernel's /proc/drbd does", { timeout: 60000 }, async () => {
    const [port] = await freePorts(1, 3400, 3419);
    const mnt = join(dir, "mnt");
    const server = await startServer(() => config(port), {
      dir,
      args: [
        "--mount-point",
        mnt,
        "--drbd-config",
        join(dir, "r.res"),
        "--node-name",
        "procnode",
        "--no-rpc",
      ],
    });
    try {
      const proc = join(mnt, "proc/drbd");
      const deadline = Date.now() + 10000;
      while (
        await access(proc).then(
          () => false,
          () => true,
        )
      ) {
        assert.ok(Date.now() < deadline, `${proc} did not appear:\n${server.stderr()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const before = (await run("cat", [proc])).stdout;
      assert.equal(
        before,
        [
          "version: 8.4 (api:1/proto:86-101)",
          "srcversion: usertgt",
          "",
          " 2: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   r-----",
          "    ns:0 nr:0 dw:0 dr:0 oos:0",
          " 3: cs:Unconfigured",
          "",
        ].join("\n"),
      );
      // 8 KiB written through the LUN while no peer is there: two 4 KiB bits out of sync.
      const ini = await RawInitiator.connect(port);
      try {
        assert.equal((await ini.login({ targetName: IQN })).statusClass, 0);
        const cdb = Buffer.from([0x2a, 0, 0, 0, 0, 64, 0, 0, 16, 0]); // WRITE(10) LBA 64, 16 × 512 B
        let w = await ini.scsi(cdb, { write: Buffer.alloc(8192, 0xa5) });
        if (w.status === 2) w = await ini.scsi(cdb, { write: Buffer.alloc(8192, 0xa5) }); // POWER ON UA
        assert.equal(w.status, 0, `WRITE(10): sense ${w.sense.toString("hex")}`);
      } finally {
        ini.close();
      }
      // No peer: nothing sent; 8 KiB written to ram_b.
      assert.match((await run("cat", [proc])).stdout, /^ {4}ns:0 nr:0 dw:8 dr:\d+ oos:8$/m);
    } finally {
      await stopCleanly(server);
    }
  });
});
