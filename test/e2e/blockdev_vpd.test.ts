/**
 * A LUN over a block device reports the device's geometry through iSCSI, whether the AIO module or
 * the TCMUR `file` handler serves it: Block Limits VPD (SBC-4 6.6.3) OPTIMAL TRANSFER LENGTH from the
 * queue's max_sectors_kb (a loop device has no optimal_io_size) and OPTIMAL TRANSFER LENGTH
 * GRANULARITY from the physical block; Block Device Characteristics VPD (SBC-4 6.6.2) MEDIUM ROTATION
 * RATE 0001h for a non-rotational device and 0000h (not reported) for a rotational one; READ
 * CAPACITY(16) the logical-per-physical exponent. The loop devices' queue attributes are set through
 * sysfs to values no default would give (rotational 1, max_sectors_kb 512 on one of each kind).
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RawInitiator } from "../support/raw_initiator.js";
import { attachLoop, canUseLoopDevices, type LoopDevice } from "../support/loop_device.js";
import { cleanup, makeTempDir, startServer, stopCleanly, type RunningServer } from "./harness.js";

const IQN = "iqn.2016-06.io.spdk:blockvpd";
const SIZE = 16 * 1024 * 1024;
const SECTOR = 4096;
const PORTS: readonly [number, number] = [3610, 3619];
const skip = await canUseLoopDevices();

/** LUN number → how its loop device is set up. */
const LUNS = [
  { lun: 0, kind: "AIO", rotational: true, maxSectorsKb: 512 },
  { lun: 1, kind: "AIO", rotational: false, maxSectorsKb: undefined },
  { lun: 2, kind: "TCMUR", rotational: true, maxSectorsKb: 512 },
  { lun: 3, kind: "TCMUR", rotational: false, maxSectorsKb: undefined },
] as const;

async function queueAttr(dev: string, name: string): Promise<number> {
  return Number((await readFile(`/sys/block/${basename(dev)}/queue/${name}`, "utf8")).trim());
}

function inquiryVpd(page: number): Buffer {
  return Buffer.from([0x12, 0x01, page, 0x01, 0x00, 0x00]); // EVPD, ALLOCATION LENGTH 256
}

describe(
  "block-device LUNs report the device's geometry in VPD B0h/B1h and READ CAPACITY(16)",
  { skip },
  () => {
    let dir: string;
    const loops: LoopDevice[] = [];
    let server: RunningServer | undefined;
    let ini: RawInitiator;

    before(async () => {
      dir = await makeTempDir("blockvpd");
      for (const l of LUNS) {
        const loop = await attachLoop(join(dir, `lun${l.lun}.img`), SIZE, SECTOR);
        loops.push(loop);
        const q = `/sys/block/${basename(loop.device)}/queue`;
        await writeFile(`${q}/rotational`, l.rotational ? "1" : "0");
        if (l.maxSectorsKb) await writeFile(`${q}/max_sectors_kb`, String(l.maxSectorsKb));
      }
      const config = (ports: number[]): string => `[AIO]
  AIO ${loops[0]!.device} AIO0
  AIO ${loops[1]!.device} AIO1
[TCMUR]
  TCMUR 0 file_r /file/${loops[2]!.device}
  TCMUR 1 file_n /file/${loops[3]!.device}
[PortalGroup1]
  Portal P 127.0.0.1:${ports[0]}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 AIO0
  LUN1 AIO1
  LUN2 file_r
  LUN3 file_n
`;
      server = await startServer(config, {
        dir,
        portRange: PORTS,
        args: ["--state-dir", join(dir, "state"), "--no-fuse"],
      });
      ini = await RawInitiator.connect(server.ports[0]);
      const login = await ini.login({ targetName: IQN, initiatorName: "iqn.2024-01.test:blockvpd" });
      assert.equal(login.statusClass, 0, `login status ${login.statusClass}/${login.statusDetail}`);
      for (const l of LUNS) {
        // Collect each LUN's power-on unit attention (SAM-5 5.14).
        for (let i = 0; i < 3 && (await ini.scsi(Buffer.alloc(6), { lun: l.lun })).status !== 0; i++);
      }
    });
    after(async () => {
      ini?.close();
      if (server) await stopCleanly(server);
      for (const l of loops) await l.detach();
      await cleanup(dir);
    });

    for (const l of LUNS) {
      it(`${l.kind} LUN ${l.lun}: rotational ${l.rotational}, max_sectors_kb ${l.maxSectorsKb ?? "default"}`, async () => {
        const dev = loops[l.lun]!.device;
        const maxKb = await queueAttr(dev, "max_sectors_kb");
        const optimalIo = await queueAttr(dev, "optimal_io_size");
        const physical = await queueAttr(dev, "physical_block_size");
        if (l.maxSectorsKb) assert.equal(maxKb, l.maxSectorsKb, "sysfs took max_sectors_kb");

        const b0 = await ini.scsi(inquiryVpd(0xb0), { lun: l.lun, read: 256 });
        assert.equal(b0.status, 0, "INQUIRY VPD B0h");
        assert.equal(b0.data[1], 0xb0);
        const granularity = b0.data.readUInt16BE(6);
        const optimal = b0.data.readUInt32BE(12);
        assert.equal(granularity, Math.max(1, physical / SECTOR), "OPTIMAL TRANSFER LENGTH GRANULARITY");
        const wantOptimalBytes = optimalIo > 0 ? optimalIo : maxKb * 1024;
        assert.equal(
          optimal,
          wantOptimalBytes / SECTOR,
          "OPTIMAL TRANSFER LENGTH: the device's, not a default",
        );

        const b1 = await ini.scsi(inquiryVpd(0xb1), { lun: l.lun, read: 256 });
        assert.equal(b1.status, 0, "INQUIRY VPD B1h");
        assert.equal(b1.data[1], 0xb1);
        assert.equal(
          b1.data.readUInt16BE(4),
          l.rotational ? 0x0000 : 0x0001,
          "MEDIUM ROTATION RATE: 0000h not reported (rotational), 0001h non-rotating",
        );

        const rc16 = Buffer.alloc(16);
        rc16[0] = 0x9e;
        rc16[1] = 0x10;
        rc16.writeUInt32BE(32, 10);
        const cap = await ini.scsi(rc16, { lun: l.lun, read: 32 });
        assert.equal(cap.status, 0, "READ CAPACITY(16)");
        assert.equal(cap.data.readUInt32BE(8), SECTOR, "LOGICAL BLOCK LENGTH");
        assert.equal(
          cap.data[13] & 0x0f,
          Math.log2(physical / SECTOR),
          "LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT",
        );
      });
    }
  },
);
