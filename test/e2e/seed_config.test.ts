/**
 * The reference deployment's [iSCSI], [PortalGroup1], [InitiatorGroup1], [TargetNode1], [Malloc] and
 * [AIO] sections (fixtures/iscsi.drbd_conf.in, a copy of its config) serve as written, with only the
 * machine-specific values substituted: the portal address (→ 127.0.0.1:PORT), the AIO file and the
 * AuthFile (→ a temp dir). [TCMUR]/[BIO] and the LUNs on them are covered by seed_devtree.test.ts and left out.
 *
 * Checked with libiscsi's own tools: CHAP with the right secret works and a wrong one is refused
 * (AuthMethod Auto lets the initiator choose CHAP), discovery lists the target, the config's Netmask
 * (192.168.1.0/24) refuses a loopback initiator, and required header digests are enforced.
 * libiscsi 1.19 offers DataDigest=None only (and always HeaderDigest=None,CRC32C), so digest refusals
 * and data digests are checked with the project's raw-PDU initiator (test/support/raw_initiator.ts).
 */
import assert from "node:assert/strict";
import { readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RawInitiator } from "../support/raw_initiator.js";
import { cleanup, makeTempDir, run, startServer, stopCleanly, type RunningServer } from "./harness.js";
import { ConfigEditor, SEED_FIXTURE as SEED } from "./seed_fixture.js";

const IQN = "iqn.2016-06.io.spdk:disk1";
const AUTH = `[AuthGroup1]
  Comment "seed test secrets"
  Auth "user1" "secret1"
  Auth "user2" "secret2" "tuser" "tsecret"
`;

/** Keep the named sections of an INI text, as written. */
function sections(text: string, keep: readonly string[]): string {
  const out: string[] = [];
  let keeping = false;
  for (const line of text.split("\n")) {
    const m = /^\[([^\]]+)\]/.exec(line);
    if (m) keeping = keep.includes(m[1]);
    if (keeping) out.push(line);
  }
  return out.join("\n") + "\n";
}

interface Edits {
  netmask?: string;
  useDigest?: string;
  authMethod?: string;
}

function seedConfig(seed: string, port: number, dir: string, edits: Edits = {}): string {
  const cfg = new ConfigEditor(
    sections(seed, ["Malloc", "AIO", "iSCSI", "PortalGroup1", "InitiatorGroup1", "TargetNode1"]),
  )
    .replace(/Portal DA1 192\.168\.1\.23:3260/, `Portal DA1 127.0.0.1:${port}`)
    .replace(/AIO \/tmp\/myfile AIO0 4096/, `AIO ${join(dir, "myfile")} AIO0 4096`)
    .replace(/AuthFile \/usr\/local\/etc\/spdk\/auth\.conf/, `AuthFile ${join(dir, "auth.conf")}`)
    .replace(/ {2}LUN[2-5] \S+\n/g, ""); // TCMUR/BIO devices: seed_devtree and drbd_seed
  if (edits.netmask) cfg.replace(/Netmask 192\.168\.1\.0\/24/, `Netmask ${edits.netmask}`);
  if (edits.useDigest) cfg.replace(/^ {2}UseDigest Auto$/m, `  UseDigest ${edits.useDigest}`);
  if (edits.authMethod) cfg.replace(/^ {2}AuthMethod Auto$/m, `  AuthMethod ${edits.authMethod}`);
  return cfg.text;
}

