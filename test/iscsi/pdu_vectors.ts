/**
 * One PDU of every opcode as literal bytes beside the typed message it means, field by field in the
 * order of RFC 7143 §11. pdu_parser.test.ts parses the bytes and expects the message;
 * pdu_serializer.test.ts serializes the message and expects the bytes.
 */
import { Opcode, type AnyPdu } from "../../src/iscsi/pdu.js";

export interface PduVector {
  readonly name: string;
  /** The wire bytes as hex; spaces only for reading. */
  readonly hex: string;
  readonly pdu: AnyPdu;
}

const ISID = Buffer.from("801234560001", "hex");
const LUN1 = Buffer.from("0001000000000000", "hex");
const LUN0 = Buffer.alloc(8);

export function bytes(hex: string): Buffer {
  return Buffer.from(hex.replace(/\s+/g, ""), "hex");
}

export const VECTORS: readonly PduVector[] = [
  {
    name: "SCSI Command (§11.3): READ(10), F R, ATTR Simple, LUN 1, EDTL 4096",
    hex:
      "01 c1 0000 00 000000" + // opcode, F|R|ATTR=1, reserved, TotalAHSLength, DataSegmentLength
      "0001000000000000" + // LUN
      "0000000a 00001000" + // ITT, Expected Data Transfer Length
      "00000005 00000003" + // CmdSN, ExpStatSN
      "28000000001000000800000000000000", // CDB
    pdu: {
      opcode: Opcode.ScsiCommand,
      final: true,
      read: true,
      attribute: 1,
      lun: LUN1,
      itt: 0x0a,
      expectedDataTransferLength: 4096,
      cmdSN: 5,
      expStatSN: 3,
      cdb: bytes("28000000001000000800000000000000"),
    },
  },
  {
    name: "SCSI Command (§11.3) with immediate data: I bit, F W, 5 bytes padded to 8",
    hex:
      "41 a1 0000 00 000005" +
      "0000000000000000" +
      "0000000b 00000005" +
      "00000006 00000003" +
      "2a000000000000000100000000000000" +
      "68656c6c6f 000000",
    pdu: {
      opcode: Opcode.ScsiCommand,
      immediate: true,
      final: true,
      write: true,
      attribute: 1,
      lun: LUN0,
      itt: 0x0b,
      expectedDataTransferLength: 5,
      cmdSN: 6,
      expStatSN: 3,
      cdb: bytes("2a000000000000000100000000000000"),
      data: [Buffer.from("hello")],
    },
  },
  {
    name: "SCSI Response (§11.4): CHECK CONDITION, U bit, sense with SenseLength (§11.4.7.2)",
    hex:
      "21 82 00 02 00 000014" + // opcode, F|U, Response 0, Status 2, DataSegmentLength 20
      "0000000000000000" + // reserved
      "0000000a 00000000" + // ITT, SNACK Tag
      "00000007 00000008 00000027" + // StatSN, ExpCmdSN, MaxCmdSN
      "00000000 00000000 00000200" + // ExpDataSN, Bidi residual, Residual Count
      "0012" + // SenseLength 18
      "700005000000000a00000000240000000000", // fixed sense: ILLEGAL REQUEST, INVALID FIELD IN CDB
    pdu: {
      opcode: Opcode.ScsiResponse,
      residualUnderflow: true,
      status: 2,
      itt: 0x0a,
      statSN: 7,
      expCmdSN: 8,
      maxCmdSN: 39,
      residualCount: 512,
      senseData: bytes("700005000000000a00000000240000000000"),
    },
  },
  {
    name: "Task Management Function Request (§11.5): ABORT TASK, immediate",
    hex:
      "42 81 0000 00 000000" +
      "0001000000000000" +
      "00000020 0000000a" + // ITT, Referenced Task Tag
      "00000006 00000004" + // CmdSN, ExpStatSN
      "00000005 00000000" + // RefCmdSN, ExpDataSN
      "0000000000000000",
    pdu: {
      opcode: Opcode.TaskMgmtRequest,
      immediate: true,
      function: 1,
      lun: LUN1,
      itt: 0x20,
      referencedTaskTag: 0x0a,
      cmdSN: 6,
      expStatSN: 4,
      refCmdSN: 5,
      expDataSN: 0,
    },
  },
  {
    name: "Task Management Function Response (§11.6): function not supported",
    hex:
      "22 80 05 00 00 000000" +
      "0000000000000000" +
      "00000020 00000000" +
      "00000009 0000000a 00000029" +
      "000000000000000000000000",
    pdu: { opcode: Opcode.TaskMgmtResponse, response: 5, itt: 0x20, statSN: 9, expCmdSN: 10, maxCmdSN: 41 },
  },
  {
    name: "SCSI Data-Out (§11.7): F, TTT 0x1234, DataSN 2, Buffer Offset 8192",
    hex:
      "05 80 0000 00 000004" +
      "0001000000000000" +
      "0000000a 00001234" + // ITT, TTT
      "00000000 00000004" + // reserved, ExpStatSN
      "00000000 00000002 00002000" + // reserved, DataSN, Buffer Offset
      "00000000" +
      "61626364",
    pdu: {
      opcode: Opcode.DataOut,
      final: true,
      lun: LUN1,
      itt: 0x0a,
      ttt: 0x1234,
      expStatSN: 4,
      dataSN: 2,
      bufferOffset: 8192,
      data: [Buffer.from("abcd")],
    },
  },
  {
    name: "SCSI Data-In (§11.7): F S U, status GOOD, 3 data bytes padded to 4",
    hex:
      "25 83 00 00 00 000003" + // F|U|S, Status 0
      "0000000000000000" +
      "0000000a ffffffff" + // ITT, TTT
      "00000007 00000008 00000027" +
      "00000003 00003000 00000010" + // DataSN, Buffer Offset, Residual Count
      "78797a 00",
    pdu: {
      opcode: Opcode.DataIn,
      final: true,
      residualUnderflow: true,
      statusPresent: true,
      status: 0,
      itt: 0x0a,
      statSN: 7,
      expCmdSN: 8,
      maxCmdSN: 39,
      dataSN: 3,
      bufferOffset: 0x3000,
      residualCount: 16,
      data: [Buffer.from("xyz")],
    },
  },
  {
    name: "Ready To Transfer (§11.8): R2TSN 1, offset 64 KiB, 256 KiB desired",
    hex:
      "31 80 0000 00 000000" +
      "0001000000000000" +
      "0000000a 00000005" + // ITT, TTT
      "00000007 00000008 00000027" +
      "00000001 00010000 00040000", // R2TSN, Buffer Offset, Desired Data Transfer Length
    pdu: {
      opcode: Opcode.R2T,
      lun: LUN1,
      itt: 0x0a,
      ttt: 5,
      statSN: 7,
      expCmdSN: 8,
      maxCmdSN: 39,
      r2tSN: 1,
      bufferOffset: 65536,
      desiredDataTransferLength: 262144,
    },
  },
  {
    name: "Asynchronous Message (§11.9): AsyncEvent 3, Time2Wait 0, Time2Retain 20",
    hex:
      "32 80 0000 00 000000" +
      "0000000000000000" +
      "ffffffff 00000000" +
      "00000007 00000008 00000027" +
      "03 00 0000 0000 0014 00000000", // AsyncEvent, AsyncVCode, Parameter1..3, reserved
    pdu: {
      opcode: Opcode.AsyncMessage,
      itt: 0xffffffff,
      statSN: 7,
      expCmdSN: 8,
      maxCmdSN: 39,
      asyncEvent: 3,
      parameter1: 0,
      parameter2: 0,
      parameter3: 20,
    },
  },
  {
    name: "Text Request (§11.10): C bit, TTT reserved, 'SendTargets=All'",
    hex:
      "04 40 0000 00 00000f" +
      "0000000000000000" +
      "00000003 ffffffff" +
      "00000002 00000001" +
      "00000000000000000000000000000000" +
      "53656e6454617267657473 3d 416c6c 00", // "SendTargets=All", one byte of padding
    pdu: {
      opcode: Opcode.TextRequest,
      continue: true,
      lun: LUN0,
      itt: 3,
      ttt: 0xffffffff,
      cmdSN: 2,
      expStatSN: 1,
      data: [Buffer.from("SendTargets=All")],
    },
  },
  {
    name: "Text Response (§11.11): F, TTT reserved, 'a=b\\0'",
    hex:
      "24 80 0000 00 000004" +
      "0000000000000000" +
      "00000003 ffffffff" +
      "00000007 00000008 00000027" +
      "000000000000000000000000" +
      "613d6200",
    pdu: {
      opcode: Opcode.TextResponse,
      final: true,
      itt: 3,
      ttt: 0xffffffff,
      statSN: 7,
      expCmdSN: 8,
      maxCmdSN: 39,
      data: [Buffer.from("a=b\0")],
    },
  },
  {
    name: "Login Request (§11.12): T, CSG 1 → NSG 3, ISID, CID 2",
    hex:
      "43 87 00 00 00 000004" + // I|opcode, T|CSG=1|NSG=3, Version-max, Version-min
      "801234560001 0000" + // ISID, TSIH
      "00000001 0002 0000" + // ITT, CID, reserved
      "00000001 00000000" + // CmdSN, ExpStatSN
      "00000000000000000000000000000000" +
      "783d7900",
    pdu: {
      opcode: Opcode.LoginRequest,
      immediate: true,
      transit: true,
      currentStage: 1,
      nextStage: 3,
      isid: ISID,
      itt: 1,
      cid: 2,
      cmdSN: 1,
      expStatSN: 0,
      data: [Buffer.from("x=y\0")],
    },
  },
  {
    name: "Login Response (§11.13): T, CSG 1 → NSG 3, TSIH 1, success",
    hex:
      "23 87 00 00 00 000000" +
      "801234560001 0001" +
      "00000001 00000000" +
      "00000000 00000001 00000020" + // StatSN, ExpCmdSN, MaxCmdSN
      "00 00 0000 0000000000000000", // Status-Class, Status-Detail, reserved
    pdu: {
      opcode: Opcode.LoginResponse,
      transit: true,
      currentStage: 1,
      nextStage: 3,
      isid: ISID,
      tsih: 1,
      itt: 1,
      statSN: 0,
      expCmdSN: 1,
      maxCmdSN: 32,
    },
  },
  {
    name: "Login Response (§11.13.5): authentication failure 0x0201, no flags",
    hex:
      "23 00 00 00 00 000000" +
      "801234560001 0000" +
      "00000001 00000000" +
      "00000000 00000001 00000020" +
      "02 01 0000 0000000000000000",
    pdu: {
      opcode: Opcode.LoginResponse,
      isid: ISID,
      itt: 1,
      statSN: 0,
      expCmdSN: 1,
      maxCmdSN: 32,
      statusClass: 2,
      statusDetail: 1,
    },
  },
  {
    name: "Logout Request (§11.14): close the connection, CID 3",
    hex:
      "46 81 0000 00 000000" +
      "0000000000000000" +
      "00000007 0003 0000" + // ITT, CID, reserved
      "00000009 00000008" +
      "00000000000000000000000000000000",
    pdu: {
      opcode: Opcode.LogoutRequest,
      immediate: true,
      reasonCode: 1,
      itt: 7,
      cid: 3,
      cmdSN: 9,
      expStatSN: 8,
    },
  },
  {
    name: "Logout Response (§11.15): closed, Time2Wait 2, Time2Retain 20",
    hex:
      "26 80 00 00 00 000000" +
      "0000000000000000" +
      "00000007 00000000" +
      "00000009 0000000a 00000029" +
      "00000000 0002 0014 00000000",
    pdu: {
      opcode: Opcode.LogoutResponse,
      response: 0,
      itt: 7,
      statSN: 9,
      expCmdSN: 10,
      maxCmdSN: 41,
      time2Wait: 2,
      time2Retain: 20,
    },
  },
  {
    name: "SNACK Request (§11.16): Data/R2T SNACK, BegRun 4, RunLength 2",
    hex:
      "10 80 0000 00 000000" +
      "0000000000000000" +
      "0000000a ffffffff" +
      "00000000 00000006" +
      "00000000 00000000 00000004 00000002",
    pdu: {
      opcode: Opcode.SnackRequest,
      type: 0,
      lun: LUN0,
      itt: 0x0a,
      ttt: 0xffffffff,
      expStatSN: 6,
      begRun: 4,
      runLength: 2,
    },
  },
  {
    name: "Reject (§11.17): reason 0x05, the rejected BHS as data",
    hex:
      "3f 80 05 00 00 000030" +
      "0000000000000000" +
      "ffffffff 00000000" +
      "00000007 00000008 00000027" +
      "00000000 0000000000000000" +
      "1c" +
      "00".repeat(15) +
      "00001234" +
      "00".repeat(28), // a 48-byte BHS: opcode 0x1c, ITT 0x1234
    pdu: {
      opcode: Opcode.Reject,
      reason: 5,
      itt: 0xffffffff,
      statSN: 7,
      expCmdSN: 8,
      maxCmdSN: 39,
      data: [bytes("1c" + "00".repeat(15) + "00001234" + "00".repeat(28))],
    },
  },
  {
    name: "NOP-In (§11.19): the target's ping, ITT reserved, TTT 1",
    hex:
      "20 80 0000 00 000000" +
      "0000000000000000" +
      "ffffffff 00000001" +
      "00000007 00000008 00000027" +
      "000000000000000000000000",
    pdu: { opcode: Opcode.NopIn, lun: LUN0, itt: 0xffffffff, ttt: 1, statSN: 7, expCmdSN: 8, maxCmdSN: 39 },
  },
];
