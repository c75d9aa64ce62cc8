/**
 * Text Request / Response in Full Feature Phase (RFC 7143 §11.10, §11.11, §13.3): SendTargets
 * discovery (All, a target name, or empty for the session's own target), with responses longer
 * than the initiator's MaxRecvDataSegmentLength continued over several PDUs (C bit, TTT).
 * Other keys get NotUnderstood (unknown) or Irrelevant (login-only keys).
 */
import type { Logger } from "../util/log.js";
import { LoginFailure, parseTextKeys } from "./param.js";
import {
  Opcode,
  RESERVED_TAG,
  RejectReason,
  joinData,
  type Parsed,
  type ParsedPdu,
  type TextRequestPdu,
  type TextResponsePdu,
} from "./pdu.js";

/** What a Text exchange needs from its connection. */
export interface TextConnection {
  readonly log: Logger;
  /** The initiator's MaxRecvDataSegmentLength. */
  readonly maxSendSegment: number;
  allocateTtt(): number;
  /** Send a status-carrying PDU (StatSN assigned by the connection). */
  sendStatus(pdu: TextResponsePdu): boolean;
  reject(pdu: ParsedPdu, reason: RejectReason): void;
  /** SendTargets answer lines for this connection's initiator (RFC 7143 Appendix C). */
  sendTargets(value: string): string[];
}

/** Limit on a Text Request assembled from several PDUs. */
const MAX_TEXT_REQUEST = 64 * 1024;

/** One connection's Text exchanges: a request split over PDUs, a response continued over PDUs. */
export class TextExchange {
  private continuation: { ttt: number; rest: Buffer } | undefined;
  private requestParts: Buffer[] | undefined;

  constructor(private readonly conn: TextConnection) {}

  handle(pdu: Parsed<TextRequestPdu>): void {
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
    if (pdu.continue) {
      const parts = this.requestParts ?? [];
      parts.push(joinData(pdu.data));
      if (parts.reduce((n, b) => n + b.length, 0) > MAX_TEXT_REQUEST) {
        this.requestParts = undefined;
        conn.reject(pdu, RejectReason.ProtocolError);
        return;
      }
      this.requestParts = parts;
      conn.sendStatus({ opcode: Opcode.TextResponse, itt: pdu.itt, ttt: conn.allocateTtt() });
      return;
    }
    const parts = this.requestParts;
    this.requestParts = undefined;
    const text = parts ? Buffer.concat([...parts, ...pdu.data]) : joinData(pdu.data);
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
    if (data.length > max) {
      // Cut on a key boundary when one exists in the first `max` bytes, so each part stays readable.
      const cut = data.lastIndexOf(0, max - 1);
      const end = cut > 0 ? cut + 1 : max;
      const ttt = conn.allocateTtt();
      this.continuation = { ttt, rest: data.subarray(end) };
      conn.sendStatus({
        opcode: Opcode.TextResponse,
        continue: true,
        itt,
        ttt,
        data: [data.subarray(0, end)],
      });
    } else {
      conn.sendStatus({ opcode: Opcode.TextResponse, final: true, itt, ttt: RESERVED_TAG, data: [data] });
    }
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
