/** UNMAP, WRITE SAME, COMPARE AND WRITE, ORWRITE, VERIFY, GET LBA STATUS, START STOP / PREVENT on a Malloc LUN. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cdb10, cdb16, clearUa, dataIn, makeDevice, run, senseOf } from "./helpers.js";

function unmapList(ranges: [number, number][]): Buffer {
  const b = Buffer.alloc(8 + 16 * ranges.length);
  b.writeUInt16BE(b.length - 2, 0);
  b.writeUInt16BE(16 * ranges.length, 2);
  ranges.forEach(([lba, n], i) => {
    b.writeBigUInt64BE(BigInt(lba), 8 + 16 * i);
    b.writeUInt32BE(n, 16 + 16 * i);
  });
  return b;
}

function unmapCdb(len: number): number[] {
  return [0x42, 0, 0, 0, 0, 0, 0, len >> 8, len & 0xff, 0];
}

for (const bs of [512, 4096]) {
  describe(`SBC-3 data commands, ${bs}-byte blocks`, () => {
    it("UNMAP zeroes the ranges; a range beyond the end fails whole with LBA OUT OF RANGE", async () => {
      const dev = makeDevice(bs, 128);
      await clearUa(dev);
      await run(dev, cdb10(0x2a, 0, 16), { dataOut: Buffer.alloc(16 * bs, 0xaa) });
      const list = unmapList([
        [2, 3],
        [10, 1],
      ]);
      const u = await run(dev, unmapCdb(list.length), { dataOut: list });
      assert.equal(u.status, 0);
      const r = dataIn(await run(dev, cdb10(0x28, 0, 16)));
      for (let blk = 0; blk < 16; blk++) {
        const zero = (blk >= 2 && blk < 5) || blk === 10;
        assert.equal(r[blk * bs], zero ? 0 : 0xaa, `block ${blk}`);
      }
      const bad = unmapList([
        [0, 1],
        [127, 2],
      ]);
      await run(dev, cdb10(0x2a, 0, 1), { dataOut: Buffer.alloc(bs, 0xbb) });
      const u2 = await run(dev, unmapCdb(bad.length), { dataOut: bad });
      assert.deepEqual(senseOf(u2), { key: 0x5, asc: 0x21, ascq: 0 });
      assert.equal(dataIn(await run(dev, cdb10(0x28, 0, 1)))[0], 0xbb, "no partial effect");
      const short = await run(dev, unmapCdb(4), { dataOut: Buffer.alloc(4) });
      assert.deepEqual(senseOf(short), { key: 0x5, asc: 0x1a, ascq: 0 });
    });

    it("WRITE SAME 10/16 replicate one block, UNMAP+zero deallocates, ANCHOR and bad data-out size fail", async () => {
      const dev = makeDevice(bs, 128);
      await clearUa(dev);
      const pattern = Buffer.alloc(bs);
      for (let i = 0; i < bs; i++) pattern[i] = i & 0xff;
      const ws = await run(dev, cdb10(0x41, 5, 7), { dataOut: pattern });
      assert.equal(ws.status, 0);
      const r = dataIn(await run(dev, cdb10(0x28, 5, 7)));
      for (let blk = 0; blk < 7; blk++) assert.ok(r.subarray(blk * bs, (blk + 1) * bs).equals(pattern));
      const ws16 = await run(dev, cdb16(0x93, 5, 7, 0x08), { dataOut: Buffer.alloc(bs) });
      assert.equal(ws16.status, 0);
      assert.ok(dataIn(await run(dev, cdb10(0x28, 5, 7))).equals(Buffer.alloc(7 * bs)));
      const anchor = await run(dev, cdb10(0x41, 0, 1, 0x10), { dataOut: pattern });
      assert.deepEqual(senseOf(anchor), { key: 0x5, asc: 0x24, ascq: 0 });
      const tooBig = await run(dev, cdb10(0x41, 0, 1), { dataOut: Buffer.alloc(2 * bs) });
      assert.deepEqual(senseOf(tooBig), { key: 0x5, asc: 0x0e, ascq: 0x03 });
      const toEnd = await run(dev, cdb10(0x41, 120, 0), { dataOut: pattern });
      assert.equal(toEnd.status, 0);
      assert.ok(dataIn(await run(dev, cdb10(0x28, 127, 1))).equals(pattern));
      const ndob = await run(dev, cdb16(0x93, 120, 8, 0x01));
      assert.equal(ndob.status, 0);
      assert.ok(dataIn(await run(dev, cdb10(0x28, 120, 8))).equals(Buffer.alloc(8 * bs)));
    });

    it("COMPARE AND WRITE writes on match; on mismatch leaves data and reports the offset", async () => {
      const dev = makeDevice(bs, 64);
      await clearUa(dev);
      const a = Buffer.alloc(2 * bs, 0x41);
      await run(dev, cdb10(0x2a, 8, 2), { dataOut: a });
      const caw = (lba: number, n: number) => {
        const c = Buffer.alloc(16);
        c[0] = 0x89;
        c.writeBigUInt64BE(BigInt(lba), 2);
        c[13] = n;
        return c;
      };
      const ok = await run(dev, caw(8, 2), { dataOut: Buffer.concat([a, Buffer.alloc(2 * bs, 0x42)]) });
      assert.equal(ok.status, 0);
      assert.ok(dataIn(await run(dev, cdb10(0x28, 8, 2))).equals(Buffer.alloc(2 * bs, 0x42)));
      const cmp = Buffer.alloc(2 * bs, 0x42);
      cmp[bs + 5] = 0x43;
      const bad = await run(dev, caw(8, 2), { dataOut: Buffer.concat([cmp, Buffer.alloc(2 * bs, 0x44)]) });
      assert.equal(bad.status, 0x02);
      assert.deepEqual(senseOf(bad), { key: 0xe, asc: 0x1d, ascq: 0 });
      assert.equal(bad.sense!.readUInt32BE(3), bs + 5);
      assert.ok(dataIn(await run(dev, cdb10(0x28, 8, 2))).equals(Buffer.alloc(2 * bs, 0x42)));
    });

    it("ORWRITE ORs, VERIFY BYTCHK=1/3 compare, BYTCHK=2 is invalid", async () => {
      const dev = makeDevice(bs, 64);
      await clearUa(dev);
      await run(dev, cdb10(0x2a, 0, 1), { dataOut: Buffer.alloc(bs, 0x0f) });
      const or = await run(dev, cdb16(0x8b, 0, 1), { dataOut: Buffer.alloc(bs, 0xf0) });
      assert.equal(or.status, 0);
      assert.ok(dataIn(await run(dev, cdb10(0x28, 0, 1))).equals(Buffer.alloc(bs, 0xff)));
      assert.equal((await run(dev, cdb10(0x2f, 0, 1, 0x02), { dataOut: Buffer.alloc(bs, 0xff) })).status, 0);
      const mis = await run(dev, cdb10(0x2f, 0, 1, 0x02), { dataOut: Buffer.alloc(bs, 0xfe) });
      assert.deepEqual(senseOf(mis), { key: 0xe, asc: 0x1d, ascq: 0 });
      assert.equal((await run(dev, cdb10(0x2f, 0, 1, 0x06), { dataOut: Buffer.alloc(bs, 0xff) })).status, 0);
      assert.deepEqual(senseOf(await run(dev, cdb10(0x2f, 0, 1, 0x04))), { key: 0x5, asc: 0x24, ascq: 0 });
      assert.equal((await run(dev, cdb10(0x2f, 0, 4))).status, 0);
    });

    it("GET LBA STATUS reports written blocks mapped and zero blocks deallocated", async () => {
      const dev = makeDevice(bs, 64);
      await clearUa(dev);
      await run(dev, cdb10(0x2a, 8, 2), { dataOut: Buffer.alloc(2 * bs, 1) });
      const status = async (lba: number) => {
        const c = Buffer.alloc(16);
        c[0] = 0x9e;
        c[1] = 0x12;
        c.writeBigUInt64BE(BigInt(lba), 2);
        c.writeUInt32BE(1024, 10);
        const d = dataIn(await run(dev, c));
        const got = [];
        for (let o = 8; o < 4 + d.readUInt32BE(0); o += 16) {
          got.push([Number(d.readBigUInt64BE(o)), d.readUInt32BE(o + 8), d[o + 12]]);
        }
        return got;
      };
      assert.deepEqual(await status(0), [
        [0, 8, 1],
        [8, 2, 0],
        [10, 54, 1],
      ]);
      // The first descriptor starts at the STARTING LOGICAL BLOCK ADDRESS (SBC-3 5.6).
      assert.deepEqual((await status(3))[0], [3, 5, 1]);
      assert.deepEqual((await status(9))[0], [9, 1, 0]);
      assert.deepEqual(senseOf(await run(dev, [0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 24, 0, 0])), {
        key: 0x5,
        asc: 0x21,
        ascq: 0,
      });
    });

    it("the medium is not removable: INQUIRY RMB 0, LOEJ neither ejects nor fails, PREVENT is accepted", async () => {
      const dev = makeDevice(bs, 64);
      await clearUa(dev);
      const inq = await run(dev, [0x12, 0, 0, 0, 96, 0]);
      assert.equal(dataIn(inq)[1] & 0x80, 0, "RMB");
      assert.equal((await run(dev, [0x1e, 0, 0, 0, 1, 0])).status, 0);
      assert.equal((await run(dev, [0x1b, 0, 0, 0, 2, 0])).status, 0, "LOEJ with START 0");
      assert.equal((await run(dev, [0, 0, 0, 0, 0, 0])).status, 0, "still ready after LOEJ");
      assert.equal((await run(dev, cdb10(0x28, 0, 1))).status, 0, "still readable after LOEJ");
      assert.deepEqual(senseOf(await run(dev, [0x1e, 0, 0, 0, 2, 0])), { key: 0x5, asc: 0x24, ascq: 0 });
    });
  });
}
