/**
 * A bounded, seeded fuzz run against a real `usertgt serve`: 3,000 mutated PDUs (bit flips, bytes
 * overwritten, lengths and opcodes changed, truncations, random garbage), before and after login, over
 * many connections. The server must stay up, keep its log small, and afterwards a clean session must do
 * verified I/O. The seed is fixed (FUZZ_SEED overrides it) so a failure can be replayed.
 */
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { Opcode, type AnyPdu } from "../../src/iscsi/pdu.js";
import { serializePduToBuffer } from "../../src/iscsi/pdu_serializer.js";
import { encodeTextKeys } from "../../src/iscsi/param.js";
import { RawInitiator } from "../support/raw_initiator.js";
import { cleanup, makeTempDir, startServer, stopCleanly, type RunningServer } from "./harness.js";
import { prng } from "../support/prng.js";

const TARGET = "iqn.2016-06.io.spdk:fuzz";
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed1234);
const CONNECTIONS = 300;
const PDUS_PER_CONNECTION = 10;

function cdb(opcode: number, lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(16);
  c[0] = opcode;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
}

/** Valid PDUs of each kind, to be mutated. */
function templates(): Buffer[] {
  const pdus: AnyPdu[] = [
    {
      opcode: Opcode.LoginRequest,
      transit: true,
      currentStage: 1,
      nextStage: 3,
      isid: Buffer.from([0x80, 0, 0, 0, 0, 1]),
      itt: 1,
      cmdSN: 1,
      data: [
        encodeTextKeys([
          ["InitiatorName", "iqn.2099-01.fuzz:i"],
          ["TargetName", TARGET],
          ["SessionType", "Normal"],
          ["AuthMethod", "None"],
        ]),
      ],
    },
    {
      opcode: Opcode.NopOut,
      immediate: false,
      itt: 2,
      ttt: 0xffffffff,
      cmdSN: 2,
      data: [Buffer.from("ping")],
    },
    {
      opcode: Opcode.ScsiCommand,
      final: true,
      read: true,
      attribute: 1,
      itt: 3,
      expectedDataTransferLength: 4096,
      cmdSN: 3,
      cdb: cdb(0x28, 0, 8),
    },
    {
      opcode: Opcode.ScsiCommand,
      final: false,
      write: true,
      attribute: 1,
      itt: 4,
      expectedDataTransferLength: 8192,
      cmdSN: 4,
      cdb: cdb(0x2a, 8, 16),
      data: [Buffer.alloc(4096, 0xab)],
    },
    {
      opcode: Opcode.DataOut,
      final: true,
      itt: 4,
      ttt: 0xffffffff,
      bufferOffset: 4096,
      data: [Buffer.alloc(4096, 0xcd)],
    },
    {
      opcode: Opcode.TextRequest,
      final: true,
      itt: 5,
      ttt: 0xffffffff,
      cmdSN: 5,
      data: [encodeTextKeys([["SendTargets", "All"]])],
    },
    { opcode: Opcode.TaskMgmtRequest, function: 1, itt: 6, referencedTaskTag: 3, cmdSN: 6 },
    { opcode: Opcode.LogoutRequest, reasonCode: 0, itt: 7, cmdSN: 7 },
  ];
  return pdus.map((p) => serializePduToBuffer(p));
}

function mutate(rand: () => number, pdu: Buffer): Buffer {
  const b = Buffer.from(pdu);
  const pick = Math.floor(rand() * 7);
  const at = (n: number) => Math.floor(rand() * n);
  switch (pick) {
    case 0: // bit flips
      for (let i = 0, n = 1 + at(8); i < n; i++) b[at(b.length)]! ^= 1 << at(8);
      return b;
    case 1: // random bytes in the BHS
      for (let i = 0, n = 1 + at(6); i < n; i++) b[at(48)] = at(256);
      return b;
    case 2: // DataSegmentLength / TotalAHSLength set to anything
      b[4] = at(256);
      b.writeUIntBE(at(0x1000000), 5, 3);
      return b;
    case 3: // another opcode
      b[0] = (b[0]! & 0xc0) | at(64);
      return b;
    case 4: // truncated
      return b.subarray(0, at(b.length));
    case 5: // random garbage
      return Buffer.from(Array.from({ length: 1 + at(200) }, () => at(256)));
    default: // a field the target reads (EDTL, CmdSN, TTT, buffer offset) set to anything
      b.writeUInt32BE(Math.floor(rand() * 0x100000000), [20, 24, 28, 36, 40][at(5)]!);
      return b;
  }
}

