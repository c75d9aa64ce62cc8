/**
 * Issue #4 across two servers: one .res with `on alpha` (127.0.0.1) and `on beta` (127.0.0.2), each
 * server backing drbd2 with its own TCMUR file device. alpha's BIO runs `drbdadm_up_primary` (fresh
 * metadata → primary --force), beta's runs `drbdadm_up` (Secondary); the initial full sync runs, a
 * pattern written through alpha's LUN reaches beta's backing file at the same offset, beta's LUN reads
 * it too and refuses writes. DRBD ports 7800-7809, iSCSI ports 3420-3439.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RawInitiator } from "../support/raw_initiator.js";
import { freePorts } from "./drbd_ports.js";
import { cleanup, makeTempDir, runCli, startServer, stopCleanly, type RunningServer } from "./harness.js";

const IQN = "iqn.2016-06.io.spdk:drbdpair";
const MB = 16;
const BS = 512;

function res(drbdPorts: number[]): string {
  return `resource r0 {
    net { protocol C; }
    disk { resync-rate 100M; }
    on alpha {
        address 127.0.0.1:${drbdPorts[0]};
        volume 0 { device drbd2 minor 2; disk "/UMCfuse/dev/file_b"; meta-disk internal; }
    }
    on beta {
        address 127.0.0.2:${drbdPorts[1]};
        volume 0 { device drbd2 minor 2; disk "/UMCfuse/dev/file_b"; meta-disk internal; }
    }
}
`;
}

function config(host: string, port: number, file: string, helper: string): string {
  return `[TCMUR]
  TCMUR 2 file_b /file/${file} size=${MB}M bs=${BS}
[BIO]
  BIO bio1 /UMCfuse/dev/drbd2 ${helper} r0 /UMCfuse/dev/file_b
[PortalGroup1]
  Portal A ${host}:${port}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask ${host}/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  LUN0 bio1
`;
}

function rw10(opcode: 0x28 | 0x2a, lba: number, blocks: number): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = opcode;
  cdb.writeUInt32BE(lba, 2);
  cdb.writeUInt16BE(blocks, 7);
  return cdb;
}

async function session(host: string, port: number): Promise<RawInitiator> {
  const ini = await RawInitiator.connect(port, host, host);
  const login = await ini.login({ targetName: IQN, initiatorName: "iqn.2024-01.test:drbdpair" });
  assert.equal(login.statusClass, 0, `login status ${login.statusClass}/${login.statusDetail}`);
  for (let i = 0; i < 4; i++) {
    const tur = await ini.scsi(Buffer.alloc(6));
    if (tur.status === 0) return ini;
    assert.equal(tur.sense[2] & 0x0f, 0x06, `TEST UNIT READY: ${tur.status} ${tur.sense.toString("hex")}`);
  }
  assert.fail("unit attentions did not clear after 4 TEST UNIT READY");
}

async function statusOf(sock: string): Promise<string> {
  const r = await runCli(["drbdadm", "-s", sock, "status", "r0"]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

async function until(what: string, fn: () => Promise<boolean>, ms = 60000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`${what}: not reached in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("two servers replicating one DRBD resource", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("drbd-pair");
  });
  after(async () => {
    await cleanup(dir);
  });

  it("sync, replicate an iSCSI write, Secondary refuses writes", { timeout: 5 * 60 * 1000 }, async () => {
    const drbdPorts = await freePorts(2, 7800, 7809);
    const [pa, pb] = await freePorts(2, 3420, 3439);
    await writeFile(join(dir, "r0.res"), res(drbdPorts));
    const node = (name: string, host: string, port: number, helper: string) =>
      startServer(() => config(host, port, join(dir, `${name}.img`), helper), {
        dir: join(dir),
        args: [
          "--no-fuse",
          "--drbd-config",
          join(dir, "r0.res"),
          "--node-name",
          name,
          "--rpc-socket",
          join(dir, `${name}.sock`),
          "--state-dir",
          join(dir, `state-${name}`),
        ],
      });
    const sa = join(dir, "alpha.sock");
    const sb = join(dir, "beta.sock");
    let a: RunningServer | undefined;
    let b: RunningServer | undefined;
    const pattern = randomBytes(64 * 1024);
    const lba = 1000;
    try {
      a = await node("alpha", "127.0.0.1", pa, "drbdadm_up_primary");
      assert.match(
        await statusOf(sa),
        /^r0 role:Primary\n {2}disk:UpToDate\n {2}peer connection:Connecting\n$/,
      );
      b = await node("beta", "127.0.0.2", pb, "drbdadm_up");
      await until("initial sync", async () => /peer-disk:UpToDate/.test(await statusOf(sa)));
      assert.equal(
        await statusOf(sa),
        "r0 role:Primary\n  disk:UpToDate\n  peer role:Secondary\n    replication:Established peer-disk:UpToDate\n",
      );
      await until("beta UpToDate", async () => /disk:UpToDate\n/.test(await statusOf(sb)));
      assert.equal(
        await statusOf(sb),
        "r0 role:Secondary\n  disk:UpToDate\n  peer role:Primary\n    replication:Established peer-disk:UpToDate\n",
      );

      const ia = await session("127.0.0.1", pa);
      const w = await ia.scsi(rw10(0x2a, lba, pattern.length / BS), { write: pattern });
      assert.equal(w.status, 0, `WRITE on the Primary: sense ${w.sense.toString("hex")}`);
      ia.close();

      const ib = await session("127.0.0.2", pb);
      const r = await ib.scsi(rw10(0x28, lba, pattern.length / BS), { read: pattern.length });
      assert.equal(r.status, 0, `READ on the Secondary: sense ${r.sense.toString("hex")}`);
      assert.ok(r.data.equals(pattern), "the Secondary reads what was written on the Primary");
      const refused = await ib.scsi(rw10(0x2a, lba, 1), { write: Buffer.alloc(BS, 0x5a) });
      assert.equal(refused.status, 2, "WRITE on the Secondary: CHECK CONDITION");
      assert.equal(refused.sense[2] & 0x0f, 0x07, `DATA PROTECT, got sense ${refused.sense.toString("hex")}`);
      ib.close();
    } finally {
      if (b) await stopCleanly(b);
      if (a) await stopCleanly(a);
    }
    // beta's backing file holds the pattern at the same offset (internal metadata sits at the end).
    const fh = await open(join(dir, "beta.img"), "r");
    try {
      const got = Buffer.alloc(pattern.length);
      await fh.read(got, 0, got.length, lba * BS);
      assert.ok(got.equals(pattern), "the Secondary's lower device holds the Primary's write");
    } finally {
      await fh.close();
    }
  });
});
