/**
 * A sequential WRITE(16) load for one iSCSI LUN, for bench/drbd_bench.sh: libiscsi 1.19's iscsi-perf only
 * reads and Debian's fio has no libiscsi engine. `depth` sessions (one per "command in flight", each with its
 * own ISID) share one LBA cursor that walks the LUN and wraps at its end, so the target sees `depth`
 * sequential streams interleaved like one queue of that depth. Measures only; verifies nothing (the e2e
 * tests do). A command that ends in anything but GOOD stops the run with the sense bytes.
 *
 *   node dist/bench/drbd/write_load.js --port P [--host 127.0.0.1] [--iqn IQN] [--lun 0] [--bs 4096]
 *     [--depth 32] [--seconds 10] [--read]
 *
 * Prints one JSON line: {"op","bs","depth","seconds","ios","mbs","iops"} (MB = 10^6 bytes; iscsi-perf's is 2^20).
 */
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { RawInitiator } from "../../test/support/raw_initiator.js";

const { values } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    iqn: { type: "string", default: "iqn.2016-06.io.spdk:drbdbench" },
    lun: { type: "string", default: "0" },
    bs: { type: "string", default: "4096" },
    depth: { type: "string", default: "32" },
    seconds: { type: "string", default: "10" },
    read: { type: "boolean", default: false },
  },
});

function positive(name: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0)
    throw new Error(`write_load: --${name} must be a whole number, got ${text}`);
  return n;
}

const host = values.host!;
const port = positive("port", values.port);
const lun = positive("lun", values.lun);
const ioBytes = positive("bs", values.bs);
const depth = Math.max(1, positive("depth", values.depth));
const seconds = positive("seconds", values.seconds);
const reading = values.read!;

/** READ/WRITE(16), SBC-3 5.16 / 5.37: LBA at bytes 2-9, transfer length in blocks at 10-13. */
function rw16(opcode: 0x88 | 0x8a, lba: number, blocks: number): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = opcode;
  cdb.writeBigUInt64BE(BigInt(lba), 2);
  cdb.writeUInt32BE(blocks, 10);
  return cdb;
}

async function session(index: number): Promise<RawInitiator> {
  const ini = await RawInitiator.connect(port, host);
  // RawInitiator writes a PDU's header and data separately; with Nagle on, a WRITE's data waits for the
  // target's delayed ACK (40 ms on Linux) and the figure would measure that timer, not the target.
  ini.socket.setNoDelay(true);
  const isid = Buffer.from([0x80, 0x42, 0x00, 0x00, (index >> 8) & 0xff, index & 0xff]);
  const login = await ini.login({ targetName: values.iqn, initiatorName: "iqn.2026-11.usertgt:bench", isid });
  if (login.statusClass !== 0)
    throw new Error(`write_load: login ${index}: status ${login.statusClass}/${login.statusDetail}`);
  // Each new I_T nexus starts with a POWER ON / RESET unit attention (SAM-5 6.3); TEST UNIT READY clears it.
  for (let i = 0; ; i++) {
    const tur = await ini.scsi(Buffer.alloc(6), { lun });
    if (tur.status === 0) return ini;
    if (i === 4)
      throw new Error(`write_load: TEST UNIT READY: status ${tur.status} ${tur.sense.toString("hex")}`);
  }
}

const sessions = await Promise.all(Array.from({ length: depth }, (_, i) => session(i)));
// READ CAPACITY(16), SBC-3 5.16: last LBA at bytes 0-7, block length at 8-11.
const cap = await sessions[0].scsi(Buffer.from([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]), {
  lun,
  read: 32,
});
if (cap.status !== 0) throw new Error(`write_load: READ CAPACITY(16): status ${cap.status}`);
const blockSize = cap.data.readUInt32BE(8);
const blocks = Number(cap.data.readBigUInt64BE(0)) + 1;
if (ioBytes % blockSize !== 0)
  throw new Error(`write_load: --bs ${ioBytes} is not a multiple of ${blockSize}`);
const perIo = ioBytes / blockSize;
const payload = randomBytes(ioBytes);

let cursor = 0;
let ios = 0;
const start = process.hrtime.bigint();
const deadline = start + BigInt(seconds) * 1_000_000_000n;

async function worker(ini: RawInitiator): Promise<void> {
  while (process.hrtime.bigint() < deadline) {
    if (cursor + perIo > blocks) cursor = 0;
    const lba = cursor;
    cursor += perIo;
    const r = reading
      ? await ini.scsi(rw16(0x88, lba, perIo), { lun, read: ioBytes })
      : await ini.scsi(rw16(0x8a, lba, perIo), { lun, write: payload });
    if (r.status !== 0)
      throw new Error(
        `write_load: ${reading ? "READ" : "WRITE"}(16) at LBA ${lba}: status ${r.status} sense ${r.sense.toString("hex")}`,
      );
    ios++;
  }
}

await Promise.all(sessions.map(worker));
const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
for (const ini of sessions) {
  await ini.logout().catch(() => undefined);
  ini.close();
}
process.stdout.write(
  `${JSON.stringify({
    op: reading ? "read" : "write",
    bs: ioBytes,
    depth,
    seconds: Number(elapsed.toFixed(2)),
    ios,
    mbs: Number(((ios * ioBytes) / elapsed / 1e6).toFixed(1)),
    iops: Math.round(ios / elapsed),
  })}\n`,
);
