/**
 * Initiators that answer R2Ts but hold back the last Data-Out of every WRITE, against a real
 * `usertgt serve` (data_budget.ts): 2 sessions x 16 commands x 32 MiB would make an unbounded target
 * keep 1 GiB. With MaxWriteDataPerConnection 64 MiB and MaxWriteDataTotal 96 MiB the target solicits
 * no more than that, the server's RSS stays within the budget (plus the process's own working set),
 * DataOutTimeout drops the stalled connections, the memory is given back, and a clean session then
 * writes and reads back verified data.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Opcode, type ParsedPdu } from "../../src/iscsi/pdu.js";
import { RpcClient } from "../../src/rpc/client.js";
import { RawInitiator } from "../support/raw_initiator.js";
import { cleanup, makeTempDir, startServer, stopCleanly, type RunningServer } from "./harness.js";

const TARGET = "iqn.2016-06.io.spdk:holder";
const MiB = 1024 * 1024;
const BS = 4096;
const WRITE_BYTES = 32 * MiB;
const COMMANDS = 16;
const PER_CONNECTION = 64 * MiB;
const TOTAL = 96 * MiB;

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024;
}

function cdb(opcode: 0x28 | 0x2a, lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10);
  c[0] = opcode;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
}

/** A logged-in initiator that starts COMMANDS writes and sends every Data-Out but each one's last. */
class Holder {
  private readonly zeros = Buffer.alloc(256 * 1024);
  r2ts = 0;
  closed = false;

  private constructor(readonly ini: RawInitiator) {}

  static async start(port: number, isid: number): Promise<Holder> {
    const ini = await RawInitiator.connect(port);
    ini.immediateData = false;
    ini.isid = Buffer.from([0x80, 0, 0, 0, 7, isid]);
    const r = await ini.login({ targetName: TARGET });
    assert.equal(r.statusClass, 0);
    const h = new Holder(ini);
    for (let i = 0; i < COMMANDS; i++) {
      ini.send({
        opcode: Opcode.ScsiCommand,
        final: true,
        write: true,
        attribute: 1, // simple
        itt: ini.itt++,
        expectedDataTransferLength: WRITE_BYTES,
        cmdSN: ini.cmdSN,
        expStatSN: ini.expStatSN,
        cdb: cdb(0x2a, 0, WRITE_BYTES / BS),
      });
      ini.cmdSN = (ini.cmdSN + 1) >>> 0;
    }
    void h.answer();
    return h;
  }

  private async answer(): Promise<void> {
    for (;;) {
      let r: ParsedPdu;
      try {
        r = await this.ini.recv(60_000);
      } catch {
        this.closed = true;
        return;
      }
      if (r.opcode !== Opcode.R2T) continue;
      this.r2ts++;
      const offset = r.bufferOffset;
      const want = r.desiredDataTransferLength;
      const last = offset + want === WRITE_BYTES;
      let sn = 0;
      for (let o = 0; o < want;) {
        const len = Math.min(this.ini.targetMrdsl, want - o);
        const final = o + len === want;
        // The last Data-Out of the whole command never comes.
        if (!(last && final)) {
          this.ini.send(this.ini.dataOut(r.itt, r.ttt, sn++, offset + o, this.zeros.subarray(0, len), final));
        }
        o += len;
      }
    }
  }
}

describe("initiators holding back the last Data-Out", () => {
  let dir: string;
  let sock: string;
  let server: RunningServer;
  before(async () => {
    dir = await makeTempDir("hold");
    sock = join(dir, "ctl.sock");
    server = await startServer(
      (ports) => `[iSCSI]
  MaxWriteDataPerConnection ${PER_CONNECTION}
  MaxWriteDataTotal ${TOTAL}
  DataOutTimeout 3
[Malloc]
  NumberOfLuns 1
  LunSizeInMB 64
  BlockSize ${BS}
[PortalGroup1]
  Portal A 127.0.0.1:${ports[0]}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName holder
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

  it("RSS stays within the write budget, stalled connections are dropped, memory comes back", async (t) => {
    const pid = server.child.pid!;
    const stats = async (): Promise<Record<string, number>> => {
      const rpc = await RpcClient.connect(sock);
      const out = (await rpc.call("iscsi_get_stats")) as Record<string, number>;
      rpc.close();
      return out;
    };
    const baseline = await rssBytes(pid);
    const holders = [await Holder.start(server.ports[0]!, 1), await Holder.start(server.ports[0]!, 2)];
    let peak = baseline;
    let peakBuffered = 0;
    const deadline = Date.now() + 30_000;
    while (!holders.every((h) => h.closed) && Date.now() < deadline) {
      peak = Math.max(peak, await rssBytes(pid));
      peakBuffered = Math.max(peakBuffered, (await stats()).write_data_buffered!);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(
      holders.every((h) => h.closed),
      "DataOutTimeout dropped both stalled connections",
    );
    const s = await stats();
    assert.equal(s.data_out_timeouts, 2, JSON.stringify(s));
    assert.ok(s.data_budget_waits! > 0, JSON.stringify(s));
    assert.ok(peakBuffered <= TOTAL, `buffered ${peakBuffered} bytes, budget ${TOTAL}`);
    assert.ok(peakBuffered >= PER_CONNECTION, `the budget was used (${peakBuffered} bytes)`);
    // Unbounded, the target held 2 x 16 x 32 MiB = 1 GiB here. Allow the budget plus what the socket
    // buffers and the slices of received chunks cost on top of the data itself.
    const grew = peak - baseline;
    assert.ok(grew < TOTAL + 96 * MiB, `RSS grew ${Math.round(grew / MiB)} MiB (budget ${TOTAL / MiB} MiB)`);
    // Soak up what the attack left: nothing is held any more.
    assert.equal(s.write_data_buffered, 0);
    let after = await rssBytes(pid);
    for (let i = 0; i < 50 && after - baseline > 48 * MiB; i++) {
      await new Promise((r) => setTimeout(r, 200));
      after = await rssBytes(pid);
    }
    t.diagnostic(
      `RSS baseline ${Math.round(baseline / MiB)} MiB, peak ${Math.round(peak / MiB)} MiB, ` +
        `after close ${Math.round(after / MiB)} MiB; buffered at most ${Math.round(peakBuffered / MiB)} MiB`,
    );
    assert.ok(
      after - baseline < 48 * MiB,
      `RSS ${Math.round((after - baseline) / MiB)} MiB above baseline after close`,
    );

    // A clean session is served normally afterwards.
    const ini = await RawInitiator.connect(server.ports[0]!);
    assert.equal((await ini.login({ targetName: TARGET })).statusClass, 0);
    await ini.scsi(cdb(0x28, 0, 1), { read: BS }); // the power-on Unit Attention
    const data = Buffer.alloc(4 * MiB);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32BE(i ^ 0x5a5a5a5a, i);
    assert.equal((await ini.scsi(cdb(0x2a, 100, data.length / BS), { write: data })).status, 0);
    const back = await ini.scsi(cdb(0x28, 100, data.length / BS), { read: data.length });
    assert.equal(back.status, 0);
    assert.ok(back.data.equals(data));
    ini.close();
    await stopCleanly(server);
  });
});
