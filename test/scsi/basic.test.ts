/** ScsiDevice on a Malloc LUN: INQUIRY, TUR, REQUEST SENSE, REPORT LUNS, READ CAPACITY, READ/WRITE, SYNC CACHE. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cdb10, cdb16, clearUa, dataIn, makeDevice, nexusA, run, senseOf } from "./helpers.js";

for (const bs of [512, 4096]) {
  describe(`basic SCSI commands, ${bs}-byte blocks`, () => {
    it("reports POWER ON at first contact, but INQUIRY and REPORT LUNS run through it", async () => {
      const dev = makeDevice(bs);
      const inq = await run(dev, [0x12, 0, 0, 0, 96, 0]);
      assert.equal(inq.status, 0);
      const rl = await run(dev, [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0]);
      assert.equal(rl.status, 0);
      const tur = await run(dev, [0, 0, 0, 0, 0, 0]);
      assert.equal(tur.status, 0x02);
      assert.deepEqual(senseOf(tur), { key: 0x6, asc: 0x29, ascq: 0x00 });
      const tur2 = await run(dev, [0, 0, 0, 0, 0, 0]);
      assert.equal(tur2.status, 0);
    });

    it("standard INQUIRY: SPC-4, vendor USERTGT, product from the bdev, CMDQUE, allocation length", async () => {
      const dev = makeDevice(bs);
      const t = await run(dev, [0x12, 0, 0, 0, 255, 0]);
      const d = dataIn(t);
      assert.equal(d[0], 0x00);
      assert.equal(d[2], 0x06);
      assert.equal(d[3] & 0x0f, 2);
      assert.equal(d[4] + 5, d.length);
      assert.equal(d.subarray(8, 16).toString("ascii"), "USERTGT ");
      assert.equal(d.subarray(16, 32).toString("ascii").trim(), "Malloc disk");
      assert.equal(d[7] & 0x02, 0x02);
      const short = await run(dev, [0x12, 0, 0, 0, 5, 0]);
      assert.equal(dataIn(short).length, 5);
      assert.equal(short.transferLength, 5);
      const bad = await run(dev, [0x12, 0, 0x80, 0, 255, 0]);
      assert.equal(bad.status, 0x02);
      assert.deepEqual(senseOf(bad), { key: 0x5, asc: 0x24, ascq: 0 });
    });

    it("VPD pages 00, 80, 83, B0, B2 are consistent", async () => {
      const dev = makeDevice(bs);
      const pages = dataIn(await run(dev, [0x12, 1, 0x00, 0, 255, 0]));
      const list = [...pages.subarray(4, 4 + pages.readUInt16BE(2))];
      assert.deepEqual(list, [0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2]);
      for (const p of list) {
        const d = dataIn(await run(dev, [0x12, 1, p, 0, 255, 0]));
        assert.equal(d[1], p);
        assert.equal(d.readUInt16BE(2) + 4, d.length, `page ${p.toString(16)} length`);
      }
      const uuid = dev.logicalUnit(0)!.bdev.uuid.replace(/-/g, "");
      const serial = dataIn(await run(dev, [0x12, 1, 0x80, 0, 255, 0]));
      assert.equal(serial.subarray(4).toString("ascii"), uuid);
      const id = dataIn(await run(dev, [0x12, 1, 0x83, 0, 255, 0]));
      assert.equal(id[4 + 1] & 0x0f, 3); // first designator: NAA
      assert.equal(id[8] >> 4, 6);
      const bl = dataIn(await run(dev, [0x12, 1, 0xb0, 0, 255, 0]));
      assert.equal(bl.readUInt16BE(2), 0x3c);
      assert.ok(bl.readUInt32BE(8) > 0);
      const lbp = dataIn(await run(dev, [0x12, 1, 0xb2, 0, 255, 0]));
      assert.equal(lbp[5] & 0xe4, 0xe4); // LBPU LBPWS LBPWS10 LBPRZ
      const none = await run(dev, [0x12, 1, 0x99, 0, 255, 0]);
      assert.deepEqual(senseOf(none), { key: 0x5, asc: 0x24, ascq: 0 });
    });

    it("REPORT LUNS lists every LUN; a missing LUN answers INQUIRY with qualifier 011b", async () => {
      const dev = makeDevice(bs, 64, 2);
      const d = dataIn(await run(dev, [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]));
      assert.equal(d.readUInt32BE(0), 24);
      assert.deepEqual([d[9], d[17], d[25]], [0, 1, 2]);
      const inq = await run(dev, [0x12, 0, 0, 0, 36, 0], { lun: 7 });
      assert.equal(dataIn(inq)[0], 0x7f);
      const tur = await run(dev, [0, 0, 0, 0, 0, 0], { lun: 7 });
      assert.deepEqual(senseOf(tur), { key: 0x5, asc: 0x25, ascq: 0 });
    });

    it("READ CAPACITY 10/16 report size and provisioning", async () => {
      const dev = makeDevice(bs, 1000);
      await clearUa(dev);
      const rc10 = dataIn(await run(dev, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
      assert.equal(rc10.readUInt32BE(0), 999);
      assert.equal(rc10.readUInt32BE(4), bs);
      const rc16 = dataIn(await run(dev, [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]));
      assert.equal(rc16.readBigUInt64BE(0), 999n);
      assert.equal(rc16.readUInt32BE(8), bs);
      assert.equal(rc16[14] & 0xc0, 0xc0);
      const badPmi = await run(dev, [0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
      assert.deepEqual(senseOf(badPmi), { key: 0x5, asc: 0x24, ascq: 0 });
    });

    it("WRITE then READ 10/16 round-trip, beyond-end and FUA", async () => {
      const dev = makeDevice(bs, 256);
      await clearUa(dev);
      const data = Buffer.alloc(4 * bs);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
      const w = await run(dev, cdb10(0x2a, 10, 4, 0x08), { dataOut: data });
      assert.equal(w.status, 0);
      assert.equal(w.transferLength, 4 * bs);
      const r = await run(dev, cdb16(0x88, 10, 4));
      assert.equal(r.status, 0);
      assert.ok(dataIn(r).equals(data));
      const beyond = await run(dev, cdb10(0x28, 254, 4));
      assert.deepEqual(senseOf(beyond), { key: 0x5, asc: 0x21, ascq: 0 });
      const huge = await run(dev, cdb16(0x88, 0xffffffffffffffffn, 1));
      assert.deepEqual(senseOf(huge), { key: 0x5, asc: 0x21, ascq: 0 });
      const prot = await run(dev, cdb10(0x28, 0, 1, 0x20));
      assert.deepEqual(senseOf(prot), { key: 0x5, asc: 0x24, ascq: 0 });
    });

    it("a WRITE with a short data-out writes only the whole blocks that arrived", async () => {
      const dev = makeDevice(bs, 64);
      await clearUa(dev);
      await run(dev, cdb10(0x2a, 0, 2), { dataOut: Buffer.alloc(2 * bs, 0x61) });
      const w = await run(dev, cdb10(0x2a, 0, 2), { dataOut: Buffer.alloc(bs, 0x62) });
      assert.equal(w.status, 0);
      assert.equal(w.transferLength, 2 * bs);
      const r = dataIn(await run(dev, cdb10(0x28, 0, 2)));
      assert.ok(r.subarray(0, bs).equals(Buffer.alloc(bs, 0x62)));
      assert.ok(r.subarray(bs).equals(Buffer.alloc(bs, 0x61)));
    });

    it("READ(6) with transfer length 0 reads 256 blocks; SYNCHRONIZE CACHE succeeds", async () => {
      const dev = makeDevice(bs, 512);
      await clearUa(dev);
      const r = await run(dev, [0x08, 0, 0, 1, 0, 0]);
      assert.equal(r.status, 0);
      assert.equal(r.transferLength, 256 * bs);
      const s = await run(dev, cdb10(0x35, 0, 0));
      assert.equal(s.status, 0);
      const s16 = await run(dev, cdb16(0x91, 600, 1));
      assert.deepEqual(senseOf(s16), { key: 0x5, asc: 0x21, ascq: 0 });
    });

    it("REQUEST SENSE reports and clears a pending unit attention in the asked format", async () => {
      const dev = makeDevice(bs);
      const rs = await run(dev, [0x03, 0x01, 0, 0, 252, 0]);
      assert.equal(rs.status, 0);
      const d = dataIn(rs);
      assert.equal(d[0], 0x72);
      assert.equal(d[1], 0x06);
      assert.equal(d[2], 0x29);
      const rs2 = dataIn(await run(dev, [0x03, 0, 0, 0, 252, 0]));
      assert.equal(rs2[0], 0x70);
      assert.equal(rs2[2], 0x00);
      assert.equal((await run(dev, [0, 0, 0, 0, 0, 0])).status, 0);
    });

    it("unknown opcode → INVALID COMMAND OPERATION CODE; NACA → INVALID FIELD IN CDB", async () => {
      const dev = makeDevice(bs);
      await clearUa(dev, nexusA);
      assert.deepEqual(senseOf(await run(dev, [0xc5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), {
        key: 0x5,
        asc: 0x20,
        ascq: 0,
      });
      assert.deepEqual(senseOf(await run(dev, [0, 0, 0, 0, 0, 0x04])), { key: 0x5, asc: 0x24, ascq: 0 });
      assert.deepEqual(senseOf(await run(dev, [0x9e, 0x1b, ...Array(14).fill(0)])), {
        key: 0x5,
        asc: 0x24,
        ascq: 0,
      });
    });
  });
}
