import { test } from "node:test";
import { crc32c } from "@node-rs/crc32";
import assert from "node:assert/strict";
import { PduFramingError, PduParser } from "../../src/iscsi/pdu_parser.js";
import { serializePdu, serializePduToBuffer } from "../../src/iscsi/pdu_serializer.js";
import { Opcode, dataLength, joinData, snLess, type ParsedPdu } from "../../src/iscsi/pdu.js";
import { pduAs } from "../support/raw_initiator.js";

/** A NOP-Out: immediate, F, ITT 0x11223344, TTT all ones, CmdSN 7, ExpStatSN 9, 5 data bytes "hello". */
const NOP_OUT_HEX =
  "40800000" +
  "00000005" +
  "0000000000000000" +
  "11223344" +
  "ffffffff" +
  "00000007" +
  "00000009" +
  "00000000000000000000000000000000" +
  "68656c6c6f000000";

test("parser frames a PDU from literal bytes: fields, data without padding", () => {
  const p = new PduParser(8192);
  const [parsed] = p.push(Buffer.from(NOP_OUT_HEX, "hex"));
  assert.equal(parsed.opcode, Opcode.NopOut);
  const pdu = pduAs(parsed, Opcode.NopOut);
  assert.equal(pdu.immediate, true);
  assert.equal(pdu.itt, 0x11223344);
  assert.equal(pdu.ttt, 0xffffffff);
  assert.equal(pdu.cmdSN, 7);
  assert.equal(pdu.expStatSN, 9);
  assert.equal(joinData(pdu.data).toString(), "hello");
  assert.equal(p.pending, 0);
  // Serialized again, the message gives back the same bytes (F bit, padding and all).
  assert.equal(serializePduToBuffer(pdu).toString("hex"), NOP_OUT_HEX);
});

test("parser keeps a tail across reads and frames several PDUs from one read", () => {
  const one = Buffer.from(NOP_OUT_HEX, "hex");
  const two = Buffer.concat([one, one, one]);
  const p = new PduParser(8192);
  assert.equal(p.push(two.subarray(0, 30)).length, 0);
  assert.equal(p.push(two.subarray(30, 70)).length, 1);
  assert.equal(p.pending, 70 - 56);
  const rest = p.push(two.subarray(70));
  assert.equal(rest.length, 2);
  assert.equal(joinData(rest[1].data).toString(), "hello");
});

test("parser refuses a data segment longer than MaxRecvDataSegmentLength", () => {
  const b = Buffer.from(NOP_OUT_HEX, "hex");
  b.writeUIntBE(9000, 5, 3);
  assert.throws(
    () => new PduParser(8192).push(b),
    (e: PduFramingError) => e.kind === "too-long" && e.fatal,
  );
});

test("writer + parser round trip with CRC32C digests; RFC 7143 digest of 32 zero bytes is 0x8a9136aa", () => {
  const bytes = Buffer.concat(
    serializePdu({ opcode: Opcode.NopIn, itt: 5, data: [Buffer.from("abcdef")] }, true, true),
  );
  assert.equal(bytes.length, 48 + 4 + 8 + 4);
  const p = new PduParser(8192);
  p.headerDigest = p.dataDigest = true;
  const [back] = p.push(bytes);
  assert.equal(joinData(back.data).toString(), "abcdef");
  assert.equal(back.itt, 5);
  // RFC 7143 Appendix B.4: CRC32C of 32 zero bytes is 0x8a9136aa, sent as bytes aa 36 91 8a.
  assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
  const enc = serializePdu({ opcode: Opcode.NopOut, itt: 0, cmdSN: 0 }, true, false);
  assert.equal(enc[1].readUInt32LE(0), crc32c(enc[0]));
});

test("a corrupted header digest is fatal; a corrupted data digest is reported with the PDU", () => {
  const bytes = Buffer.concat(
    serializePdu({ opcode: Opcode.NopIn, itt: 0, data: [Buffer.from("abcdef")] }, true, true),
  );
  const badHeader = Buffer.from(bytes);
  badHeader[48] ^= 1;
  const p1 = new PduParser(8192);
  p1.headerDigest = p1.dataDigest = true;
  assert.throws(
    () => p1.push(badHeader),
    (e: PduFramingError) => e.kind === "header-digest" && e.fatal,
  );
  const badData = Buffer.from(bytes);
  badData[bytes.length - 1] ^= 1;
  const p2 = new PduParser(8192);
  p2.headerDigest = p2.dataDigest = true;
  assert.throws(
    () => p2.push(Buffer.concat([badData, bytes])),
    (e: PduFramingError) => e.kind === "data-digest" && !e.fatal && e.pdu?.opcode === Opcode.NopIn,
  );
  // Framing stays intact: the following PDU is still delivered.
  assert.equal(p2.push(Buffer.alloc(0)).length, 1);
});

test("serial number arithmetic wraps", () => {
  assert.ok(snLess(0xfffffff0, 5));
  assert.ok(!snLess(5, 0xfffffff0));
});

test("a PDU fed one byte at a time keeps its data as slices of the reads (no copy), digests checked", () => {
  const bytes = Buffer.concat(
    serializePdu(
      { opcode: Opcode.DataOut, final: true, itt: 0, ttt: 0, data: [Buffer.from("0123456789abcdefXYZ")] },
      true,
      true,
    ),
  );
  const p = new PduParser(8192);
  p.headerDigest = p.dataDigest = true;
  const got: ParsedPdu[] = [];
  const reads: Buffer[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const one = Buffer.alloc(1, bytes[i]); // own ArrayBuffer (not the shared pool)
    reads.push(one);
    got.push(...p.push(one));
  }
  assert.equal(got.length, 1);
  const parts = got[0].data;
  assert.equal(parts.length, 19);
  // Each part is a view of one received read buffer, not a copy.
  assert.equal(parts[0].buffer, reads[52].buffer);
  assert.equal(dataLength(got[0].data), 19);
  assert.equal(joinData(got[0].data).toString(), "0123456789abcdefXYZ");
});
