/**
 * libiscsi's own iSCSI transport tests (iscsi-test-cu iSCSI.* and MultipathIO.*) against this
 * target with the real SCSI device on a Malloc block device, reached through two portals.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { IscsiTarget } from "../../src/iscsi/target.js";
import { DEFAULT_ISCSI_OPTIONS } from "../../src/iscsi/options.js";
import { ScsiDevice } from "../../src/scsi/device.js";
import { MallocBdev } from "../../src/bdev/malloc/malloc.js";
import { TARGET, runTool } from "./harness.js";

for (const blockSize of [512, 4096]) {
  test(`iscsi-test-cu iSCSI.* and SCSI.MultipathIO.* pass on a ${blockSize}-byte Malloc LUN`, async () => {
    const bdev = new MallocBdev({ name: "Malloc0", blockSize, blockCount: (16 * 1024 * 1024) / blockSize });
    const device = new ScsiDevice({ name: "disk1", luns: [{ id: 0, bdev }] });
    await device.init();
    const target = new IscsiTarget(
      {
        globals: DEFAULT_ISCSI_OPTIONS,
        authGroups: [],
        portalGroups: [
          {
            tag: 1,
            portals: [
              { host: "127.0.0.1", port: 0 },
              { host: "127.0.0.1", port: 0 },
            ],
          },
        ],
        initiatorGroups: [{ tag: 1, initiators: ["ANY"], netmasks: ["127.0.0.1/32"] }],
        targets: [
          {
            name: TARGET,
            maps: [{ portalGroup: 1, initiatorGroup: 1 }],
            auth: { disableChap: true, requireChap: false, mutualChap: false },
            digest: { headerRequired: false, dataRequired: false },
            queueDepth: 64,
            device,
          },
        ],
      },
      pino({ level: process.env.USERTGT_LOG ?? "silent" }),
    );
    await target.start();
    try {
      const urls = target.addresses().map((a) => `iscsi://127.0.0.1:${a.port}/${TARGET}/0`);
      for (const [suite, minimum] of [
        ["iSCSI.*", 15],
        ["SCSI.MultipathIO.*", 3],
      ] as const) {
        const { out } = await runTool("iscsi-test-cu", ["-d", "-t", suite, ...urls], 120000);
        const summary = /tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/.exec(out);
        assert.ok(summary, `${suite}: no CUnit summary in output:\n${out.slice(-2000)}`);
        const [, total, ran, passed, failed] = summary.map(Number);
        assert.equal(failed, 0, out.slice(-4000));
        assert.ok(total >= minimum && ran === total && passed === total, out.slice(-2000));
      }
    } finally {
      await target.stop();
    }
  });
}