describe("fuzzed iSCSI PDUs (seeded, bounded)", () => {
  let dir: string;
  let server: RunningServer;
  before(async () => {
    dir = await makeTempDir("fuzz-iscsi");
    server = await startServer(
      (ports) => `[iSCSI]
  FirstPduTimeoutMs 1000
  LoginTimeout 2
[Malloc]
  NumberOfLuns 1
  LunSizeInMB 8
[PortalGroup1]
  Portal A 127.0.0.1:${ports[0]}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName fuzz
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 Malloc0
`,
      { dir, args: ["--no-fuse", "--no-rpc"] },
    );
  });
  after(async () => {
    if (server.child.exitCode === null) await server.stop();
    await cleanup(dir);
  });

  it(`${CONNECTIONS * PDUS_PER_CONNECTION} mutated PDUs; the server stays up and serves a clean session`, async (t) => {
    t.diagnostic(`seed 0x${SEED.toString(16)} (FUZZ_SEED to replay)`);
    const rand = prng(SEED);
    const kinds = templates();
    const port = server.ports[0]!;
    const logBefore = server.stderr().length;
    for (let c = 0; c < CONNECTIONS; c++) {
      // Half the connections log in first, so Full Feature Phase handling is fuzzed too.
      const loggedIn = rand() < 0.5;
      let socket: Socket;
      if (loggedIn) {
        const ini = await RawInitiator.connect(port);
        ini.isid = Buffer.from([0x80, 0, 0, 0, (c >> 8) & 0xff, c & 0xff]);
        const r = await ini.login({ targetName: TARGET });
        assert.equal(r.statusClass, 0, `connection ${c}: a clean login is still accepted`);
        socket = ini.socket;
      } else {
        socket = connect({ port, host: "127.0.0.1" });
        await new Promise<void>((resolve, reject) => {
          socket.once("connect", resolve);
          socket.once("error", reject);
        });
      }
      socket.on("error", () => undefined);
      for (let i = 0; i < PDUS_PER_CONNECTION && !socket.destroyed; i++) {
        socket.write(mutate(rand, kinds[Math.floor(rand() * kinds.length)]!));
      }
      await new Promise((r) => setTimeout(r, 5));
      socket.destroy();
      assert.equal(server.child.exitCode, null, `server exited after connection ${c}`);
    }
    // The log is rate-limited per source (20 lines / 10 s) and in total (200).
    const logBytes = server.stderr().length - logBefore;
    assert.ok(
      logBytes < 400 * 400,
      `${logBytes} bytes of log for ${CONNECTIONS * PDUS_PER_CONNECTION} bad PDUs`,
    );

    const ini = await RawInitiator.connect(port);
    ini.isid = Buffer.from([0x80, 0, 0, 1, 0, 0]);
    assert.equal((await ini.login({ targetName: TARGET })).statusClass, 0);
    await ini.scsi(cdb(0x28, 0, 1).subarray(0, 10), { read: 512 }); // the power-on Unit Attention
    const data = Buffer.alloc(256 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
    assert.equal(
      (await ini.scsi(cdb(0x2a, 64, data.length / 512).subarray(0, 10), { write: data })).status,
      0,
    );
    const back = await ini.scsi(cdb(0x28, 64, data.length / 512).subarray(0, 10), { read: data.length });
    assert.equal(back.status, 0);
    assert.ok(back.data.equals(data), "the clean session reads back what it wrote");
    ini.close();
    await stopCleanly(server);
  });
});
