/**
 * The PDU parser from literal bytes (RFC 7143 §11): each opcode decodes into its typed message,
 * the Extended CDB AHS is joined onto the CDB, unknown opcodes stay rejectable, and a parsed
 * message serializes back to the very bytes it came from.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { EMPTY, Opcode, joinData, type ParsedPdu } from "../../src/iscsi/pdu.js";
import { PduFramingError, PduParser, decodePdu } from "../../src/iscsi/pdu_parser.js";
import { serializePduToBuffer } from "../../src/iscsi/pdu_serializer.js";
import { pduAs } from "../support/raw_initiator.js";
import { VECTORS, bytes } from "./pdu_vectors.js";

function parseOne(hex: string): ParsedPdu {
  const parser = new PduParser(65536);
  const out = parser.push(bytes(hex));
  assert.equal(out.length, 1);
  assert.equal(parser.pending, 0);
  return out[0];
}

for (const v of VECTORS) {
  test(`parse ${v.name}`, () => {
    const parsed = parseOne(v.hex);
    const got = parsed as unknown as Record<string, unknown>;
    for (const [key, want] of Object.entries(v.pdu)) {
      if (key === "data") assert.deepEqual(joinData(parsed.data), joinData(v.pdu.data), "data");
      else assert.deepEqual(got[key], want, key);
    }
    // What the vector leaves out is zero (or false) in the message.
    for (const [key, value] of Object.entries(got)) {
      if (key in v.pdu || ["header", "data", "senseData", "lun", "cdb", "isid"].includes(key)) continue;
      if (key === "ttt" || key === "referencedTaskTag") continue; // default 0xffffffff, checked by bytes
      assert.ok(value === 0 || value === false, `${key} = ${String(value)}`);
    }
    if (parsed.opcode === "unknown") throw new Error("vector parsed as an unknown opcode");
    assert.equal(serializePduToBuffer(parsed).toString("hex"), bytes(v.hex).toString("hex"));
  });
}

test("an Extended CDB AHS (§11.2.2.3) lengthens the CDB to 32 bytes", () => {
  const extension = "101112131415161718191a1b1c1d1e1f";
  const hex =
    "01 c1 0000 05 000000" + // TotalAHSLength 5 words
    "0000000000000000" +
    "00000001 00000200" +
    "00000001 00000000" +
    "7f000000000000000000000000000000" + // first 16 CDB bytes
    "0011 01 00" + // AHSLength 17 (CDB length - 15), AHSType 1, reserved
    extension;
  const cmd = pduAs(parseOne(hex), Opcode.ScsiCommand);
  assert.equal(cmd.cdb.length, 32);
  assert.equal(cmd.cdb.subarray(16).toString("hex"), extension);
  assert.equal(cmd.expectedDataTransferLength, 512);
});

test("an opcode RFC 7143 does not define parses as 'unknown', keeping its ITT and header", () => {
  const hex = "5c 80 0000 00 000000 0000000000000000 00001234" + "00".repeat(28);
  const pdu = parseOne(hex);
  assert.equal(pdu.opcode, "unknown");
  assert.equal(pdu.opcode === "unknown" && pdu.rawOpcode, 0x1c);
  assert.equal(pdu.immediate, true);
  assert.equal(pdu.itt, 0x1234);
  assert.equal(pdu.header.toString("hex"), bytes(hex).toString("hex"));
});

test("SCSI Response sense: a SenseLength longer than the segment keeps what arrived", () => {
  const hex = VECTORS.find((v) => v.pdu.opcode === Opcode.ScsiResponse)!.hex;
  const b = bytes(hex);
  b.writeUInt16BE(40, 48); // SenseLength 40, only 18 bytes follow
  const rsp = pduAs(decodePdu(b.subarray(0, 48), EMPTY, [b.subarray(48)]), Opcode.ScsiResponse);
  assert.equal(rsp.senseData.length, 18);
});

test("several PDUs in one read, split at every byte boundary, frame the same", () => {
  const all = Buffer.concat(VECTORS.map((v) => bytes(v.hex)));
  for (const cut of [1, 7, 47, 48, 49, 100, all.length - 1]) {
    const parser = new PduParser(65536);
    const out = [...parser.push(all.subarray(0, cut)), ...parser.push(all.subarray(cut))];
    assert.deepEqual(
      out.map((p) => p.opcode),
      VECTORS.map((v) => v.pdu.opcode),
      `cut at ${cut}`,
    );
  }
});

test("MaxRecvDataSegmentLength applies to every opcode before the data arrives", () => {
  const parser = new PduParser(4);
  // A Text Request declaring 15 bytes: refused from its BHS alone, before the data is read.
  const hex = VECTORS.find((v) => v.pdu.opcode === Opcode.TextRequest)!.hex;
  assert.throws(
    () => parser.push(bytes(hex).subarray(0, 48)),
    (e: PduFramingError) => e.kind === "too-long" && e.fatal,
  );
});
