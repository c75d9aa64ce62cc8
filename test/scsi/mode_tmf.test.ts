/** MODE SENSE/SELECT with unit attentions, REPORT SUPPORTED OPERATION CODES, task attributes and TMF. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ScsiTask } from "../../src/scsi/task.js";
import { cdb10, clearUa, dataIn, makeDevice, nexusA, nexusB, run, senseOf } from "./helpers.js";

describe("mode pages", () => {
  it("MODE SENSE(6) all pages: header, block descriptor, pages in order, DPOFUA", async () => {
    const dev = makeDevice(4096, 100);
    await clearUa(dev);
    const d = dataIn(await run(dev, [0x1a, 0, 0x3f, 0, 255, 0]));
    assert.equal(d[0], d.length - 1);
    assert.equal(d[2] & 0x10, 0x10);
    assert.equal(d[3], 8);
    assert.equal(d.readUInt32BE(4), 100);
    assert.equal(d.readUIntBE(9, 3), 4096);
    const codes = [];
    for (let o = 12; o < d.length; o += d[o + 1] + 2) codes.push(d[o] & 0x3f);
    assert.deepEqual(codes, [0x01, 0x08, 0x0a, 0x1c]);
    const saved = await run(dev, [0x1a, 0, 0xc8, 0, 255, 0]);
    assert.deepEqual(senseOf(saved), { key: 0x5, asc: 0x39, ascq: 0 });
    const unknown = await run(dev, [0x1a, 0, 0x05, 0, 255, 0]);
    assert.deepEqual(senseOf(unknown), { key: 0x5, asc: 0x24, ascq: 0 });
  });

  it("MODE SENSE(10) LLBAA returns a 16-byte block descriptor", async () => {
    const dev = makeDevice(512, 100);
    await clearUa(dev);
    const d = dataIn(await run(dev, [0x5a, 0x10, 0x0a, 0, 0, 0, 0, 0, 255, 0]));
    assert.equal(d.readUInt16BE(0), d.length - 2);
    assert.equal(d[4] & 1, 1);
    assert.equal(d.readUInt16BE(6), 16);
    assert.equal(d.readBigUInt64BE(8), 100n);
    assert.equal(d.readUInt32BE(20), 512);
    assert.equal(d[24], 0x0a);
  });

  it("MODE SELECT sets D_SENSE and SWP, tells other nexuses, rejects unchangeable bits", async () => {
    const dev = makeDevice(512, 100);
    await clearUa(dev, nexusA);
    await clearUa(dev, nexusB);
    const ms = dataIn(await run(dev, [0x1a, 0x08, 0x0a, 0, 255, 0]));
    const page = Buffer.from(ms.subarray(4));
    page[2] |= 0x04; // D_SENSE
    page[4] |= 0x08; // SWP
    const list = Buffer.concat([Buffer.alloc(4), page]);
    const sel = await run(dev, [0x15, 0x10, 0, 0, list.length, 0], { dataOut: list });
    assert.equal(sel.status, 0);
    const w = await run(dev, cdb10(0x2a, 0, 1), { dataOut: Buffer.alloc(512) });
    assert.equal(w.status, 0x02);
    assert.equal(w.sense![0], 0x72, "descriptor sense after D_SENSE=1");
    assert.deepEqual(senseOf(w), { key: 0x7, asc: 0x27, ascq: 0 });
    const other = await run(dev, [0, 0, 0, 0, 0, 0], { nexus: nexusB });
    assert.deepEqual(senseOf(other), { key: 0x6, asc: 0x2a, ascq: 0x01 });
    const bad = Buffer.from(list);
    bad[4 + 3] ^= 0x02; // QERR is not changeable
    const sel2 = await run(dev, [0x15, 0x10, 0, 0, bad.length, 0], { dataOut: bad });
    assert.deepEqual(senseOf(sel2), { key: 0x5, asc: 0x26, ascq: 0 });
    const sp = await run(dev, [0x15, 0x11, 0, 0, list.length, 0], { dataOut: list });
    assert.deepEqual(senseOf(sp), { key: 0x5, asc: 0x24, ascq: 0 });
  });
});

describe("REPORT SUPPORTED OPERATION CODES", () => {
  it("lists every command and describes each one with a usage mask that starts with its opcode", async () => {
    const dev = makeDevice();
    await clearUa(dev);
    const all = dataIn(await run(dev, [0xa3, 0x0c, 0x00, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0]));
    const n = all.readUInt32BE(0) / 8;
    assert.ok(n > 40);
    for (let i = 0; i < n; i++) {
      const o = 4 + 8 * i;
      const op = all[o];
      const servactv = (all[o + 5] & 1) !== 0;
      const sa = all.readUInt16BE(o + 2);
      const one = await run(dev, [
        0xa3,
        0x0c,
        servactv ? 2 : 1,
        op,
        sa >> 8,
        sa & 0xff,
        0,
        0,
        0xff,
        0xff,
        0,
        0,
      ]);
      assert.equal(one.status, 0, `opcode ${op.toString(16)}/${sa}`);
      const d = dataIn(one);
      assert.equal(d[1] & 7, 3);
      assert.equal(d.readUInt16BE(2), all.readUInt16BE(o + 6));
      assert.equal(d[4], op);
      const wrong = await run(dev, [0xa3, 0x0c, servactv ? 1 : 2, op, 0, 0, 0, 0, 0xff, 0xff, 0, 0]);
      assert.deepEqual(senseOf(wrong), { key: 0x5, asc: 0x24, ascq: 0 });
    }
    const rctd = dataIn(await run(dev, [0xa3, 0x0c, 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0]));
    assert.equal(rctd.readUInt32BE(0), n * 20);
    assert.equal(rctd[4 + 5] & 2, 2);
  });
});

describe("task set and task management", () => {
  it("ABORT TASK marks a waiting task aborted; ordered tasks wait for earlier tasks", async () => {
    const dev = makeDevice(512, 64);
    await clearUa(dev);
    const lu = dev.logicalUnit(0)!;
    // Hold the range lock so a WRITE stays in the task set.
    const release = await lu.rangeLock.acquire(0, 1, true);
    const mk = (tag: number, attr: "simple" | "ordered", cdb: number[], out?: Buffer) =>
      new ScsiTask(
        Buffer.from(cdb),
        0,
        tag,
        attr,
        nexusA,
        out ? out.length : 512,
        !out,
        !!out,
        out ? [out] : [],
      );
    const w = mk(100, "simple", cdb10(0x2a, 0, 1), Buffer.alloc(512, 9));
    const ordered = mk(101, "ordered", [0, 0, 0, 0, 0, 0]);
    const pw = dev.execute(w);
    let orderedDone = false;
    const po = dev.execute(ordered).then(() => (orderedDone = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(orderedDone, false, "ORDERED waits for the earlier SIMPLE task");
    const abort = dev.taskManagement({ fn: "abort-task", nexus: nexusA, lun: 0, referencedTag: 100 });
    release();
    assert.equal(await abort, "complete");
    await pw;
    await po;
    assert.equal(w.aborted, true);
    assert.equal(ordered.status, 0);
    const r = await run(dev, cdb10(0x28, 0, 1));
    assert.ok(dataIn(r).equals(Buffer.alloc(512)), "an aborted WRITE leaves the medium alone");
    assert.equal(
      await dev.taskManagement({ fn: "abort-task", nexus: nexusA, lun: 0, referencedTag: 100 }),
      "no-such-task",
    );
  });

  it("LOGICAL UNIT RESET resets mode pages, and raises BUS DEVICE RESET for all", async () => {
    const dev = makeDevice(512, 64);
    await clearUa(dev, nexusA);
    await clearUa(dev, nexusB);
    await run(dev, [0x1e, 0, 0, 0, 1, 0]);
    assert.equal(await dev.taskManagement({ fn: "logical-unit-reset", nexus: nexusA, lun: 0 }), "complete");
    assert.deepEqual(senseOf(await run(dev, [0, 0, 0, 0, 0, 0])), { key: 0x6, asc: 0x29, ascq: 0x03 });
    assert.deepEqual(senseOf(await run(dev, [0, 0, 0, 0, 0, 0], { nexus: nexusB })), {
      key: 0x6,
      asc: 0x29,
      ascq: 0x03,
    });
    assert.equal(
      await dev.taskManagement({ fn: "logical-unit-reset", nexus: nexusA, lun: 9 }),
      "no-such-lun",
    );
  });
});

describe("commands without a logical unit and task management reporting", () => {
  it("REQUEST SENSE on a missing LUN reports LOGICAL UNIT NOT SUPPORTED; REPORT LUNS works there", async () => {
    const dev = makeDevice(512, 64);
    const rs = await run(dev, [0x03, 0, 0, 0, 18, 0], { lun: 5 });
    assert.equal(rs.status, 0);
    const d = dataIn(rs);
    assert.deepEqual([d[2] & 0x0f, d[12], d[13]], [0x5, 0x25, 0]);
    const rl = await run(dev, [0xa0, 0, 0x01, 0, 0, 0, 0, 0, 0, 64, 0, 0], { lun: 5 });
    assert.equal(dataIn(rl).readUInt32BE(0), 0, "SELECT REPORT 01h: no well-known LUNs");
    const bad = await run(dev, [0xa0, 0, 0x07, 0, 0, 0, 0, 0, 0, 64, 0, 0]);
    assert.deepEqual(senseOf(bad), { key: 0x5, asc: 0x24, ascq: 0 });
  });

  it("REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS: ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LU RESET", async () => {
    const dev = makeDevice(512, 64);
    await clearUa(dev);
    const d = dataIn(await run(dev, [0xa3, 0x0d, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0]));
    assert.equal(d.length, 4);
    assert.equal(d[0], 0xd8);
    const repd = dataIn(await run(dev, [0xa3, 0x0d, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0]));
    assert.equal(repd.length, 16);
  });
});

describe("parameter list and limit checks", () => {
  it("MODE SELECT(10) accepts a matching block descriptor and rejects another block length or a cut page", async () => {
    const dev = makeDevice(512, 64);
    await clearUa(dev);
    const page = dataIn(await run(dev, [0x1a, 0x08, 0x0a, 0, 255, 0])).subarray(4);
    const list = (blockLength: number, pageBytes: Buffer) => {
      const h = Buffer.alloc(16);
      h.writeUInt16BE(8, 6); // BLOCK DESCRIPTOR LENGTH
      h.writeUIntBE(blockLength, 8 + 5, 3);
      return Buffer.concat([h, pageBytes]);
    };
    const sel = (l: Buffer) => run(dev, [0x55, 0x10, 0, 0, 0, 0, 0, 0, l.length, 0], { dataOut: l });
    assert.equal((await sel(list(512, page))).status, 0);
    assert.deepEqual(senseOf(await sel(list(4096, page))), { key: 0x5, asc: 0x26, ascq: 0 });
    assert.deepEqual(senseOf(await sel(list(512, page.subarray(0, 6)))), { key: 0x5, asc: 0x1a, ascq: 0 });
  });

  it("UNMAP with more descriptors than advertised, or a transfer beyond MAXIMUM TRANSFER LENGTH, is refused", async () => {
    const dev = makeDevice(512, 1 << 17);
    await clearUa(dev);
    const bl = dataIn(await run(dev, [0x12, 1, 0xb0, 0, 255, 0]));
    const maxDescriptors = bl.readUInt32BE(24);
    const maxTransfer = bl.readUInt32BE(8);
    const n = maxDescriptors + 1;
    const l = Buffer.alloc(8 + 16 * n);
    l.writeUInt16BE(l.length - 2, 0);
    l.writeUInt16BE(16 * n, 2);
    for (let i = 0; i < n; i++) l.writeUInt32BE(1, 8 + 16 * i + 8);
    const u = await run(dev, [0x42, 0, 0, 0, 0, 0, 0, l.length >> 8, l.length & 0xff, 0], { dataOut: l });
    assert.deepEqual(senseOf(u), { key: 0x5, asc: 0x26, ascq: 0 });
    const big = Buffer.alloc(12);
    big[0] = 0xa8;
    big.writeUInt32BE(maxTransfer + 1, 6);
    assert.deepEqual(senseOf(await run(dev, big)), { key: 0x5, asc: 0x24, ascq: 0 });
  });
});
