/**
 * Returning a command's result (RFC 7143 §11.4, §11.7): Data-In PDUs no longer than the
 * initiator's MaxRecvDataSegmentLength, the status folded into the last Data-In (S bit) when there
 * is no sense data, else a SCSI Response; residual overflow/underflow from EDTL versus the length
 * the command wanted (§11.4.5.1). Waits for the socket to drain between PDUs.
 */
import { ScsiStatus, type ScsiTask } from "../scsi/task.js";
import { Opcode, RESERVED_TAG, type TargetPdu } from "./pdu.js";
import type { DataInHolder } from "./pdu_writer.js";

/** What sending needs from a connection. */
export interface ResultSink {
  /** The initiator's MaxRecvDataSegmentLength. */
  readonly maxSendSegment: number;
  readonly maxBurstLength: number;
  /**
   * Send a PDU that carries status: assigns StatSN (and advances it), ExpCmdSN, MaxCmdSN.
   * `holder` is told once the socket has taken the PDU (pdu_writer.ts).
   */
  sendStatus(pdu: TargetPdu, holder?: DataInHolder): boolean;
  /** Send a PDU that does not carry status (ExpCmdSN / MaxCmdSN only). */
  sendData(pdu: TargetPdu, holder?: DataInHolder): boolean;
  drained(): Promise<void>;
}

/** Gather `length` bytes starting at `offset` across buffers, as slices (`bufs` itself when that is all). */
function slice(bufs: readonly Buffer[], offset: number, length: number): readonly Buffer[] {
  if (offset === 0 && bufs.length === 1 && bufs[0]!.length === length) return bufs;
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

/** What a result's PDUs carry, fixed before the first is sent (dataIn is released as the socket takes it). */
interface ResultPlan {
  readonly r2tCount: number;
  readonly residualOverflow: boolean;
  readonly residualUnderflow: boolean;
  readonly residualCount: number;
  /** Data-In bytes to send. */
  readonly available: number;
  /** The status goes in the last Data-In (S bit) rather than a SCSI Response. */
  readonly statusInData: boolean;
}

/**
 * `r2tCount`: R2Ts sent for a write, reported as its ExpDataSN. The task's data-in buffer is
 * released (ScsiTask.releaseDataIn) once the socket has taken the last Data-In, or at once when
 * there is none; if the connection goes away first it is never released (left to the GC).
 *
 * Returns undefined when every PDU went to the socket without back-pressure (the common case: no
 * promise, no microtask turn per command), else a promise that settles once the rest is sent and
 * the socket has drained.
 */
export function sendScsiResult(sink: ResultSink, task: ScsiTask, r2tCount = 0): Promise<void> | undefined {
  const edtl = task.expectedDataLength;
  const wanted = task.transferLength > 0 ? task.transferLength : task.dataInLength;
  const residualOverflow = wanted > edtl;
  const available = task.readDirection ? Math.min(task.dataInLength, edtl) : 0;
  const plan: ResultPlan = {
    r2tCount,
    residualOverflow,
    residualUnderflow: wanted < edtl,
    residualCount: residualOverflow ? wanted - edtl : edtl - wanted,
    available,
    statusInData: available > 0 && task.status === ScsiStatus.Good && !task.sense,
  };
  if (available === 0) task.releaseDataIn();
  return sendFrom(sink, task, plan, 0, 0);
}

/** Send the result from Data-In `offset` (DataSN `dataSN`) on, until the socket pushes back. */
function sendFrom(
  sink: ResultSink,
  task: ScsiTask,
  plan: ResultPlan,
  offset: number,
  dataSN: number,
): Promise<void> | undefined {
  const { available, statusInData } = plan;
  const maxSegment = sink.maxSendSegment;
  const maxBurst = sink.maxBurstLength;
  while (offset < available) {
    const burstEnd = (Math.floor(offset / maxBurst) + 1) * maxBurst;
    const len = Math.min(maxSegment, available - offset, burstEnd - offset);
    const last = offset + len === available;
    const data = slice(task.dataIn, offset, len);
    let ok: boolean;
    if (last && statusInData) {
      ok = sink.sendStatus(
        {
          opcode: Opcode.DataIn,
          final: true,
          statusPresent: true,
          residualOverflow: plan.residualOverflow,
          residualUnderflow: plan.residualUnderflow,
          residualCount: plan.residualCount,
          status: task.status,
          itt: task.tag,
          ttt: RESERVED_TAG,
          dataSN: dataSN++,
          bufferOffset: offset,
          data,
        },
        task,
      );
    } else {
      ok = sink.sendData(
        {
          opcode: Opcode.DataIn,
          final: last || offset + len === burstEnd,
          itt: task.tag,
          ttt: RESERVED_TAG,
          dataSN: dataSN++,
          bufferOffset: offset,
          data,
        },
        last ? task : undefined,
      );
    }
    offset += len;
    if (!ok) return sendAfterDrain(sink, task, plan, offset, dataSN);
  }
  if (statusInData) return undefined;
  const ok = sink.sendStatus({
    opcode: Opcode.ScsiResponse,
    residualOverflow: plan.residualOverflow,
    residualUnderflow: plan.residualUnderflow,
    residualCount: plan.residualCount,
    response: 0, // Command Completed at Target
    status: task.status,
    itt: task.tag,
    expDataSN: dataSN + plan.r2tCount, // Data-In and R2T PDUs sent (§11.4.8)
    // Built by src/scsi/sense.ts; the serializer adds SenseLength (RFC 7143 §11.4.7.2).
    senseData: task.sense,
  });
  return ok ? undefined : sink.drained();
}

/** The socket pushed back: wait for it to drain, then go on where sending stopped. */
async function sendAfterDrain(
  sink: ResultSink,
  task: ScsiTask,
  plan: ResultPlan,
  offset: number,
  dataSN: number,
): Promise<void> {
  await sink.drained();
  await sendFrom(sink, task, plan, offset, dataSN);
}
