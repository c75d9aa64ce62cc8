/**
 * A bad config stops the server before it listens, with `usertgt: FILE:LINE: what was expected` on
 * stderr and a non-zero exit; `usertgt check` reports the same without starting anything.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cleanup, makeTempDir, pickPorts, runCli } from "./harness.js";

const GOOD = (port: number): string => `[Malloc]
  NumberOfLuns 1
  LunSizeInMB 4
[PortalGroup1]
  Portal P 127.0.0.1:${port}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName errors
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 Malloc0
`;

describe("config errors at start-up", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("cfgerr");
  });
  after(async () => {
    await cleanup(dir);
  });

  const cases: [string, (good: string) => string, (file: string) => string][] = [
    [
      "a LUN naming a missing bdev",
      (g) => g.replace("LUN0 Malloc0", "LUN0 Malloc7"),
      (f) => `${f}:12: LUN0 names block device "Malloc7", which no section defines (defined: Malloc0)`,
    ],
    [
      "an unknown key",
      (g) => g.replace("  LunSizeInMB 4\n", "  LunSizeInMB 4\n  LunSize 4\n"),
      (f) => `${f}:4: unknown key LunSize in [Malloc]; expected one of: NumberOfLuns, LunSizeInMB, BlockSize`,
    ],
    [
      "an unknown section",
      (g) => `[Frobnicator]\n${g}`,
      (f) =>
        `${f}:1: unknown section [Frobnicator]; expected one of: Global, Bdev, iSCSI, PortalGroupN, InitiatorGroupN, TargetNodeN, Malloc, AIO, TCMUR, BIO`,
    ],
    [
      "a malformed portal",
      (g) => g.replace(/127\.0\.0\.1:\d+/, "127.0.0.1:port"),
      (f) => `${f}:5: Portal port expects an integer from 0 to 65535, got "port"`,
    ],
    [
      "an unterminated quote",
      (g) => g.replace("TargetName errors", 'TargetName "errors'),
      (f) => `${f}:10: unterminated " quote in value`,
    ],
  ];
  for (const [what, edit, message] of cases) {
    it(`serve and check refuse ${what} with file:line`, async () => {
      const file = join(dir, `${what.replace(/\W+/g, "_")}.conf`);
      const [port] = await pickPorts(1);
      await writeFile(file, edit(GOOD(port)));
      const served = await runCli(["serve", "-c", file]);
      assert.equal(served.code, 2, served.stderr);
      assert.equal(served.stderr.trim(), `usertgt: ${message(file)}`);
      assert.doesNotMatch(served.stderr, /listening on/);
      const checked = await runCli(["check", "-c", file]);
      assert.equal(checked.code, 2);
      assert.equal(checked.stderr.trim(), `usertgt: ${message(file)}`);
    });
  }

  it("a missing config file is named", async () => {
    const file = join(dir, "absent.conf");
    const r = await runCli(["serve", "-c", file]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`^usertgt: ${file}: cannot read the config file: ENOENT`));
  });

  it("check accepts a good config and lists notices", async () => {
    const file = join(dir, "good.conf");
    await writeFile(file, `[Global]\n  NoPci Yes\n  ReactorMask 0x3\n${GOOD(3260)}`);
    const r = await runCli(["check", "-c", file]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`usertgt: notice: ${file}:2: \\[Global\\] NoPci is an SPDK setting`));
    assert.match(
      r.stderr,
      /OK, 1 block devices, targets: iqn\.2016-06\.io\.spdk:errors \(1 LUN\); runs on CPUs 0-1 \(ReactorMask\)/,
    );
  });

  it("a portal already in use fails start-up with exit 1 and closes what it opened", async () => {
    const [port] = await pickPorts(1);
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(port, "127.0.0.1", resolve));
    try {
      const file = join(dir, "busy.conf");
      await writeFile(file, GOOD(port));
      const r = await runCli(["serve", "-c", file]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /usertgt: start-up failed: .*EADDRINUSE/);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  const DRBD_RES = (net: string, address = "127.0.0.1:7951"): string => `resource r0 {
  net { ${net} }
  on alpha { address ${address};
    volume 0 { device minor 0; disk /UMCfuse/dev/ram0; meta-disk internal; } }
  on beta { address 127.0.0.2:7951;
    volume 0 { device minor 0; disk /UMCfuse/dev/ram0; meta-disk internal; } }
}
`;
  const drbdCases: [string, string, (file: string) => string][] = [
    [
      "an IPv4 address with an octet over 255",
      DRBD_RES("protocol C;", "300.1.1.1:7951"),
      (f) => `${f}:3: expected an IPv4 address, got '300.1.1.1:7951'`,
    ],
    [
      "a verify-alg the kernel has no hash for",
      DRBD_RES("verify-alg rot13;"),
      (f) => `${f}:2: verify-alg rot13 is not one of sha1, md5, sha256, crc32c`,
    ],
    [
      "a cram-hmac-alg that is no hash",
      DRBD_RES('cram-hmac-alg md99; shared-secret "s";'),
      (f) => `${f}:2: cram-hmac-alg md99 is not a known hash (e.g. sha1, sha256, md5)`,
    ],
  ];
  for (const [what, text, message] of drbdCases) {
    it(`serve refuses a DRBD config with ${what}: FILE:LINE, exit 2`, async () => {
      const file = join(dir, `${what.replace(/\W+/g, "_")}.res`);
      await writeFile(file, text);
      const r = await runCli([
        "serve",
        "--no-rpc",
        "--no-fuse",
        "--drbd-config",
        file,
        "--node-name",
        "alpha",
      ]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim(), `usertgt: ${message(file)}`);
    });
  }

  it("an empty config with --no-rpc has nothing to serve: exit 2, never 'ready'", async () => {
    const file = join(dir, "empty.conf");
    await writeFile(file, "");
    const r = await runCli(["serve", "-c", file, "--no-rpc", "--no-fuse", "--log-level", "silent"]);
    assert.equal(r.code, 2, r.stderr);
    assert.doesNotMatch(r.stderr, /ready/);
    assert.match(r.stderr, new RegExp(`usertgt: ${file}: nothing to serve`));
  });

  it("--version prints the package version", async () => {
    const r = await runCli(["--version"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout.trim(), /^\d+\.\d+\.\d+$/);
  });
});
