/**
 * A small raw-PDU iSCSI initiator for tests: it frames PDUs with the project's parser and writer,
 * logs in with chosen keys (optionally CHAP), runs SCSI commands with Data-Out / R2T handling,
 * and lets a test send arbitrary bytes to check how the target copes with bad input.
 */
import { connect, type Socket } from "node:net";
import { createHash } from "node:crypto";
import { PduParser } from "../../src/iscsi/pdu_parser.js";
import { encodePdu } from "../../src/iscsi/pdu_writer.js";
import { Opcode, Pdu, RESERVED_TAG } from "../../src/iscsi/pdu.js";
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

export interface ScsiResult {
  status: number;
  data: Buffer;
  sense: Buffer;
  residual: number;
  flags: number;
  dataInPdus: number;
  /** ExpDataSN from the SCSI Response (Data-In + R2T PDUs the target sent); undefined when status came in Data-In. */
  expDataSN?: number;
  r2ts: number;
}

export class RawInitiator {
  readonly socket: Socket;
  private readonly parser = new PduParser(0xffffff);
  private queue: Pdu[] = [];
  private waiters: ((p: Pdu | Error) => void)[] = [];
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
  readonly events: Pdu[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      let pdus: Pdu[];
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

  send(pdu: Pdu, parts?: Buffer[]): void {
    for (const b of encodePdu(pdu, this.headerDigest, this.dataDigest, parts)) this.socket.write(b);
  }

  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  recv(ms = 5000): Promise<Pdu> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    if (this.closedFlag) return Promise.reject(new Error("connection closed"));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no PDU within ${ms}ms`));
      }, ms);
      const waiter = (p: Pdu | Error) => {
        clearTimeout(t);
        if (p instanceof Error) reject(p);
        else resolve(p);
      };
      this.waiters.push(waiter);
    });
  }

  /** Receive, skipping NOP-In pings and async messages (answering pings). */
  async recvResponse(ms = 5000): Promise<Pdu> {
    for (;;) {
      const p = await this.recv(ms);
      if (p.opcode === Opcode.NopIn && p.itt === RESERVED_TAG) {
        const out = Pdu.create(Opcode.NopOut);
        out.immediate = true;
        out.flags = 0x80;
        out.itt = RESERVED_TAG;
        out.ttt = p.ttt;
        out.bhs.writeUInt32BE(this.cmdSN, 24);
        out.bhs.writeUInt32BE(this.expStatSN, 28);
        this.send(out);
        continue;
      }
      if (p.opcode === Opcode.AsyncMessage) continue;
      return p;
    }
  }

  private loginPdu(csg: number, nsg: number, transit: boolean, pairs: KeyValue[], opts: LoginOptions): Pdu {
    const p = Pdu.create(Opcode.LoginRequest, encodeTextKeys(pairs));
    p.immediate = true;
    p.flags = (transit ? 0x80 : 0) | (csg << 2) | (transit ? nsg : 0);
    (opts.isid ?? this.isid).copy(p.bhs, 8);
    p.setU16(14, opts.tsih ?? this.tsih);
    p.itt = this.itt;
    p.setU16(20, opts.cid ?? 0);
    p.setU32(24, this.cmdSN);
    p.setU32(28, this.expStatSN);
    return p;
  }

  private async loginExchange(p: Pdu): Promise<{ rsp: Pdu; keys: Map<string, string> }> {
    this.send(p);
    const rsp = await this.recv();
    if (rsp.opcode !== Opcode.LoginResponse)
      throw new Error(`expected Login Response, got 0x${rsp.opcode.toString(16)}`);
    this.expStatSN = (rsp.statSN + 1) >>> 0;
    return { rsp, keys: new Map(parseTextKeys(rsp.data)) };
  }

  /** Full login; returns the final (or failing) response's status and all keys the target sent. */
  async login(opts: LoginOptions = {}): Promise<LoginResult> {
    if (opts.isid) this.isid = opts.isid;
    const ident: KeyValue[] = [["InitiatorName", opts.initiatorName ?? "iqn.2024-01.test:raw"]];
    if (opts.discovery) ident.push(["SessionType", "Discovery"]);
    else if (opts.targetName !== undefined) ident.push(["TargetName", opts.targetName]);
    const all = new Map<string, string>();
    const result = (rsp: Pdu): LoginResult => ({
      statusClass: rsp.bhs[36],
      statusDetail: rsp.bhs[37],
      tsih: rsp.u16(14),
      keys: all,
    });
    const merge = (m: Map<string, string>) => m.forEach((v, k) => all.set(k, v));
    let r;
    if (opts.chap) {
      r = await this.loginExchange(this.loginPdu(0, 1, false, [...ident, ["AuthMethod", "CHAP,None"]], opts));
      merge(r.keys);
      if (r.rsp.bhs[36] !== 0) return result(r.rsp);
      r = await this.loginExchange(this.loginPdu(0, 1, false, [["CHAP_A", "5"]], opts));
      merge(r.keys);
      if (r.rsp.bhs[36] !== 0) return result(r.rsp);
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
      if (r.rsp.bhs[36] !== 0) return result(r.rsp);
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
      if (r.rsp.bhs[36] !== 0) return result(r.rsp);
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
      this.cmdSN = r.rsp.u32(28);
    }
    return res;
  }

  /** A SCSI command; `write` is sent as immediate data / unsolicited / R2T-solicited Data-Out. */
  async scsi(
    cdb: Buffer,
    opts: { read?: number; write?: Buffer; lun?: number; edtl?: number } = {},
  ): Promise<ScsiResult> {
    const itt = this.itt++;
    const write = opts.write;
    const edtl = opts.edtl ?? (write ? write.length : (opts.read ?? 0));
    const p = Pdu.create(Opcode.ScsiCommand);
    const padded = Buffer.alloc(16);
    cdb.copy(padded, 0, 0, Math.min(16, cdb.length));
    padded.copy(p.bhs, 32);
    p.bhs[9] = opts.lun ?? 0;
    p.itt = itt;
    p.setU32(20, edtl);
    p.setU32(24, this.cmdSN);
    this.cmdSN = (this.cmdSN + 1) >>> 0;
    p.setU32(28, this.expStatSN);
    let sent = 0;
    let immediate: Buffer | undefined;
    if (write && this.immediateData) {
      immediate = write.subarray(0, Math.min(write.length, this.firstBurstLength, this.targetMrdsl));
      sent = immediate.length;
    }
    const unsolicited = write && !this.initialR2T ? Math.min(write.length, this.firstBurstLength) : sent;
    p.flags = 0x01 | (opts.read ? 0x40 : 0) | (write ? 0x20 : 0) | (sent >= unsolicited ? 0x80 : 0);
    if (immediate) p.data = immediate;
    this.send(p);
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
      const r = await this.recvResponse();
      if (r.opcode === Opcode.R2T && write) {
        r2ts++;
        const offset = r.u32(40);
        const want = r.u32(44);
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
        chunks.push(Buffer.from(r.data));
        if (r.flags & 0x01) {
          this.expStatSN = (r.statSN + 1) >>> 0;
          return {
            status: r.bhs[3],
            data: Buffer.concat(chunks),
            sense: Buffer.alloc(0),
            residual: r.u32(44),
            flags: r.flags,
            dataInPdus,
            r2ts,
          };
        }
        continue;
      }
      if (r.opcode === Opcode.ScsiResponse) {
        this.expStatSN = (r.statSN + 1) >>> 0;
        const sense =
          r.data.length >= 2 ? Buffer.from(r.data.subarray(2, 2 + r.data.readUInt16BE(0))) : Buffer.alloc(0);
        return {
          status: r.bhs[3],
          data: Buffer.concat(chunks),
          sense,
          residual: r.u32(44),
          flags: r.flags,
          dataInPdus,
          expDataSN: r.u32(36),
          r2ts,
        };
      }
      throw new Error(`unexpected PDU opcode 0x${r.opcode.toString(16)} during SCSI command`);
    }
  }

  dataOut(itt: number, ttt: number, dataSN: number, offset: number, data: Buffer, final: boolean): Pdu {
    const d = Pdu.create(Opcode.DataOut, data);
    d.flags = final ? 0x80 : 0;
    d.itt = itt;
    d.ttt = ttt;
    d.setU32(28, this.expStatSN);
    d.setU32(36, dataSN);
    d.setU32(40, offset);
    return d;
  }

  /** A request PDU with CmdSN/ExpStatSN filled (not advancing CmdSN when immediate). */
  command(opcode: Opcode, opts: { immediate?: boolean; flags?: number; data?: Buffer } = {}): Pdu {
    const p = Pdu.create(opcode, opts.data);
    p.immediate = opts.immediate ?? false;
    p.flags = opts.flags ?? 0x80;
    p.itt = this.itt++;
    p.setU32(24, this.cmdSN);
    if (!p.immediate) this.cmdSN = (this.cmdSN + 1) >>> 0;
    p.setU32(28, this.expStatSN);
    return p;
  }

  async text(pairs: KeyValue[]): Promise<Map<string, string[]>> {
    const p = this.command(Opcode.TextRequest, { data: encodeTextKeys(pairs) });
    p.ttt = RESERVED_TAG;
    this.send(p);
    const out = new Map<string, string[]>();
    for (;;) {
      const r = await this.recvResponse();
      if (r.opcode !== Opcode.TextResponse)
        throw new Error(`expected Text Response, got 0x${r.opcode.toString(16)}`);
      this.expStatSN = (r.statSN + 1) >>> 0;
      for (const [k, v] of parseTextKeys(r.data)) out.set(k, [...(out.get(k) ?? []), v]);
      if (r.final) return out;
      const more = this.command(Opcode.TextRequest);
      more.itt = p.itt;
      more.ttt = r.ttt;
      this.send(more);
    }
  }

  async nop(data = Buffer.alloc(0)): Promise<Pdu> {
    const p = this.command(Opcode.NopOut, { immediate: true, data });
    p.ttt = RESERVED_TAG;
    this.send(p);
    return this.recvResponse();
  }

  async logout(reason = 0, cid = 0): Promise<Pdu> {
    const p = this.command(Opcode.LogoutRequest, { immediate: true, flags: 0x80 | reason });
    p.setU16(20, cid);
    this.send(p);
    return this.recvResponse();
  }

  close(): void {
    this.socket.destroy();
  }
}
