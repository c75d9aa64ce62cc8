/**
 * READ data leaves in pooled buffers that go back to the pool once the socket has taken them
 * (src/scsi/read_buffer_pool.ts, src/iscsi/pdu_writer.ts). A buffer handed out again while an
 * earlier Data-In still waits to be written would send another read's bytes: this test keeps many
 * reads of distinct block patterns in flight, stops reading its socket now and then so that Data-In
 * piles up behind a full send buffer while later reads complete, and checks every byte it gets.
 * A Malloc LUN, an AIO LUN on a file (io_uring or thread pool filling the buffer) and, where loop
 * devices can be made, an AIO LUN on a loop device (O_DIRECT under io_uring: the kernel writes into
 * the pooled, page-aligned buffer itself); one session with 256 KiB Data-In segments and one with
 * 8 KiB (several Data-In per read).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Opcode, TaskAttributeCode, joinData } from "../../src/iscsi/pdu.js";
import { RawInitiator, lunField } from "../support/raw_initiator.js";
import { attachLoop, canUseLoopDevices, type LoopDevice } from "../support/loop_device.js";
import { prng } from "../support/prng.js";
import { cleanup, makeTempDir, startServer, stopCleanly, type RunningServer } from "./harness.js";

const IQN = "iqn.2016-06.io.spdk:readreuse";
const BLOCK = 4096;
const LUN_MB = 16;
const BLOCKS = (LUN_MB * 1048576) / BLOCK;
const PORTS: readonly [number, number] = [3600, 3609];

/** Without loop devices (not root) the block-device LUN is left out. */
const withLoop = (await canUseLoopDevices()) === undefined;
const LUNS = withLoop ? [0, 1, 2] : [0, 1];

function config(dir: string, port: number, loop: LoopDevice | undefined): string {
  return `[Malloc]
  NumberOfLuns 1
  LunSizeInMB ${LUN_MB}
  BlockSize ${BLOCK}
[AIO]
  AIO ${join(dir, "aio.img")} AIO0 ${BLOCK} ${LUN_MB}
${loop ? `  AIO ${loop.device} AIO1\n` : ""}[PortalGroup1]
  Portal P 127.0.0.1:${port}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  QueueDepth 64
  LUN0 Malloc0
  LUN1 AIO0
${loop ? "  LUN2 AIO1\n" : ""}`;
}

/** Blocks from `lba`: every 32-bit word names its LUN, block and place, so a stray byte shows. */
function expected(lun: number, lba: number, blocks: number): Buffer {
  const words = new Uint32Array((blocks * BLOCK) / 4);
  const perBlock = BLOCK / 4;
  for (let i = 0; i < blocks; i++) {
    const tag = ((lun << 28) ^ ((lba + i) << 10) ^ 0x5a5a5a5a) >>> 0;
    for (let w = 0; w < perBlock; w++) words[i * perBlock + w] = (tag ^ w) >>> 0;
  }
  return Buffer.from(words.buffer);
}

function rw16(opcode: 0x88 | 0x8a, lba: number, blocks: number): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = opcode;
  cdb.writeBigUInt64BE(BigInt(lba), 2);
  cdb.writeUInt32BE(blocks, 10);
  return cdb;
}

async function session(port: number, mrdsl: number, isidTail: number): Promise<RawInitiator> {
  const ini = await RawInitiator.connect(port);
  ini.maxRecvDataSegmentLength = mrdsl;
  ini.isid = Buffer.from([0x80, 0x12, 0x34, 0x56, 0x00, isidTail]);
  const login = await ini.login({ targetName: IQN, initiatorName: `iqn.2024-01.test:readreuse${isidTail}` });
  assert.equal(login.statusClass, 0, `login status ${login.statusClass}/${login.statusDetail}`);
  for (let i = 0; i < 4; i++) {
    let ready = true;
    for (const lun of LUNS) if ((await ini.scsi(Buffer.alloc(6), { lun })).status !== 0) ready = false;
    if (ready) return ini;
  }
  assert.fail("unit attentions did not clear after 4 TEST UNIT READY");
}

interface Read {
  lun: number;
  lba: number;
  blocks: number;
  chunks: Buffer[];
  received: number;
}

/**
 * Keep up to `depth` READ(16)s in flight (within the CmdSN window), `count` in all, at random LBAs
 * and sizes; every `pauseEvery` completions stop reading the socket for `pauseMs`. Resolves with
 * the number of reads checked; rejects on the first wrong byte.
 */
