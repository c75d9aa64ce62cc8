/**
 * Returning a command's result (RFC 7143 §11.4, §11.7): Data-In PDUs no longer than the
 * initiator's MaxRecvDataSegmentLength, the status folded into the last Data-In (S bit) when there
 * is no sense data, else a SCSI Response; residual overflow/underflow from EDTL versus the length
 * the command wanted (§11.4.5). Waits for the socket to drain between PDUs.
 */
import { ScsiStatus, type ScsiTask } from "../scsi/task.js";
import {
  DATAIN_STATUS,
  FLAG_FINAL,
  Opcode,
  Pdu,
  RESERVED_TAG,
  RSP_OVERFLOW,
  RSP_UNDERFLOW,
  EMPTY,
} from "./pdu.js";

/** What sending needs from a connection. */
export interface ResultSink {
  /** The initiator's MaxRecvDataSegmentLength. */
  readonly maxSendSegment: number;
  readonly maxBurstLength: number;
  /** Send a PDU that carries status: assigns StatSN (and advances it), ExpCmdSN, MaxCmdSN. */
  sendStatus(pdu: Pdu, parts?: readonly Buffer[]): boolean;
  /** Send a PDU that does not carry status (ExpCmdSN / MaxCmdSN only). */
  sendData(pdu: Pdu, parts?: readonly Buffer[]): boolean;
  drained(): Promise<void>;
}

/** Residual flags and count for one direction (RFC 7143 §11.4.5.1). */
export function residual(edtl: number, wanted: number): { flags: number; count: number } {
  if (wanted > edtl) return { flags: RSP_OVERFLOW, count: wanted - edtl };
  if (wanted < edtl) return { flags: RSP_UNDERFLOW, count: edtl - wanted };
  return { flags: 0, count: 0 };
}

/** Gather `length` bytes starting at `offset` across buffers, as slices. */
function slice(bufs: readonly Buffer[], offset: number, length: number): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  for (const b of bufs) {
    if (length === 0) break;
    const end = pos + b.length;
    if (end > offset) {
      const from = Math.max(offset - pos, 0);
      const take = Math.min(b.length - from, length);
      out.push(b.subarray(from, from + take));
      length -= take;
      offset += take;
    }
    pos = end;
  }
  return out;
}

/** `r2tCount`: R2Ts sent for a write, reported as its ExpDataSN. */
export async function sendScsiResult(sink: ResultSink, task: ScsiTask, r2tCount = 0): Promise<void> {
  const edtl = task.expectedDataLength;
  const wanted = task.transferLength > 0 ? task.transferLength : task.dataInLength;
  const res = residual(edtl, wanted);
  const available = task.readDirection ? Math.min(task.dataInLength, edtl) : 0;
  const statusInData = available > 0 && task.status === ScsiStatus.Good && !task.sense;
  let dataSN = 0;
  for (let offset = 0; offset < available;) {
    const burstEnd = (Math.floor(offset / sink.maxBurstLength) + 1) * sink.maxBurstLength;
    const len = Math.min(sink.maxSendSegment, available - offset, burstEnd - offset);
    const last = offset + len === available;
    const pdu = Pdu.create(Opcode.DataIn);
    pdu.itt = task.tag;
    pdu.ttt = RESERVED_TAG;
    pdu.setU32(36, dataSN++);
    pdu.setU32(40, offset);
    const parts = slice(task.dataIn, offset, len);
    let ok: boolean;
    if (last && statusInData) {
      pdu.flags = FLAG_FINAL | DATAIN_STATUS | res.flags;
      pdu.bhs[3] = task.status;
      pdu.setU32(44, res.count);
      ok = sink.sendStatus(pdu, parts);
    } else {
      pdu.flags = last || offset + len === burstEnd ? FLAG_FINAL : 0;
      ok = sink.sendData(pdu, parts);
    }
    offset += len;
    if (!ok) await sink.drained();
  }
  if (statusInData) return;
  const rsp = Pdu.create(Opcode.ScsiResponse);
  rsp.flags = FLAG_FINAL | res.flags;
  rsp.bhs[2] = 0; // Command Completed at Target
  rsp.bhs[3] = task.status;
  rsp.itt = task.tag;
  rsp.setU32(36, dataSN + r2tCount); // ExpDataSN: Data-In and R2T PDUs sent (§11.4.8)
  rsp.setU32(44, res.count);
  let data = EMPTY;
  if (task.sense && task.sense.length > 0) {
    data = Buffer.allocUnsafe(2 + task.sense.length);
    data.writeUInt16BE(task.sense.length, 0);
    task.sense.copy(data, 2);
  }
  rsp.data = data;
  if (!sink.sendStatus(rsp)) await sink.drained();
}
