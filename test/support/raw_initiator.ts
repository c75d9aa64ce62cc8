/**
 * A small raw-PDU iSCSI initiator for tests: it frames PDUs with the project's parser and serializer,
 * logs in with chosen keys (optionally CHAP), runs SCSI commands with Data-Out / R2T handling,
 * and lets a test send arbitrary bytes to check how the target copes with bad input.
 */
import { connect, type Socket } from "node:net";
import { createHash } from "node:crypto";
import { PduParser } from "../../src/iscsi/pdu_parser.js";
import { serializePdu } from "../../src/iscsi/pdu_serializer.js";
import {
  Opcode,
  RESERVED_TAG,
  TaskAttributeCode,
  joinData,
  opcodeOf,
  type AnyPdu,
  type DataOutPdu,
  type LoginRequestPdu,
  type Parsed,
  type ParsedPdu,
  type LoginResponsePdu,
  type LogoutResponsePdu,
  type NopInPdu,
  type UnknownPdu,
} from "../../src/iscsi/pdu.js";
import { encodeTextKeys, parseTextKeys, type KeyValue } from "../../src/iscsi/param.js";

export interface LoginOptions {
  initiatorName?: string;
  targetName?: string;
  discovery?: boolean;
  isid?: Buffer;
  tsih?: number;
  cid?: number;
  /** Operational keys offered in one request (defaults offer digests None and sane sizes). */
  keys?: KeyValue[];
  chap?: { user: string; secret: string; mutual?: { challenge?: Buffer; expectSecret: string } };
  /** AuthMethod offer when not using chap (default "None"). */
  authMethod?: string;
}

export interface LoginResult {
  statusClass: number;
  statusDetail: number;
  tsih: number;
  keys: Map<string, string>;
}

/** The received PDU with opcode `op`; throws when it is another one. */
export function pduAs<O extends Opcode>(p: ParsedPdu, op: O): Extract<ParsedPdu, { opcode: O }> {
  if (p.opcode !== op) {
    throw new Error(`expected opcode 0x${op.toString(16)}, got 0x${opcodeOf(p).toString(16)}`);
  }
  return p as Extract<ParsedPdu, { opcode: O }>;
}

/** An 8-byte LUN field for a single-level LUN below 256 (SAM-5 peripheral device addressing). */
export function lunField(lun: number): Buffer {
  const b = Buffer.alloc(8);
  b[1] = lun;
  return b;
}

/** The numbering fields of a request: ITT, CmdSN, ExpStatSN (and the I bit). */
export interface RequestNumbers {
  immediate: boolean;
  itt: number;
  cmdSN: number;
  expStatSN: number;
}

export interface ScsiResult {
  status: number;
  data: Buffer;
  sense: Buffer;
  residual: number;
  residualOverflow: boolean;
  residualUnderflow: boolean;
  dataInPdus: number;
  /** ExpDataSN from the SCSI Response (Data-In + R2T PDUs the target sent); undefined when status came in Data-In. */
  expDataSN?: number;
  r2ts: number;
}

