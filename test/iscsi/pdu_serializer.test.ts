/**
 * The PDU serializer to literal bytes (RFC 7143 §11): each typed message becomes exactly the bytes
 * of its vector; data buffers are passed through, not copied; digests and padding follow §11.2.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { crc32c } from "@node-rs/crc32";
import { Opcode } from "../../src/iscsi/pdu.js";
import { serializePdu, serializePduToBuffer } from "../../src/iscsi/pdu_serializer.js";
import { VECTORS, bytes } from "./pdu_vectors.js";

for (const v of VECTORS) {
  test(`serialize ${v.name}`, () => {
    assert.equal(serializePduToBuffer(v.pdu).toString("hex"), bytes(v.hex).toString("hex"));
  });
}

test("Data-In from a read buffer: header, the buffer's own slices, padding — no copy", () => {
  const readBuffer = Buffer.alloc(8192, 0x5a);
  const a = readBuffer.subarray(0, 4096);
  const b = readBuffer.subarray(4096, 6143); // 2047 bytes: one byte of padding
  const out = serializePdu({ opcode: Opcode.DataIn, final: true, itt: 1, data: [a, b] }, false, false);
  assert.equal(out.length, 4);
  assert.equal(out[0].length, 48);
  assert.equal(out[1], a);
  assert.equal(out[2], b);
  assert.equal(out[3].length, 1);
  assert.equal(out[0].readUIntBE(5, 3), 4096 + 2047, "DataSegmentLength");
});

test("header and data digests: CRC32C of the BHS, then of data plus padding, little-endian", () => {
  const data = Buffer.from("abcdef");
  const out = serializePdu({ opcode: Opcode.NopIn, itt: 5, data: [data] }, true, true);
  const [bhs, hd, seg, pad, dd] = out;
  assert.equal(hd.readUInt32LE(0), crc32c(bhs));
  assert.equal(seg, data);
  assert.equal(pad.toString("hex"), "0000");
  assert.equal(dd.readUInt32LE(0), crc32c(Buffer.concat([data, pad])));
});

test("sense data goes out as SenseLength + the buffer from src/scsi/sense.ts, uncopied", () => {
  const sense = bytes("700006000000000a00000000290000000000");
  const out = serializePdu(
    { opcode: Opcode.ScsiResponse, itt: 1, status: 2, senseData: sense },
    false,
    false,
  );
  assert.equal(out[1].toString("hex"), "0012");
  assert.equal(out[2], sense);
});

test("an empty data segment adds no buffers and DataSegmentLength 0", () => {
  const out = serializePdu({ opcode: Opcode.NopIn, itt: 1, data: [Buffer.alloc(0)] }, false, true);
  assert.equal(out.length, 1);
  assert.equal(out[0].readUIntBE(5, 3), 0);
});
