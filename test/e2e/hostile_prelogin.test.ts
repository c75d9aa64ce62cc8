/**
 * Strangers holding connections open without logging in (idle, or dribbling a Login PDU a byte at
 * a time) against a real `usertgt serve`: 1,000 of them from 250 addresses plus 300 from a single
 * address, re-opened as soon as the target closes them. Meanwhile a real initiator (libiscsi's
 * iscsi-inq) logs in within 2 s, an already logged-in session keeps doing I/O, and the server's log
 * stays small (prelogin_pool.ts, log_rate_limit.ts).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { connect, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { RpcClient } from "../../src/rpc/client.js";
import { RawInitiator } from "../support/raw_initiator.js";
import { cleanup, makeTempDir, startServer, stopCleanly, type RunningServer } from "./harness.js";

const TARGET = "iqn.2016-06.io.spdk:hostile";

function read10(lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10);
  c[0] = 0x28;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
}

function iscsiInq(port: number): Promise<{ code: number; ms: number; out: string }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    execFile("iscsi-inq", [`iscsi://127.0.0.1:${port}/${TARGET}/0`], { timeout: 20000 }, (err, out, errOut) =>
      resolve({
        code: err ? (typeof err.code === "number" ? err.code : 1) : 0,
        ms: performance.now() - t0,
        out: out + errOut,
      }),
    );
  });
}

/** A Login Request BHS (opcode 0x43) to dribble: it never completes within the first-PDU deadline. */
const LOGIN_BHS = (() => {
  const b = Buffer.alloc(48);
  b[0] = 0x43;
  b[1] = 0x87;
  b.writeUInt32BE(200, 4); // a data segment that will never all arrive
  return b;
})();

/** Keeps `count` connections from `localAddress` open, re-opening each one the target closes. */
class Stranger {
  private stopped = false;
  private readonly sockets = new Set<Socket>();
  opened = 0;

  constructor(
    private readonly port: number,
    private readonly localAddress: string,
    private readonly slowloris: boolean,
  ) {}

  open(): void {
    if (this.stopped) return;
    this.opened++;
    const s = connect({ port: this.port, host: "127.0.0.1", localAddress: this.localAddress });
    this.sockets.add(s);
    let timer: NodeJS.Timeout | undefined;
    let sent = 0;
    s.on("connect", () => {
      if (!this.slowloris) return;
      timer = setInterval(() => {
        if (sent < LOGIN_BHS.length) s.write(LOGIN_BHS.subarray(sent, ++sent));
      }, 300);
    });
    s.on("error", () => undefined);
    s.on("end", () => s.destroy());
    s.on("close", () => {
      clearInterval(timer);
      this.sockets.delete(s);
      setTimeout(() => this.open(), 50).unref();
    });
  }

  get held(): number {
    return this.sockets.size;
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.sockets) s.destroy();
  }
}

describe("strangers that never log in", () => {
  let dir: string;
  let sock: string;
  let server: RunningServer;
  before(async () => {
    dir = await makeTempDir("prelogin");
    sock = join(dir, "ctl.sock");
    server = await startServer(
      (ports) => `[iSCSI]
  FirstPduTimeoutMs 3000
[Malloc]
  NumberOfLuns 1
  LunSizeInMB 4
[PortalGroup1]
  Portal A 127.0.0.1:${ports[0]}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.0/8
[TargetNode1]
  TargetName hostile
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 Malloc0
`,
      { dir, args: ["--no-fuse", "--rpc-socket", sock] },
    );
  });
  after(async () => {
    if (server.child.exitCode === null) await server.stop();
    await cleanup(dir);
  });

  it("a real initiator logs in within 2 s and a logged-in session keeps working while 1,300 are held", async () => {
    const port = server.ports[0]!;
    const session = await RawInitiator.connect(port);
    assert.equal((await session.login({ targetName: TARGET })).statusClass, 0);
    // The first command of a new nexus reports the power-on Unit Attention (SAM-5 5.14).
    await session.scsi(read10(0, 8), { read: 4096 });
    assert.equal((await session.scsi(read10(0, 8), { read: 4096 })).status, 0);

    const stats = async (): Promise<Record<string, number>> => {
      const rpc = await RpcClient.connect(sock);
      const out = (await rpc.call("iscsi_get_stats")) as Record<string, number>;
      rpc.close();
      return out;
    };
    const loginAndIo = async (): Promise<void> => {
      const inq = await iscsiInq(port);
      assert.equal(inq.code, 0, inq.out);
      assert.match(inq.out, /Peripheral Device Type:DIRECT_ACCESS/);
      assert.ok(inq.ms < 2000, `iscsi-inq took ${Math.round(inq.ms)} ms under the flood`);
      assert.equal((await session.scsi(read10(0, 8), { read: 4096 })).status, 0);
    };
    const logBefore = server.stderr().length;

    // One address: 300 connections, half idle, half dribbling. 32 are let in, the rest refused at
    // accept; those are closed at the first-PDU deadline and replaced.
    const single: Stranger[] = [];
    for (let i = 0; i < 300; i++) single.push(new Stranger(port, "127.0.2.1", i % 2 === 1));
    // Many addresses: 1,000 more from 250 addresses, filling the pool; each new connection makes room
    // by closing the oldest unfinished login of the busiest address.
    const many: Stranger[] = [];
    for (let a = 1; a <= 250; a++) {
      for (let i = 0; i < 4; i++) many.push(new Stranger(port, `127.0.1.${a}`, i % 2 === 1));
    }
    try {
      for (const s of single) s.open();
      await new Promise((r) => setTimeout(r, 4000));
      await loginAndIo();
      const s1 = await stats();
      assert.ok(s1.prelogin_refused_per_address! > 250, JSON.stringify(s1));
      assert.ok(s1.first_pdu_timeouts! >= 32, JSON.stringify(s1));
      assert.ok(s1.log_lines_suppressed! > 0, JSON.stringify(s1));

      for (const s of many) s.open();
      await new Promise((r) => setTimeout(r, 2000));
      for (let round = 0; round < 3; round++) {
        await loginAndIo();
        await new Promise((r) => setTimeout(r, 500));
      }
      const opened = [...single, ...many].reduce((n, s) => n + s.opened, 0);
      assert.ok(opened >= 1300, `${opened} stranger connections opened`);
      const s2 = await stats();
      assert.ok(s2.prelogin_connections! <= 128, JSON.stringify(s2));
      assert.ok(s2.prelogin_evicted! > 0, JSON.stringify(s2));
    } finally {
      for (const s of [...single, ...many]) s.stop();
    }
    // Thousands of refused and closed connections, but the log stayed small (at most 200 lines / 10 s).
    const logBytes = server.stderr().length - logBefore;
    assert.ok(logBytes < 200 * 400, `${logBytes} bytes of log during the flood`);
    session.close();
    await stopCleanly(server);
  });
});
