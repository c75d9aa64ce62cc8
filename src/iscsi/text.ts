/**
 * Text Request / Response in Full Feature Phase (RFC 7143 §11.10, §11.11, §13.3): SendTargets
 * discovery (All, a target name, or empty for the session's own target), with responses longer
 * than the initiator's MaxRecvDataSegmentLength continued over several PDUs (C bit, TTT).
 * Other keys get NotUnderstood (unknown) or Irrelevant (login-only keys).
 */
import type { Connection } from "./conn.js";
import { FLAG_CONTINUE, FLAG_FINAL, Opcode, Pdu, RESERVED_TAG, RejectReason } from "./pdu.js";
import { LoginFailure, parseTextKeys } from "./param.js";

/** Limit on a Text Request assembled from several PDUs. */
const MAX_TEXT_REQUEST = 64 * 1024;

/** One connection's Text exchanges: a request split over PDUs, a response continued over PDUs. */
export class TextExchange {
  private continuation: { ttt: number; rest: Buffer } | undefined;
  private requestParts: Buffer[] | undefined;

  constructor(private readonly conn: Connection) {}

  handle(pdu: Pdu): void {
    const conn = this.conn;
    const pending = this.continuation;
    if (pdu.ttt !== RESERVED_TAG) {
      // The initiator asks for the next part of a long response.
      if (!pending || pending.ttt !== pdu.ttt) {
        conn.reject(pdu, RejectReason.InvalidPduField);
        return;
      }
      this.continuation = undefined;
      this.sendPart(pdu.itt, pending.rest);
      return;
    }
    this.continuation = undefined; // a new request resets any unfinished exchange (RFC 7143 §11.10.4)
    if (pdu.flags & FLAG_CONTINUE) {
      const parts = this.requestParts ?? [];
      parts.push(pdu.data);
      if (parts.reduce((n, b) => n + b.length, 0) > MAX_TEXT_REQUEST) {
        this.requestParts = undefined;
        conn.reject(pdu, RejectReason.ProtocolError);
        return;
      }
      this.requestParts = parts;
      const rsp = Pdu.create(Opcode.TextResponse);
      rsp.itt = pdu.itt;
      rsp.ttt = conn.allocateTtt();
      conn.sendStatus(rsp);
      return;
    }
    const parts = this.requestParts;
    this.requestParts = undefined;
    const text = parts ? Buffer.concat([...parts, pdu.data]) : pdu.data;
    let pairs;
    try {
      pairs = parseTextKeys(text);
    } catch (err) {
      if (!(err instanceof LoginFailure)) throw err;
      conn.log.warn(`text request: ${err.message}`);
      conn.reject(pdu, RejectReason.ProtocolError);
      return;
    }
    const lines: string[] = [];
    for (const [key, value] of pairs) {
      if (key === "SendTargets") lines.push(...conn.sendTargets(value));
      else if (/^X[-#]/.test(key) || !KNOWN_KEYS.has(key)) lines.push(`${key}=NotUnderstood`);
      else lines.push(`${key}=Irrelevant`);
    }
    this.sendPart(pdu.itt, Buffer.from(lines.map((l) => l + "\0").join(""), "utf8"));
  }

  private sendPart(itt: number, data: Buffer): void {
    const conn = this.conn;
    const max = conn.maxSendSegment;
    const rsp = Pdu.create(Opcode.TextResponse);
    rsp.itt = itt;
    if (data.length > max) {
      // Cut on a key boundary when one exists in the first `max` bytes, so each part stays readable.
      const cut = data.lastIndexOf(0, max - 1);
      const end = cut > 0 ? cut + 1 : max;
      rsp.flags = FLAG_CONTINUE;
      rsp.ttt = conn.allocateTtt();
      rsp.data = data.subarray(0, end);
      this.continuation = { ttt: rsp.ttt, rest: data.subarray(end) };
    } else {
      rsp.flags = FLAG_FINAL;
      rsp.ttt = RESERVED_TAG;
      rsp.data = data;
    }
    conn.sendStatus(rsp);
  }
}

const KNOWN_KEYS = new Set([
  "HeaderDigest",
  "DataDigest",
  "MaxConnections",
  "TargetName",
  "InitiatorName",
  "TargetAlias",
  "InitiatorAlias",
  "TargetAddress",
  "TargetPortalGroupTag",
  "InitialR2T",
  "ImmediateData",
  "MaxRecvDataSegmentLength",
  "MaxBurstLength",
  "FirstBurstLength",
  "DefaultTime2Wait",
  "DefaultTime2Retain",
  "MaxOutstandingR2T",
  "DataPDUInOrder",
  "DataSequenceInOrder",
  "ErrorRecoveryLevel",
  "SessionType",
  "AuthMethod",
  "TaskReporting",
  "iSCSIProtocolLevel",
]);
