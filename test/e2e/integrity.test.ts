/**
 * Data written through iSCSI survives a server restart on the same AIO file.
 * A pattern goes out with WRITE(16) (immediate data, R2T-solicited Data-Out, and FUA), the server is
 * stopped with SIGTERM (clean shutdown: sessions dropped, files flushed, exit 0) and started again on
 * the same config; READ(16) must return the same bytes, and the file itself holds them at the same
 * offsets.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RawInitiator } from "../support/raw_initiator.js";
import { cleanup, makeTempDir, startServer, stopCleanly } from "./harness.js";

const IQN = "iqn.2016-06.io.spdk:integrity";
const FILE_MB = 16;

function rw16(opcode: 0x88 | 0x8a, lba: number, blocks: number, fua = false): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = opcode;
  cdb[1] = fua ? 0x08 : 0;
  cdb.writeBigUInt64BE(BigInt(lba), 2);
  cdb.writeUInt32BE(blocks, 10);
  return cdb;
}

function config(dir: string, port: number, blockSize: number): string {
  return `[AIO]
  AIO ${join(dir, `data${blockSize}.img`)} AIO0 ${blockSize} ${FILE_MB}
[PortalGroup1]
  Portal P 127.0.0.1:${port}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 AIO0
`;
}

async function session(port: number): Promise<RawInitiator> {
  const ini = await RawInitiator.connect(port);
  const login = await ini.login({ targetName: IQN, initiatorName: "iqn.2024-01.test:integrity" });
  assert.equal(login.statusClass, 0, `login status ${login.statusClass}/${login.statusDetail}`);
  // As any initiator does: collect the unit attentions of a new I_T nexus (POWER ON, SAM-5 5.14).
  for (let i = 0; i < 4; i++) {
    const tur = await ini.scsi(Buffer.alloc(6));
    if (tur.status === 0) return ini;
    assert.equal(
      tur.sense[2] & 0x0f,
      0x06,
      `TEST UNIT READY: status ${tur.status}, sense ${tur.sense.toString("hex")}`,
    );
  }
  assert.fail("unit attentions did not clear after 4 TEST UNIT READY");
}

describe("data integrity across a restart", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("integrity");
  });
  after(async () => {
    await cleanup(dir);
  });

  for (const blockSize of [512, 4096]) {
    it(`AIO ${blockSize}: a pattern written through iSCSI reads back after SIGTERM and restart`, async (t) => {
      const totalBlocks = (FILE_MB * 1048576) / blockSize;
      // Small (immediate data), large (beyond FirstBurstLength: R2T/Data-Out), and the last block with FUA.
      const regions = [
        { lba: 0, data: randomBytes(8 * blockSize), fua: false },
        { lba: 1000, data: randomBytes(512 * 1024), fua: false },
        { lba: totalBlocks - 1, data: randomBytes(blockSize), fua: true },
      ];

      const first = await startServer((ports, d) => config(d, ports[0], blockSize), { dir });
      const port = first.ports[0];
      try {
        const ini = await session(port);
        t.after(() => ini.close());
        for (const r of regions) {
          const res = await ini.scsi(rw16(0x8a, r.lba, r.data.length / blockSize, r.fua), { write: r.data });
          assert.equal(
            res.status,
            0,
            `WRITE(16) at LBA ${r.lba}: status ${res.status}, sense ${res.sense.toString("hex")}`,
          );
        }
        ini.close();
      } finally {
        await stopCleanly(first);
      }

      // The file itself holds the bytes at LBA * blockSize.
      const fh = await open(join(dir, `data${blockSize}.img`), "r");
      try {
        assert.equal((await fh.stat()).size, FILE_MB * 1048576);
        for (const r of regions) {
          const buf = Buffer.alloc(r.data.length);
          await fh.read(buf, 0, buf.length, r.lba * blockSize);
          assert.ok(buf.equals(r.data), `file bytes at LBA ${r.lba} differ`);
        }
      } finally {
        await fh.close();
      }

      const second = await startServer((_ports, d) => config(d, port, blockSize), { dir });
      try {
        const ini = await session(port);
        t.after(() => ini.close());
        for (const r of regions) {
          const res = await ini.scsi(rw16(0x88, r.lba, r.data.length / blockSize), { read: r.data.length });
          assert.equal(res.status, 0, `READ(16) at LBA ${r.lba}: status ${res.status}`);
          assert.equal(res.data.length, r.data.length);
          assert.ok(res.data.equals(r.data), `bytes read back at LBA ${r.lba} differ from those written`);
        }
        // A block never written reads as zeroes (the file was created sparse).
        const blank = await ini.scsi(rw16(0x88, 500, 1), { read: blockSize });
        assert.ok(blank.data.equals(Buffer.alloc(blockSize)));
        ini.close();
      } finally {
        await stopCleanly(second);
      }
    });
  }
});
