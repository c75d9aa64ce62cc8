// Writes or reads usertgt's drbd0 LUN over iSCSI (run inside the netns, after `npx tsc -p .`), using the
// project's raw test initiator. Prints the md5 of what was written / read.
//   node bench/drbd_kernel_peer/iscsi_io.mjs write LBA FILE     # FILE's bytes (multiple of 512) at LBA
//   node bench/drbd_kernel_peer/iscsi_io.mjs read LBA BLOCKS [OUT]
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { RawInitiator } from "../../dist/test/support/raw_initiator.js";

const [op, lbaArg, arg, out] = process.argv.slice(2);
const HOST = process.env.UTGT_ADDR ?? "10.77.0.1";
const PORT = Number(process.env.UTGT_ISCSI_PORT ?? 3490);
// UTGT_LUN=1: the second LUN (the second volume's drbd1 in the VOLUMES=2 run).
const LUN = Number(process.env.UTGT_LUN ?? 0);
const lba = Number(lbaArg);
const md5 = (b) => createHash("md5").update(b).digest("hex");
const cdb = (opcode, at, blocks) => {
  const c = Buffer.alloc(10);
  c[0] = opcode;
  c.writeUInt32BE(at, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
};

const ini = await RawInitiator.connect(PORT, HOST);
const login = await ini.login({
  targetName: "iqn.2016-06.io.spdk:kpeer",
  initiatorName: "iqn.2026-11.io.usertgt:kpeer-bench",
});
if (login.statusClass !== 0) throw new Error(`login ${login.statusClass}/${login.statusDetail}`);
for (let i = 0; i < 4 && (await ini.scsi(Buffer.alloc(6), { lun: LUN })).status !== 0; i++);
const CHUNK = 128; // blocks of 512 per command
if (op === "write") {
  const data = readFileSync(arg);
  for (let off = 0; off < data.length; off += CHUNK * 512) {
    const part = data.subarray(off, off + CHUNK * 512);
    const r = await ini.scsi(cdb(0x2a, lba + off / 512, part.length / 512), { write: part, lun: LUN });
    if (r.status !== 0)
      throw new Error(`WRITE(10) at ${lba + off / 512}: status ${r.status} sense ${r.sense.toString("hex")}`);
  }
  console.log(`write lba=${lba} bytes=${data.length} md5=${md5(data)}`);
} else {
  const blocks = Number(arg);
  const parts = [];
  for (let b = 0; b < blocks; b += CHUNK) {
    const n = Math.min(CHUNK, blocks - b);
    const r = await ini.scsi(cdb(0x28, lba + b, n), { read: n * 512, lun: LUN });
    if (r.status !== 0) throw new Error(`READ(10) at ${lba + b}: status ${r.status}`);
    parts.push(r.data);
  }
  const data = Buffer.concat(parts);
  if (out) writeFileSync(out, data);
  console.log(`read lba=${lba} bytes=${data.length} md5=${md5(data)}`);
}
ini.close();
