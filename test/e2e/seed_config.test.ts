/**
 * Issue #2 acceptance: the seed's [iSCSI], [PortalGroup1], [InitiatorGroup1], [TargetNode1], [Malloc] and
 * [AIO] sections (fixtures/iscsi.drbd_conf.in, a copy of the seed) serve as written, with only the
 * machine-specific values substituted: the portal address (→ 127.0.0.1:PORT), the AIO file and the
 * AuthFile (→ a temp dir). [TCMUR]/[BIO] and the LUNs on them belong to issue #3 and are left out.
 *
 * Checked with libiscsi's own tools: CHAP with the right secret works and a wrong one is refused
 * (AuthMethod Auto lets the initiator choose CHAP), discovery lists the target, the seed's Netmask
 * (192.168.1.0/24) refuses a loopback initiator, and required header digests are enforced.
 * libiscsi 1.19 offers DataDigest=None only, so a target requiring data digests must refuse it; data
 * digests themselves are exercised by the iSCSI layer's raw-PDU tests (test/iscsi).
 */
import assert from "node:assert/strict";
import { readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { cleanup, makeTempDir, run, startServer, stopCleanly, type RunningServer } from "./harness.js";

const SEED = fileURLToPath(new URL("../../../test/e2e/fixtures/iscsi.drbd_conf.in", import.meta.url));
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
  let text = sections(seed, ["Malloc", "AIO", "iSCSI", "PortalGroup1", "InitiatorGroup1", "TargetNode1"]);
  const replace = (from: RegExp, to: string): void => {
    assert.match(text, from, `seed fixture no longer contains ${from}`);
    text = text.replace(from, to);
  };
  replace(/Portal DA1 192\.168\.1\.23:3260/, `Portal DA1 127.0.0.1:${port}`);
  replace(/AIO \/tmp\/myfile AIO0 4096/, `AIO ${join(dir, "myfile")} AIO0 4096`);
  replace(/AuthFile \/usr\/local\/etc\/spdk\/auth\.conf/, `AuthFile ${join(dir, "auth.conf")}`);
  replace(/ {2}LUN[2-5] \S+\n/g, ""); // TCMUR/BIO devices: issue #3
  if (edits.netmask) replace(/Netmask 192\.168\.1\.0\/24/, `Netmask ${edits.netmask}`);
  if (edits.useDigest) replace(/UseDigest Auto/, `UseDigest ${edits.useDigest}`);
  if (edits.authMethod) replace(/AuthMethod Auto/, `AuthMethod ${edits.authMethod}`);
  return text;
}

describe("the seed config, served as written", () => {
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
      assert.match(lun0.stdout, /Product identification:\s*Malloc disk/i);
      const lun1 = await run("iscsi-readcapacity16", [`iscsi://user1%secret1@127.0.0.1:${port}/${IQN}/1`]);
      assert.equal(lun1.code, 0, lun1.stderr);
      assert.match(lun1.stdout, /Logical Block Length:\s*4096/i);
      assert.match(lun1.stdout, /Returned Logical Block Address:\s*4095\b/i); // 16 MiB / 4096 - 1
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

  it("refuses an initiator outside the seed's Netmask 192.168.1.0/24", async () => {
    await withServer({}, async (_s, port) => {
      const r = await run("iscsi-inq", [`iscsi://user1%secret1@127.0.0.1:${port}/${IQN}/0`]);
      assert.notEqual(r.code, 0, "a 127.0.0.1 initiator logged in through Netmask 192.168.1.0/24");
    });
  });

  it("enforces UseDigest Header, and refuses libiscsi (no data digest) under UseDigest Header Data", async () => {
    await withServer({ netmask: "127.0.0.1/32", useDigest: "Header" }, async (_s, port) => {
      const url = `iscsi://127.0.0.1:${port}/${IQN}/0`;
      const crc = await run("iscsi-inq", [`${url}?header_digest=crc32c`]);
      assert.equal(crc.code, 0, crc.stderr);
      const none = await run("iscsi-inq", [`${url}?header_digest=none`]);
      assert.notEqual(none.code, 0, "logged in without the required header digest");
    });
    await withServer({ netmask: "127.0.0.1/32", useDigest: "Header Data" }, async (_s, port) => {
      const r = await run("iscsi-inq", [`iscsi://127.0.0.1:${port}/${IQN}/0?header_digest=crc32c`]);
      assert.notEqual(r.code, 0, "logged in with DataDigest=None although the target requires CRC32C");
    });
  });
});
