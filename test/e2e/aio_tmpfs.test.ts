/**
 * An AIO LUN on a tmpfs file (/dev/shm) is read and written inline on the event loop
 * (src/io_engine/backing.ts). Data written through iSCSI, with and without FUA, in one command and
 * in R2T-solicited Data-Out, is in the file once acknowledged: the server is killed with SIGKILL
 * (no shutdown flush), the file holds the bytes, and a new server reads them back.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RawInitiator } from "../support/raw_initiator.js";
import { startServer, stopCleanly, type RunningServer } from "./harness.js";

const IQN = "iqn.2016-06.io.spdk:aiotmpfs";
const FILE_MB = 16;
const BLOCK = 4096;
const PORTS: readonly [number, number] = [3860, 3869];

function rw16(opcode: 0x88 | 0x8a, lba: number, blocks: number, fua = false): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = opcode;
  cdb[1] = fua ? 0x08 : 0;
  cdb.writeBigUInt64BE(BigInt(lba), 2);
  cdb.writeUInt32BE(blocks, 10);
  return cdb;
}

function config(file: string, port: number): string {
  return `[AIO]
  AIO ${file} AIO0 ${BLOCK} ${FILE_MB}
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
  const login = await ini.login({ targetName: IQN, initiatorName: "iqn.2024-01.test:aiotmpfs" });
  assert.equal(login.statusClass, 0, `login status ${login.statusClass}/${login.statusDetail}`);
  for (let i = 0; i < 4; i++) if ((await ini.scsi(Buffer.alloc(6))).status === 0) return ini;
  assert.fail("unit attentions did not clear after 4 TEST UNIT READY");
}

async function kill(server: RunningServer): Promise<void> {
  const exited = new Promise((r) => server.child.once("exit", r));
  server.child.kill("SIGKILL");
  await exited;
}

describe("AIO LUN on tmpfs", { skip: !existsSync("/dev/shm") }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp("/dev/shm/usertgt-aio-tmpfs-");
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("acknowledged writes are in the file after SIGKILL and read back after a restart", async (t) => {
    const file = join(dir, "lun.img");
    const blocks = (FILE_MB * 1048576) / BLOCK;
    const regions = [
      { lba: 0, data: randomBytes(2 * BLOCK), fua: false },
      { lba: 7, data: randomBytes(BLOCK), fua: true },
      { lba: 1000, data: randomBytes(512 * 1024), fua: true },
      { lba: blocks - 1, data: randomBytes(BLOCK), fua: false },
    ];
    const first = await startServer((ports) => config(file, ports[0]), { dir, portRange: PORTS });
    const port = first.ports[0];
    try {
      const ini = await session(port);
      t.after(() => ini.close());
      for (const r of regions) {
        const res = await ini.scsi(rw16(0x8a, r.lba, r.data.length / BLOCK, r.fua), { write: r.data });
        assert.equal(res.status, 0, `WRITE(16) at LBA ${r.lba}: status ${res.status}`);
        const back = await ini.scsi(rw16(0x88, r.lba, r.data.length / BLOCK), { read: r.data.length });
        assert.ok(back.data.equals(r.data), `READ(16) at LBA ${r.lba} differs from what was written`);
      }
      ini.close();
    } finally {
      await kill(first);
    }

    const fh = await open(file, "r");
    try {
      for (const r of regions) {
        const buf = Buffer.alloc(r.data.length);
        await fh.read(buf, 0, buf.length, r.lba * BLOCK);
        assert.ok(buf.equals(r.data), `file bytes at LBA ${r.lba} differ`);
      }
    } finally {
      await fh.close();
    }

    const second = await startServer((_p) => config(file, port), { dir, portRange: PORTS });
    try {
      const ini = await session(port);
      t.after(() => ini.close());
      for (const r of regions) {
        const res = await ini.scsi(rw16(0x88, r.lba, r.data.length / BLOCK), { read: r.data.length });
        assert.equal(res.status, 0);
        assert.ok(res.data.equals(r.data), `bytes read back at LBA ${r.lba} after restart differ`);
      }
      const blank = await ini.scsi(rw16(0x88, 500, 1), { read: BLOCK });
      assert.ok(blank.data.equals(Buffer.alloc(BLOCK)));
      ini.close();
    } finally {
      await stopCleanly(second);
    }
  });
});