describe("the reference config, served as written", () => {
  let seed: string;
  let dir: string;
  before(async () => {
    seed = await readFile(SEED, "utf8");
    dir = await makeTempDir("seed");
    await writeFile(join(dir, "auth.conf"), AUTH);
    await writeFile(join(dir, "myfile"), "");
    await truncate(join(dir, "myfile"), 16 * 1024 * 1024); // AIO without a size uses the file's size
  });
  after(async () => {
    await cleanup(dir);
  });

  async function withServer(
    edits: Edits,
    body: (s: RunningServer, port: number) => Promise<void>,
  ): Promise<void> {
    const server = await startServer((ports, d) => seedConfig(seed, ports[0], d, edits), { dir });
    try {
      await body(server, server.ports[0]);
    } finally {
      await stopCleanly(server);
    }
  }

  it("serves LUN0 (Malloc0) and LUN1 (AIO0) with the right CHAP secret, and lists the target in discovery", async () => {
    await withServer({ netmask: "127.0.0.1/32" }, async (_s, port) => {
      const lun0 = await run("iscsi-inq", [`iscsi://user1%secret1@127.0.0.1:${port}/${IQN}/0`]);
      assert.equal(lun0.code, 0, lun0.stderr);
      assert.match(lun0.stdout, /^Product:Malloc disk/m);
      const lun1 = await run("iscsi-readcapacity16", [`iscsi://user1%secret1@127.0.0.1:${port}/${IQN}/1`]);
      assert.equal(lun1.code, 0, lun1.stderr);
      assert.match(lun1.stdout, /^LOGICAL BLOCK LENGTH IN BYTES:4096$/m);
      assert.match(lun1.stdout, /^RETURNED LOGICAL BLOCK ADDRESS:4095$/m); // 16 MiB / 4096 - 1
      // No credentials: AuthMethod Auto leaves CHAP to the initiator.
      const plain = await run("iscsi-inq", [`iscsi://127.0.0.1:${port}/${IQN}/0`]);
      assert.equal(plain.code, 0, plain.stderr);
      const ls = await run("iscsi-ls", ["-s", `iscsi://127.0.0.1:${port}`]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.match(
        ls.stdout,
        new RegExp(`Target:${IQN.replace(/\./g, "\\.")} Portal:127\\.0\\.0\\.1:${port},1`),
      );
      assert.match(ls.stdout, /Lun:0\s+Type:DIRECT_ACCESS/);
      assert.match(ls.stdout, /Lun:1\s+Type:DIRECT_ACCESS/);
    });
  });

  it("refuses a wrong CHAP secret and an unknown CHAP user", async () => {
    await withServer({ netmask: "127.0.0.1/32" }, async (_s, port) => {
      const wrong = await run("iscsi-inq", [`iscsi://user1%wrongsecret@127.0.0.1:${port}/${IQN}/0`]);
      assert.notEqual(wrong.code, 0, "a wrong secret logged in");
      const stranger = await run("iscsi-inq", [`iscsi://nobody%secret1@127.0.0.1:${port}/${IQN}/0`]);
      assert.notEqual(stranger.code, 0, "an unknown user logged in");
    });
  });

  it("requires CHAP with AuthMethod CHAP, and does mutual CHAP with AuthMethod Mutual", async () => {
    await withServer({ netmask: "127.0.0.1/32", authMethod: "CHAP" }, async (_s, port) => {
      const none = await run("iscsi-inq", [`iscsi://127.0.0.1:${port}/${IQN}/0`]);
      assert.notEqual(none.code, 0, "logged in without CHAP");
      const ok = await run("iscsi-inq", [`iscsi://user1%secret1@127.0.0.1:${port}/${IQN}/0`]);
      assert.equal(ok.code, 0, ok.stderr);
    });
    await withServer({ netmask: "127.0.0.1/32", authMethod: "Mutual" }, async (_s, port) => {
      const base = `iscsi://user2%secret2@127.0.0.1:${port}/${IQN}/0`;
      const ok = await run("iscsi-inq", [`${base}?target_user=tuser&target_password=tsecret`]);
      assert.equal(ok.code, 0, ok.stderr);
      const badTarget = await run("iscsi-inq", [`${base}?target_user=tuser&target_password=notthetarget`]);
      assert.notEqual(
        badTarget.code,
        0,
        "the initiator accepted a target that answered with the wrong secret",
      );
    });
  });

  it("refuses an initiator outside the config's Netmask 192.168.1.0/24", async () => {
    await withServer({}, async (_s, port) => {
      const r = await run("iscsi-inq", [`iscsi://user1%secret1@127.0.0.1:${port}/${IQN}/0`]);
      assert.notEqual(r.code, 0, "a 127.0.0.1 initiator logged in through Netmask 192.168.1.0/24");
    });
  });

  /** Operational keys for the raw initiator, with the digests to offer. */
  function keys(header: string, data: string): [string, string][] {
    return [
      ["HeaderDigest", header],
      ["DataDigest", data],
      ["MaxRecvDataSegmentLength", "65536"],
      ["InitialR2T", "Yes"],
      ["ImmediateData", "Yes"],
      ["MaxBurstLength", "262144"],
      ["FirstBurstLength", "65536"],
      ["ErrorRecoveryLevel", "0"],
    ];
  }

  async function rawLogin(
    port: number,
    header: string,
    data: string,
  ): Promise<{ ini: RawInitiator; status: number }> {
    const ini = await RawInitiator.connect(port);
    const r = await ini.login({ targetName: IQN, keys: keys(header, data) });
    return { ini, status: (r.statusClass << 8) | r.statusDetail };
  }

  it("enforces UseDigest Header and UseDigest Header Data", async () => {
    // libiscsi 1.19 always offers HeaderDigest=None,CRC32C and DataDigest=None (its URL's header_digest
    // argument is not honoured), so refusals are checked with the raw-PDU initiator.
    await withServer({ netmask: "127.0.0.1/32", useDigest: "Header" }, async (_s, port) => {
      const inq = await run("iscsi-inq", [`iscsi://127.0.0.1:${port}/${IQN}/0`]);
      assert.equal(inq.code, 0, inq.stderr);
      const none = await rawLogin(port, "None", "None");
      none.ini.close();
      assert.equal(
        none.status >> 8,
        2,
        `HeaderDigest=None login answered 0x${none.status.toString(16)}, expected an initiator error`,
      );
      const crc = await rawLogin(port, "CRC32C,None", "None");
      assert.equal(crc.status, 0);
      assert.equal(crc.ini.headerDigest, true, "target did not choose CRC32C");
      const tur = await crc.ini.scsi(Buffer.alloc(6));
      assert.ok(
        tur.status === 0 || tur.status === 2,
        `TEST UNIT READY with header digests: status ${tur.status}`,
      );
      crc.ini.close();
    });
    await withServer({ netmask: "127.0.0.1/32", useDigest: "Header Data" }, async (_s, port) => {
      const inq = await run("iscsi-inq", [`iscsi://127.0.0.1:${port}/${IQN}/0`]);
      assert.notEqual(
        inq.code,
        0,
        "libiscsi logged in with DataDigest=None although the target requires CRC32C",
      );
      const both = await rawLogin(port, "CRC32C", "CRC32C");
      try {
        assert.equal(both.status, 0);
        assert.equal(both.ini.dataDigest, true);
        // Data-Out and Data-In both carry data digests: write 64 KiB, read it back.
        const data = Buffer.alloc(65536, 0xa5);
        const cdb = (op: number): Buffer => {
          const c = Buffer.alloc(10);
          c[0] = op;
          c.writeUInt32BE(64, 2);
          c.writeUInt16BE(65536 / 4096, 7);
          return c;
        };
        let w = await both.ini.scsi(cdb(0x2a), { write: data });
        if (w.status === 2) w = await both.ini.scsi(cdb(0x2a), { write: data }); // POWER ON unit attention
        assert.equal(w.status, 0);
        const r = await both.ini.scsi(cdb(0x28), { read: data.length });
        assert.equal(r.status, 0);
        assert.ok(r.data.equals(data));
      } finally {
        both.ini.close();
      }
    });
  });
});