async function pipelinedReads(
  ini: RawInitiator,
  seed: number,
  count: number,
  depth: number,
  pauseEvery: number,
  pauseMs: number,
): Promise<number> {
  const rand = prng(seed);
  // Mostly 256 KiB, so that 64 in flight outgrow the kernel's socket buffers while the initiator
  // stalls and Data-In waits in the target; and 32 KiB, with some others in between.
  const sizes = [64, 64, 64, 8, 8, 8, 1, 2, 16];
  const inFlight = new Map<number, Read>();
  let maxCmdSN = ini.cmdSN;
  let issued = 0;
  let done = 0;
  const issue = (): void => {
    while (issued < count && inFlight.size < depth && ((maxCmdSN - ini.cmdSN) | 0) >= 0) {
      const lun = LUNS[issued % LUNS.length]!;
      const blocks = sizes[Math.floor(rand() * sizes.length)]!;
      const lba = Math.floor(rand() * (BLOCKS - blocks));
      const n = ini.next();
      inFlight.set(n.itt, { lun, lba, blocks, chunks: [], received: 0 });
      ini.send({
        opcode: Opcode.ScsiCommand,
        final: true,
        read: true,
        attribute: TaskAttributeCode.Simple,
        lun: lunField(lun),
        itt: n.itt,
        expectedDataTransferLength: blocks * BLOCK,
        cmdSN: n.cmdSN,
        expStatSN: n.expStatSN,
        cdb: rw16(0x88, lba, blocks),
      });
      issued++;
    }
  };
  issue();
  while (done < count) {
    const p = await ini.recvResponse(20000);
    if (p.opcode !== Opcode.DataIn && p.opcode !== Opcode.ScsiResponse)
      assert.fail(`unexpected PDU opcode 0x${p.opcode.toString(16)}`);
    const r = inFlight.get(p.itt);
    assert.ok(r, `PDU for unknown ITT 0x${p.itt.toString(16)}`);
    maxCmdSN = p.maxCmdSN;
    if (p.opcode === Opcode.DataIn) {
      const data = Buffer.from(joinData(p.data));
      assert.equal(p.bufferOffset, r.received, `ITT 0x${p.itt.toString(16)}: Data-In out of order`);
      r.chunks.push(data);
      r.received += data.length;
      if (!p.statusPresent) continue;
    }
    ini.expStatSN = (p.statSN + 1) >>> 0;
    assert.equal(p.status, 0, `READ LUN ${r.lun} LBA ${r.lba}: status ${p.status}`);
    const got = Buffer.concat(r.chunks);
    const want = expected(r.lun, r.lba, r.blocks);
    if (!got.equals(want)) {
      let at = 0;
      while (at < want.length && got[at] === want[at]) at++;
      assert.fail(
        `READ LUN ${r.lun} LBA ${r.lba} × ${r.blocks}: ${got.length} bytes, first wrong byte at ${at} ` +
          `(block ${r.lba + Math.floor(at / BLOCK)}): another read's data`,
      );
    }
    inFlight.delete(p.itt);
    done++;
    if (done % pauseEvery === 0) {
      ini.socket.pause();
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
      ini.socket.resume();
    }
    issue();
  }
  return done;
}

describe("pooled READ buffers are reused only after the socket took them", () => {
  let dir: string;
  let server: RunningServer;
  let loop: LoopDevice | undefined;
  before(async () => {
    dir = await makeTempDir("readreuse");
    if (withLoop) loop = await attachLoop(join(dir, "loop.img"), LUN_MB * 1048576, BLOCK);
    server = await startServer((ports, d) => config(d, ports[0], loop), { dir, portRange: PORTS });
    const ini = await session(server.ports[0], 262144, 1);
    // Every block of both LUNs gets its pattern, 1 MiB per WRITE(16).
    const step = 1048576 / BLOCK;
    for (const lun of LUNS) {
      for (let lba = 0; lba < BLOCKS; lba += step) {
        const w = await ini.scsi(rw16(0x8a, lba, step), { lun, write: expected(lun, lba, step) });
        assert.equal(w.status, 0, `WRITE LUN ${lun} LBA ${lba}: status ${w.status}`);
      }
    }
    await ini.logout();
    ini.close();
  });
  after(async () => {
    if (server) await stopCleanly(server);
    await loop?.detach();
    await cleanup(dir);
  });

  for (const [mrdsl, tail] of [
    [262144, 2],
    [8192, 3],
  ] as const) {
    it(`MaxRecvDataSegmentLength ${mrdsl}: 3000 reads, 64 in flight, socket stalled every 200`, async () => {
      const ini = await session(server.ports[0], mrdsl, tail);
      const n = await pipelinedReads(ini, 0x1234 + tail, 3000, 64, 200, 50);
      assert.equal(n, 3000);
      await ini.logout();
      ini.close();
    });
  }

  it("two sessions at once, each stalling its socket at different times", async () => {
    const a = await session(server.ports[0], 262144, 4);
    const b = await session(server.ports[0], 16384, 5);
    const [na, nb] = await Promise.all([
      pipelinedReads(a, 77, 2000, 64, 150, 40),
      pipelinedReads(b, 78, 2000, 64, 230, 60),
    ]);
    assert.deepEqual([na, nb], [2000, 2000]);
    for (const ini of [a, b]) {
      await ini.logout();
      ini.close();
    }
  });
});
