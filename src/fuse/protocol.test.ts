import { test } from "node:test";
import assert from "node:assert/strict";
import {
  DT_REG,
  encodeDirents,
  encodeInitOut,
  parseInHeader,
  parseIoIn,
  writeOutHeader,
  ENTRY_OUT_SIZE,
  ATTR_OUT_SIZE,
  encodeEntryOut,
  encodeAttrOut,
} from "./protocol.js";

test("fuse_in_header: fields at their offsets", () => {
  const b = Buffer.from(
    "50000000" +
      "0f000000" +
      "2a00000000000000" +
      "0300000000000000" +
      "e8030000" +
      "e9030000" +
      "39300000" +
      "00000000",
    "hex",
  );
  assert.deepEqual(parseInHeader(b), {
    len: 80,
    opcode: 15,
    unique: 42n,
    nodeid: 3,
    uid: 1000,
    gid: 1001,
    pid: 12345,
  });
});

test("fuse_out_header: len, negative errno, unique", () => {
  const b = Buffer.alloc(16);
  writeOutHeader(b, 16, -2, 7n);
  assert.equal(b.toString("hex"), "10000000" + "feffffff" + "0700000000000000");
});

test("fuse_read_in: fh, offset, size", () => {
  const b = Buffer.from("0500000000000000" + "0000100000000000" + "00000100" + "00000000", "hex");
  assert.deepEqual(parseIoIn(b), { fh: 5, offset: 0x100000, size: 0x10000 });
});

test("fuse_dirent records: 8-byte aligned, off = next index, stop before overflowing", () => {
  const entries = [
    { ino: 1, name: ".", type: 4 },
    { ino: 3, name: "file_b", type: DT_REG },
  ];
  const all = encodeDirents(entries, 0, 4096);
  // "." takes 24+1 -> 32 bytes; "file_b" 24+6 -> 32 bytes.
  assert.equal(all.length, 64);
  assert.equal(all.readBigUInt64LE(32), 3n);
  assert.equal(all.readBigUInt64LE(40), 2n);
  assert.equal(all.readUInt32LE(48), 6);
  assert.equal(all.readUInt32LE(52), DT_REG);
  assert.equal(all.toString("utf8", 56, 62), "file_b");
  assert.equal(encodeDirents(entries, 0, 40).length, 32);
  assert.equal(encodeDirents(entries, 1, 4096).readBigUInt64LE(0), 3n);
  assert.equal(encodeDirents(entries, 2, 4096).length, 0);
});

test("fuse_init_out, entry_out and attr_out sizes and key fields", () => {
  const init = encodeInitOut({
    minor: 38,
    maxReadahead: 131072,
    flags: 0x400020,
    maxBackground: 64,
    congestionThreshold: 48,
    maxWrite: 1048576,
    maxPages: 256,
  });
  assert.equal(init.length, 64);
  assert.equal(init.readUInt32LE(0), 7);
  assert.equal(init.readUInt32LE(20), 1048576);
  assert.equal(init.readUInt16LE(28), 256);
  const attr = { ino: 9, size: 1 << 20, mode: 0o100600, nlink: 1, time: 1000, blksize: 4096 };
  const e = encodeEntryOut(attr, 1);
  assert.equal(e.length, ENTRY_OUT_SIZE);
  assert.equal(e.readBigUInt64LE(0), 9n);
  assert.equal(e.readBigUInt64LE(48), 1n << 20n); // attr.size
  assert.equal(e.readUInt32LE(40 + 60), 0o100600); // attr.mode
  const a = encodeAttrOut(attr, 1);
  assert.equal(a.length, ATTR_OUT_SIZE);
  assert.equal(a.readBigUInt64LE(16 + 16), 2048n); // attr.blocks in 512-byte units
});