export class RawInitiator {
  readonly socket: Socket;
  private readonly parser = new PduParser(0xffffff);
  private queue: ParsedPdu[] = [];
  private waiters: ((p: ParsedPdu | Error) => void)[] = [];
  private closedFlag = false;
  private closeWaiters: (() => void)[] = [];
  headerDigest = false;
  dataDigest = false;
  cmdSN = 1;
  expStatSN = 0;
  itt = 1;
  isid: Buffer = Buffer.from([0x80, 0x12, 0x34, 0x56, 0x00, 0x01]);
  tsih = 0;
  maxRecvDataSegmentLength = 262144;
  targetMrdsl = 8192;
  firstBurstLength = 65536;
  immediateData = true;
  initialR2T = true;
  /** Every Reject and Async Message received, for inspection. */
  readonly events: ParsedPdu[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      let pdus: ParsedPdu[];
      try {
        pdus = this.parser.push(chunk);
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      for (const p of pdus) {
        if (p.opcode === Opcode.Reject || p.opcode === Opcode.AsyncMessage) this.events.push(p);
        const w = this.waiters.shift();
        if (w) w(p);
        else this.queue.push(p);
      }
    });
    socket.on("close", () => {
      this.closedFlag = true;
      this.fail(new Error("connection closed"));
      for (const w of this.closeWaiters) w();
    });
    socket.on("error", () => undefined);
  }

  static connect(port: number, host = "127.0.0.1", localAddress?: string): Promise<RawInitiator> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host, localAddress }, () => resolve(new RawInitiator(s)));
      s.once("error", reject);
    });
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  private fail(err: Error): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f(err);
  }

  /** Resolves when the target closes the connection; rejects after `ms`. */
  waitClosed(ms = 5000): Promise<void> {
    if (this.closedFlag) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`connection still open after ${ms}ms`)), ms);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  send(pdu: AnyPdu | UnknownPdu): void {
    for (const b of serializePdu(pdu, this.headerDigest, this.dataDigest)) this.socket.write(b);
  }

  /** The bytes `pdu` would be sent as (to corrupt them on purpose). */
  wire(pdu: AnyPdu | UnknownPdu): Buffer {
    return Buffer.concat(serializePdu(pdu, this.headerDigest, this.dataDigest));
  }

  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  recv(ms = 5000): Promise<ParsedPdu> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    if (this.closedFlag) return Promise.reject(new Error("connection closed"));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no PDU within ${ms}ms`));
      }, ms);
      const waiter = (p: ParsedPdu | Error) => {
        clearTimeout(t);
        if (p instanceof Error) reject(p);
        else resolve(p);
      };
      this.waiters.push(waiter);
    });
  }

  /** Receive, skipping NOP-In pings and async messages (answering pings). */
  async recvResponse(ms = 5000): Promise<ParsedPdu> {
    for (;;) {
      const p = await this.recv(ms);
      if (p.opcode === Opcode.NopIn && p.itt === RESERVED_TAG) {
        this.send({
          opcode: Opcode.NopOut,
          immediate: true,
          itt: RESERVED_TAG,
          ttt: p.ttt,
          cmdSN: this.cmdSN,
          expStatSN: this.expStatSN,
        });
        continue;
      }
      if (p.opcode === Opcode.AsyncMessage) continue;
      return p;
    }
  }

  private loginPdu(
    csg: number,
    nsg: number,
    transit: boolean,
    pairs: KeyValue[],
    opts: LoginOptions,
  ): LoginRequestPdu {
    return {
      opcode: Opcode.LoginRequest,
      immediate: true,
      transit,
      currentStage: csg,
      nextStage: transit ? nsg : 0,
      isid: opts.isid ?? this.isid,
      tsih: opts.tsih ?? this.tsih,
      itt: this.itt,
      cid: opts.cid ?? 0,
      cmdSN: this.cmdSN,
      expStatSN: this.expStatSN,
      data: [encodeTextKeys(pairs)],
    };
  }

  private async loginExchange(
    p: LoginRequestPdu,
  ): Promise<{ rsp: Parsed<LoginResponsePdu>; keys: Map<string, string> }> {
    this.send(p);
    const rsp = pduAs(await this.recv(), Opcode.LoginResponse);
    this.expStatSN = (rsp.statSN + 1) >>> 0;
    return { rsp, keys: new Map(parseTextKeys(joinData(rsp.data))) };
  }

  /** Full login; returns the final (or failing) response's status and all keys the target sent. */
  async login(opts: LoginOptions = {}): Promise<LoginResult> {
    if (opts.isid) this.isid = opts.isid;
    const ident: KeyValue[] = [["InitiatorName", opts.initiatorName ?? "iqn.2024-01.test:raw"]];
    if (opts.discovery) ident.push(["SessionType", "Discovery"]);
    else if (opts.targetName !== undefined) ident.push(["TargetName", opts.targetName]);
    const all = new Map<string, string>();
    const result = (rsp: Parsed<LoginResponsePdu>): LoginResult => ({
      statusClass: rsp.statusClass,
      statusDetail: rsp.statusDetail,
      tsih: rsp.tsih,
      keys: all,
    });
    const merge = (m: Map<string, string>) => m.forEach((v, k) => all.set(k, v));
    let r;
    if (opts.chap) {
      r = await this.loginExchange(this.loginPdu(0, 1, false, [...ident, ["AuthMethod", "CHAP,None"]], opts));
      merge(r.keys);
      if (r.rsp.statusClass !== 0) return result(r.rsp);
      r = await this.loginExchange(this.loginPdu(0, 1, false, [["CHAP_A", "5"]], opts));
      merge(r.keys);
      if (r.rsp.statusClass !== 0) return result(r.rsp);
      const id = Number(r.keys.get("CHAP_I"));
      const challenge = Buffer.from(r.keys.get("CHAP_C")!.slice(2), "hex");
      const resp = createHash("md5")
        .update(Buffer.from([id]))
        .update(opts.chap.secret)
        .update(challenge)
        .digest();
      const pairs: KeyValue[] = [
        ["CHAP_N", opts.chap.user],
        ["CHAP_R", "0x" + resp.toString("hex")],
      ];
      const myChallenge = opts.chap.mutual
        ? (opts.chap.mutual.challenge ?? Buffer.from("0123456789abcdef"))
        : undefined;
      if (myChallenge) pairs.push(["CHAP_I", "7"], ["CHAP_C", "0x" + myChallenge.toString("hex")]);
      r = await this.loginExchange(this.loginPdu(0, 1, true, pairs, opts));
      merge(r.keys);
      if (r.rsp.statusClass !== 0) return result(r.rsp);
      if (myChallenge && opts.chap.mutual) {
        const want = createHash("md5")
          .update(Buffer.from([7]))
          .update(opts.chap.mutual.expectSecret)
          .update(myChallenge)
          .digest();
        if (r.keys.get("CHAP_R") !== "0x" + want.toString("hex"))
          throw new Error("target's mutual CHAP response is wrong");
      }
    } else {
      r = await this.loginExchange(
        this.loginPdu(0, 1, true, [...ident, ["AuthMethod", opts.authMethod ?? "None"]], opts),
      );
      merge(r.keys);
      if (r.rsp.statusClass !== 0) return result(r.rsp);
    }
    const keys: KeyValue[] = opts.keys ?? [
      ["HeaderDigest", "None"],
      ["DataDigest", "None"],
      ["MaxRecvDataSegmentLength", String(this.maxRecvDataSegmentLength)],
      ["InitialR2T", this.initialR2T ? "Yes" : "No"],
      ["ImmediateData", this.immediateData ? "Yes" : "No"],
      ["FirstBurstLength", String(this.firstBurstLength)],
      ["MaxBurstLength", "262144"],
      ["MaxOutstandingR2T", "1"],
      ["ErrorRecoveryLevel", "0"],
    ];
    r = await this.loginExchange(this.loginPdu(1, 3, true, keys, opts));
    merge(r.keys);
    const res = result(r.rsp);
    if (res.statusClass === 0) {
      this.tsih = res.tsih;
      this.headerDigest = all.get("HeaderDigest") === "CRC32C";
      this.dataDigest = all.get("DataDigest") === "CRC32C";
      this.parser.headerDigest = this.headerDigest;
      this.parser.dataDigest = this.dataDigest;
      this.targetMrdsl = Number(all.get("MaxRecvDataSegmentLength") ?? 8192);
      this.immediateData = all.get("ImmediateData") !== "No";
      this.initialR2T = all.get("InitialR2T") !== "No";
      if (all.has("FirstBurstLength")) this.firstBurstLength = Number(all.get("FirstBurstLength"));
      this.cmdSN = r.rsp.expCmdSN;
    }
    return res;
  }

  /** A SCSI command; `write` is sent as immediate data / unsolicited / R2T-solicited Data-Out. */
  async scsi(
    cdb: Buffer,
    opts: { read?: number; write?: Buffer; lun?: number; edtl?: number; timeoutMs?: number } = {},
  ): Promise<ScsiResult> {
    const itt = this.itt++;
    const write = opts.write;
    const edtl = opts.edtl ?? (write ? write.length : (opts.read ?? 0));
    const cmdSN = this.cmdSN;
    this.cmdSN = (this.cmdSN + 1) >>> 0;
    let sent = 0;
    let immediate: Buffer | undefined;
    if (write && this.immediateData) {
      immediate = write.subarray(0, Math.min(write.length, this.firstBurstLength, this.targetMrdsl));
      sent = immediate.length;
    }
    const unsolicited = write && !this.initialR2T ? Math.min(write.length, this.firstBurstLength) : sent;
    this.send({
      opcode: Opcode.ScsiCommand,
      final: sent >= unsolicited,
      read: !!opts.read,
      write: !!write,
      attribute: TaskAttributeCode.Simple,
      lun: lunField(opts.lun ?? 0),
      itt,
      expectedDataTransferLength: edtl,
      cmdSN,
      expStatSN: this.expStatSN,
      cdb,
      data: immediate ? [immediate] : [],
    });
    let dataSN = 0;
    while (write && sent < unsolicited) {
      const len = Math.min(this.targetMrdsl, unsolicited - sent);
      this.send(
        this.dataOut(
          itt,
          RESERVED_TAG,
          dataSN++,
          sent,
          write.subarray(sent, sent + len),
          sent + len === unsolicited,
        ),
      );
      sent += len;
    }
    const chunks: Buffer[] = [];
    let dataInPdus = 0;
    let r2ts = 0;
    for (;;) {
      const r = await this.recvResponse(opts.timeoutMs);
      if (r.opcode === Opcode.R2T && write) {
        r2ts++;
        const offset = r.bufferOffset;
        const want = r.desiredDataTransferLength;
        let sn = 0;
        for (let o = 0; o < want;) {
          const len = Math.min(this.targetMrdsl, want - o);
          const piece = write.subarray(offset + o, offset + o + len);
          this.send(this.dataOut(itt, r.ttt, sn++, offset + o, piece, o + len === want));
          o += len;
        }
        continue;
      }
      if (r.opcode === Opcode.DataIn) {
        dataInPdus++;
        chunks.push(Buffer.from(joinData(r.data)));
        if (r.statusPresent) {
          this.expStatSN = (r.statSN + 1) >>> 0;
          return {
            status: r.status,
            data: Buffer.concat(chunks),
            sense: Buffer.alloc(0),
            residual: r.residualCount,
            residualOverflow: r.residualOverflow,
            residualUnderflow: r.residualUnderflow,
            dataInPdus,
            r2ts,
          };
        }
        continue;
      }
      if (r.opcode === Opcode.ScsiResponse) {
        this.expStatSN = (r.statSN + 1) >>> 0;
        const sense = Buffer.from(r.senseData);
        return {
          status: r.status,
          data: Buffer.concat(chunks),
          sense,
          residual: r.residualCount,
          residualOverflow: r.residualOverflow,
          residualUnderflow: r.residualUnderflow,
          dataInPdus,
          expDataSN: r.expDataSN,
          r2ts,
        };
      }
      throw new Error(`unexpected PDU opcode 0x${r.opcode.toString(16)} during SCSI command`);
    }
  }

  dataOut(
    itt: number,
    ttt: number,
    dataSN: number,
    offset: number,
    data: Buffer,
    final: boolean,
  ): DataOutPdu {
    return {
      opcode: Opcode.DataOut,
      final,
      itt,
      ttt,
      expStatSN: this.expStatSN,
      dataSN,
      bufferOffset: offset,
      data: [data],
    };
  }

  /** ITT, CmdSN and ExpStatSN for a new request (CmdSN advances unless it is immediate). */
  next(immediate = false): RequestNumbers {
    const n = { immediate, itt: this.itt++, cmdSN: this.cmdSN, expStatSN: this.expStatSN };
    if (!immediate) this.cmdSN = (this.cmdSN + 1) >>> 0;
    return n;
  }

  async text(pairs: KeyValue[]): Promise<Map<string, string[]>> {
    const first = this.next();
    this.send({
      opcode: Opcode.TextRequest,
      final: true,
      ...first,
      ttt: RESERVED_TAG,
      data: [encodeTextKeys(pairs)],
    });
    const out = new Map<string, string[]>();
    for (;;) {
      const r = pduAs(await this.recvResponse(), Opcode.TextResponse);
      this.expStatSN = (r.statSN + 1) >>> 0;
      for (const [k, v] of parseTextKeys(joinData(r.data))) out.set(k, [...(out.get(k) ?? []), v]);
      if (r.final) return out;
      this.send({ opcode: Opcode.TextRequest, final: true, ...this.next(), itt: first.itt, ttt: r.ttt });
    }
  }

  /** NOP-Out with data; resolves with the NOP-In that echoes it. */
  async nop(data = Buffer.alloc(0)): Promise<Parsed<NopInPdu>> {
    this.send({ opcode: Opcode.NopOut, ...this.next(true), ttt: RESERVED_TAG, data: [data] });
    return pduAs(await this.recvResponse(), Opcode.NopIn);
  }

  async logout(reason = 0, cid = 0): Promise<Parsed<LogoutResponsePdu>> {
    this.send({ opcode: Opcode.LogoutRequest, ...this.next(true), reasonCode: reason, cid });
    return pduAs(await this.recvResponse(), Opcode.LogoutResponse);
  }

  close(): void {
    this.socket.destroy();
  }
}
