import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { defaultConfig } from "./default.js";
import { ConfigError } from "./errors.js";
import { loadSpdkConfig, parseSpdkConfig, type SpdkConfig } from "./spdk_config.js";

/** The reference SPDK+DRBD deployment's etc/spdk/iscsi.drbd_conf.in, active lines as written (comments trimmed). */
const SEED = `[Global]
  #SharedMemoryID 0
[Bdev]
  #BdevIoPoolSize 65536
[TCMUR]
  TCMUR 0 ram_a  /file//tmp/tcmur_ram00
  TCMUR 1 file_a /file//tmp/tcmur_file00
  TCMUR 2 file_b /file//tmp/tcmur_file01
  TCMUR 3 ram_b  /file//tmp/tcmur_ram01
[BIO]
  BIO bio0 /UMCfuse/dev/file_b
  BIO bio1 /UMCfuse/dev/drbd2 drbdadm_up_primary spdk /UMCfuse/dev/ram_b
[Malloc]
  NumberOfLuns 1
  LunSizeInMB 128
  BlockSize 4096
[AIO]
  AIO /tmp/myfile AIO0 4096
[iSCSI]
  NodeBase "iqn.2016-06.io.spdk"
  AuthFile /usr/local/etc/spdk/auth.conf
  Timeout 30
  DiscoveryAuthMethod Auto
  #MaxSessions 128
  DefaultTime2Wait 2
  DefaultTime2Retain 60
  FirstBurstLength 8192
  ImmediateData Yes
  ErrorRecoveryLevel 0
[PortalGroup1]
  Portal DA1 192.168.1.23:3260
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 192.168.1.0/24
[TargetNode1]
  TargetName disk1
  TargetAlias "Data Disk1"
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod Auto
  AuthGroup AuthGroup1
  UseDigest Auto
  QueueDepth 64
  LUN0 Malloc0
  LUN1 AIO0
  LUN2 ram_a
  LUN3 file_a
  LUN4 bio0
  LUN5 bio1
`;

const AUTH = `[AuthGroup1]
  Comment "first group"
  Auth "user1" "secret1"
  Auth "user2" "secret2" "tuser" "tsecret"
`;

function parse(text: string, auth?: string): SpdkConfig {
  return parseSpdkConfig(text, "test.conf", auth === undefined ? undefined : () => auth, "/base");
}

/** Minimal valid config; `extra` is appended inside or after it. */
const MINIMAL = `[Malloc]
  NumberOfLuns 2
  LunSizeInMB 1
[PortalGroup1]
  Portal P 127.0.0.1:3350
[InitiatorGroup1]
  InitiatorName ANY
  Netmask ANY
[TargetNode1]
  TargetName disk1
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 Malloc0
`;

function expectError(text: string, message: string, auth?: string): void {
  assert.throws(
    () => parse(text, auth),
    (err: unknown) => {
      if (!(err instanceof ConfigError)) return false;
      assert.equal(err.message, message);
      return true;
    },
  );
}

describe("SPDK config model", () => {
  it("reads the reference config as written", () => {
    const c = parse(SEED, AUTH);
    assert.equal(c.globals.nodeBase, "iqn.2016-06.io.spdk");
    assert.equal(c.globals.nopTimeoutSec, 30);
    assert.equal(c.globals.defaultTime2Retain, 60);
    assert.equal(c.globals.defaultTime2Wait, 2);
    assert.equal(c.globals.firstBurstLength, 8192);
    assert.equal(c.globals.immediateData, true);
    assert.deepEqual(c.globals.discoveryAuth, { disableChap: false, requireChap: false, mutualChap: false });
    assert.equal(c.authFile, "/usr/local/etc/spdk/auth.conf");
    assert.deepEqual(c.authGroups, [
      {
        tag: 1,
        secrets: [
          { user: "user1", secret: "secret1" },
          { user: "user2", secret: "secret2", muser: "tuser", msecret: "tsecret" },
        ],
      },
    ]);
    assert.deepEqual(c.portalGroups, [{ tag: 1, portals: [{ host: "192.168.1.23", port: 3260 }] }]);
    assert.deepEqual(c.initiatorGroups, [{ tag: 1, initiators: ["ANY"], netmasks: ["192.168.1.0/24"] }]);
    assert.deepEqual(
      c.bdevs.map((b) => [b.kind, b.name]),
      [
        ["malloc", "Malloc0"],
        ["aio", "AIO0"],
        ["tcmur", "ram_a"],
        ["tcmur", "file_a"],
        ["tcmur", "file_b"],
        ["tcmur", "ram_b"],
        ["bio", "bio0"],
        ["bio", "bio1"],
      ],
    );
    const malloc = c.bdevs[0];
    assert.ok(malloc.kind === "malloc" && malloc.blockSize === 4096 && malloc.blockCount === 32768);
    const aio = c.bdevs[1];
    assert.ok(
      aio.kind === "aio" &&
        aio.path === "/tmp/myfile" &&
        aio.blockSize === 4096 &&
        aio.blockCount === undefined,
    );
    const t3 = c.bdevs[5];
    assert.ok(
      t3.kind === "tcmur" &&
        t3.minor === 3 &&
        t3.handler === "file" &&
        t3.cfgString === "/file//tmp/tcmur_ram01",
    );
    const bio1 = c.bdevs[7];
    assert.ok(bio1.kind === "bio");
    assert.equal(bio1.path, "/UMCfuse/dev/drbd2");
    assert.deepEqual(bio1.helper, ["drbdadm_up_primary", "spdk", "/UMCfuse/dev/ram_b"]);
    assert.equal(c.targetNodes.length, 1);
    const t = c.targetNodes[0];
    assert.equal(t.name, "iqn.2016-06.io.spdk:disk1");
    assert.equal(t.alias, "Data Disk1");
    assert.deepEqual(t.maps, [{ portalGroup: 1, initiatorGroup: 1 }]);
    assert.deepEqual(t.auth, { disableChap: false, requireChap: false, mutualChap: false });
    assert.equal(t.authGroup, 1);
    assert.deepEqual(t.digest, { headerRequired: false, dataRequired: false });
    assert.equal(t.queueDepth, 64);
    assert.deepEqual(
      t.luns.map((l) => [l.id, l.bdev]),
      [
        [0, "Malloc0"],
        [1, "AIO0"],
        [2, "ram_a"],
        [3, "file_a"],
        [4, "bio0"],
        [5, "bio1"],
      ],
    );
    assert.deepEqual(c.notices, []);
  });

  it("accepts SPDK-only [Global]/[Bdev]/[iSCSI] keys with a notice naming the line", () => {
    const c = parse(
      `[Global]\n  SharedMemoryID 0\n  NoPci Yes\n[Bdev]\n  BdevIoPoolSize 1\n[iSCSI]\n  MinConnectionsPerCore 4\n${MINIMAL}`,
    );
    assert.deepEqual(
      c.notices.map((n) => `${n.file}:${n.line}: ${n.message}`),
      [
        "test.conf:2: [Global] SharedMemoryID is an SPDK setting with no meaning for usertgt; ignored",
        "test.conf:3: [Global] NoPci is an SPDK setting with no meaning for usertgt; ignored",
        "test.conf:5: [Bdev] BdevIoPoolSize is an SPDK setting with no meaning for usertgt; ignored",
        "test.conf:7: [iSCSI] MinConnectionsPerCore is an SPDK setting with no meaning for usertgt; ignored",
      ],
    );
  });

  it("reads [Global] ReactorMask as the CPUs to run on, naming the line of a bad mask", () => {
    const c = parse(`[Global]\n  ReactorMask 0x5\n${MINIMAL}`);
    assert.deepEqual(c.reactorMask, { text: "0x5", cpus: [0, 2], line: 2 });
    assert.deepEqual(parse(`[Global]\n  ReactorMask [1-2]\n${MINIMAL}`).reactorMask?.cpus, [1, 2]);
    assert.equal(parse(MINIMAL).reactorMask, undefined);
    assert.throws(
      () => parse(`[Global]\n  ReactorMask 0xZ\n${MINIMAL}`),
      /test\.conf:2: ReactorMask: CPU mask "0xZ" is neither a hexadecimal mask/,
    );
  });

  it("maps every [iSCSI] key onto the iSCSI options", () => {
    const c = parse(
      `[iSCSI]
  NodeBase iqn.2001-04.com.example
  Timeout 0
  NopInInterval 10
  MaxSessions 4
  MaxConnectionsPerSession 3
  MaxQueueDepth 256
  DefaultTime2Wait 5
  DefaultTime2Retain 6
  FirstBurstLength 65536
  MaxBurstLength 262144
  MaxRecvDataSegmentLength 16384
  MaxOutstandingR2T 4
  ImmediateData No
  InitialR2T no
  AllowDuplicateIsid Yes
  LoginTimeout 7
  DiscoveryAuthMethod None
${MINIMAL}  QueueDepth 200
`,
    );
    const g = c.globals;
    assert.equal(g.nodeBase, "iqn.2001-04.com.example");
    assert.equal(c.targetNodes[0].name, "iqn.2001-04.com.example:disk1");
    assert.deepEqual(
      [g.nopTimeoutSec, g.nopInIntervalSec, g.maxSessions, g.maxConnectionsPerSession, c.maxQueueDepth],
      [Infinity, 10, 4, 3, 256],
    );
    assert.deepEqual(
      [g.defaultTime2Wait, g.defaultTime2Retain, g.firstBurstLength, g.maxBurstLength],
      [5, 6, 65536, 262144],
    );
    assert.deepEqual(
      [
        g.maxRecvDataSegmentLength,
        g.maxOutstandingR2T,
        g.immediateData,
        g.initialR2T,
        g.allowDuplicateIsid,
        g.loginTimeoutSec,
      ],
      [16384, 4, false, false, true, 7],
    );
    assert.deepEqual(g.discoveryAuth, { disableChap: true, requireChap: false, mutualChap: false });
    assert.equal(c.targetNodes[0].queueDepth, 200);
  });

  it("reads portals: default port, IPv6 in brackets, port 0, cpumask ignored with a notice", () => {
    const c = parse(
      MINIMAL.replace(
        "  Portal P 127.0.0.1:3350\n",
        "  Portal A 127.0.0.1\n  Portal B [::1]:3351\n  Portal C [::1]\n  Portal D localhost:0@0xF\n",
      ),
    );
    assert.deepEqual(c.portalGroups[0].portals, [
      { host: "127.0.0.1", port: 3260 },
      { host: "::1", port: 3351 },
      { host: "::1", port: 3260 },
      { host: "localhost", port: 0 },
    ]);
    assert.equal(c.notices.length, 1);
    assert.match(c.notices[0].message, /cpumask "0xF"/);
    assert.equal(c.notices[0].line, 8);
  });

  it("reads AuthMethod and UseDigest word combinations as SPDK does", () => {
    const withAuth = (method: string): SpdkConfig =>
      parse(
        `[iSCSI]\n  AuthFile a.conf\n${MINIMAL}  AuthMethod ${method}\n  AuthGroup AuthGroup1\n  UseDigest Header Data\n`,
        AUTH,
      );
    assert.deepEqual(withAuth("CHAP").targetNodes[0].auth, {
      disableChap: false,
      requireChap: true,
      mutualChap: false,
    });
    assert.deepEqual(withAuth("CHAP Mutual").targetNodes[0].auth, {
      disableChap: false,
      requireChap: true,
      mutualChap: true,
    });
    assert.deepEqual(withAuth("Mutual").targetNodes[0].auth, {
      disableChap: false,
      requireChap: true,
      mutualChap: true,
    });
    assert.deepEqual(withAuth("none").targetNodes[0].auth, {
      disableChap: true,
      requireChap: false,
      mutualChap: false,
    });
    assert.deepEqual(withAuth("Auto").targetNodes[0].digest, { headerRequired: true, dataRequired: true });
  });

  it("keeps a full iqn TargetName and sorts LUNs", () => {
    const c = parse(
      MINIMAL.replace("TargetName disk1", "TargetName iqn.2020-01.org.example:store").replace(
        "LUN0 Malloc0",
        "LUN7 Malloc1\n  LUN0 Malloc0",
      ),
    );
    assert.equal(c.targetNodes[0].name, "iqn.2020-01.org.example:store");
    assert.deepEqual(
      c.targetNodes[0].luns.map((l) => l.id),
      [0, 7],
    );
  });

  it("reads AIO size and relative paths", () => {
    const c = parse(`[AIO]\n  AIO data/f.img A 4096 8\n  AIO /abs/g.img B\n${MINIMAL}`);
    const [a, b] = c.bdevs.filter((x) => x.kind === "aio");
    assert.ok(
      a.kind === "aio" && a.path === "/base/data/f.img" && a.blockCount === 2048 && a.blockSize === 4096,
    );
    assert.ok(
      b.kind === "aio" && b.path === "/abs/g.img" && b.blockSize === 512 && b.blockCount === undefined,
    );
  });

  it("reads DirectIo: absent leaves the choice to the file's kind, Yes and No apply to every line", () => {
    const direct = (section: string): (boolean | undefined)[] =>
      parse(`[AIO]\n${section}  AIO /a.img A 4096\n  AIO /dev/loop9 B\n${MINIMAL}`)
        .bdevs.filter((x) => x.kind === "aio")
        .map((x) => (x.kind === "aio" ? x.direct : undefined));
    assert.deepEqual(direct(""), [undefined, undefined]);
    assert.deepEqual(direct("  DirectIo Yes\n"), [true, true]);
    assert.deepEqual(direct("  DirectIo No\n"), [false, false]);
  });

  const errors: [string, string, string, string?][] = [
    [
      "unknown section",
      `[Nonsense]\n${MINIMAL}`,
      "test.conf:1: unknown section [Nonsense]; expected one of: Global, Bdev, iSCSI, PortalGroupN, InitiatorGroupN, TargetNodeN, Malloc, AIO, TCMUR, BIO",
    ],
    [
      "misspelt section",
      `[ISCSI]\n${MINIMAL}`,
      "test.conf:1: unknown section [ISCSI] (did you mean [iSCSI]?); expected one of: Global, Bdev, iSCSI, PortalGroupN, InitiatorGroupN, TargetNodeN, Malloc, AIO, TCMUR, BIO",
    ],
    [
      "SPDK-only module",
      `[Nvme]\n  TransportID "trtype:PCIe" Nvme0\n${MINIMAL}`,
      "test.conf:1: section [Nvme] is an SPDK module that usertgt does not implement",
    ],
    [
      "unknown key",
      `[Global]\n  Frobnicate 1\n${MINIMAL}`,
      "test.conf:2: unknown key Frobnicate in [Global]; expected one of: ",
    ],
    [
      "LUN to a missing bdev",
      `${MINIMAL}  LUN1 Nope\n`,
      'test.conf:13: LUN1 names block device "Nope", which no section defines (defined: Malloc0, Malloc1)',
    ],
    [
      "bdev exported twice",
      `${MINIMAL}  LUN1 Malloc0\n`,
      'test.conf:13: block device "Malloc0" is already exported as LUN0 of [TargetNode1]',
    ],
    ["LUN id twice", `${MINIMAL}  LUN0 Malloc1\n`, "test.conf:13: LUN0 is given twice in [TargetNode1]"],
    ["no LUN0", MINIMAL.replace("LUN0", "LUN1"), "test.conf:9: [TargetNode1] needs a LUN0"],
    [
      "no TargetName",
      MINIMAL.replace("  TargetName disk1\n", ""),
      "test.conf:9: [TargetNode1] needs a TargetName",
    ],
    [
      "bad target name",
      MINIMAL.replace("disk1", "Disk_1"),
      "test.conf:10: TargetName gives the iSCSI name \"iqn.2016-06.io.spdk:Disk_1\", which is not a valid iqn./eui./naa. name (RFC 7143 §4.2.7: lower-case letters, digits, '-', '.', ':'; at most 223 bytes)",
    ],
    [
      "Mapping to a missing group",
      MINIMAL.replace("InitiatorGroup1\n  LUN0", "InitiatorGroup2\n  LUN0"),
      "test.conf:11: Mapping names InitiatorGroup2, which is not defined",
    ],
    [
      "Mapping syntax",
      MINIMAL.replace("Mapping PortalGroup1 InitiatorGroup1", "Mapping PG1 InitiatorGroup1"),
      'test.conf:11: Mapping expects PortalGroup<N>, got "PG1"',
    ],
    [
      "bad portal address",
      MINIMAL.replace("127.0.0.1:3350", "::1:3350"),
      "test.conf:5: Portal: an IPv6 address must be written in brackets, like [::1]:3260",
    ],
    [
      "bad portal port",
      MINIMAL.replace("127.0.0.1:3350", "127.0.0.1:70000"),
      "test.conf:5: Portal port expects an integer from 0 to 65535, got 70000",
    ],
    [
      "portal missing label",
      MINIMAL.replace("Portal P 127.0.0.1:3350", "Portal 127.0.0.1:3350"),
      "test.conf:5: Portal expects <label> <host>[:<port>], e.g. Portal DA1 127.0.0.1:3260",
    ],
    [
      "same portal twice",
      `${MINIMAL}[PortalGroup2]\n  Portal Q 127.0.0.1:3350\n`,
      "test.conf:14: portal 127.0.0.1:3350 is also in [PortalGroup1]",
    ],
    [
      "bad netmask",
      MINIMAL.replace("Netmask ANY", "Netmask 10.0.0.0/33"),
      "test.conf:8: Netmask prefix length expects an integer from 0 to 32, got 33",
    ],
    [
      "netmask not an address",
      MINIMAL.replace("Netmask ANY", "Netmask somewhere"),
      'test.conf:8: Netmask expects ANY, an IPv4 address or CIDR, or [IPv6][/len], got "somewhere"',
    ],
    [
      "no Netmask",
      MINIMAL.replace("  Netmask ANY\n", ""),
      "test.conf:6: [InitiatorGroup1] needs a Netmask line (ANY allows all)",
    ],
    [
      "bad boolean",
      `[iSCSI]\n  ImmediateData Maybe\n${MINIMAL}`,
      'test.conf:2: ImmediateData expects Yes or No, got "Maybe"',
    ],
    [
      "out of range",
      `[iSCSI]\n  NopInInterval 61\n${MINIMAL}`,
      "test.conf:2: NopInInterval expects an integer from 1 to 60, got 61",
    ],
    [
      "key twice",
      `[iSCSI]\n  Timeout 1\n  Timeout 2\n${MINIMAL}`,
      "test.conf:3: Timeout given twice in [iSCSI] (first at line 2)",
    ],
    [
      "ERL 2",
      `[iSCSI]\n  ErrorRecoveryLevel 2\n${MINIMAL}`,
      "test.conf:2: ErrorRecoveryLevel 2 is not supported; usertgt implements level 0",
    ],
    [
      "FirstBurst > MaxBurst",
      `[iSCSI]\n  FirstBurstLength 8192\n  MaxBurstLength 4096\n${MINIMAL}`,
      "test.conf:2: FirstBurstLength 8192 exceeds MaxBurstLength 4096 (RFC 7143 §13.14)",
    ],
    [
      "QueueDepth over MaxQueueDepth",
      `${MINIMAL}  QueueDepth 65\n`,
      "test.conf:13: QueueDepth expects an integer from 1 to 64, got 65",
    ],
    [
      "AuthMethod word",
      `${MINIMAL}  AuthMethod Kerberos\n`,
      'test.conf:13: AuthMethod expects None, Auto, CHAP or Mutual, got "Kerberos"',
    ],
    [
      "CHAP without AuthGroup",
      `${MINIMAL}  AuthMethod CHAP\n`,
      "test.conf:13: AuthMethod requires CHAP but [TargetNode1] has no AuthGroup",
    ],
    [
      "AuthGroup without AuthFile",
      `${MINIMAL}  AuthGroup AuthGroup1\n`,
      "test.conf:13: AuthGroup AuthGroup1 needs an AuthFile in [iSCSI]",
    ],
    [
      "AuthGroup missing from AuthFile",
      `[iSCSI]\n  AuthFile a.conf\n${MINIMAL}  AuthGroup AuthGroup2\n`,
      "test.conf:15: AuthGroup AuthGroup2: no [AuthGroup2] in AuthFile a.conf (line 2)",
      AUTH,
    ],
    [
      "UseDigest word",
      `${MINIMAL}  UseDigest CRC32C\n`,
      'test.conf:13: UseDigest expects Header, Data or Auto, got "CRC32C"',
    ],
    [
      "Malloc block size",
      MINIMAL.replace("LunSizeInMB 1", "LunSizeInMB 1\n  BlockSize 1000"),
      "test.conf:4: BlockSize expects a power of two from 512 to 65536, got 1000",
    ],
    [
      "Malloc without size",
      MINIMAL.replace("  LunSizeInMB 1\n", ""),
      "test.conf:2: [Malloc] NumberOfLuns needs LunSizeInMB",
    ],
    [
      "AIO arguments",
      `[AIO]\n  AIO /only\n${MINIMAL}`,
      "test.conf:2: AIO expects <file> <name> [<block size> [<size in MiB>]]",
    ],
    [
      "AIO file twice",
      `[AIO]\n  AIO f.img A\n  AIO /base/f.img B\n${MINIMAL}`,
      "test.conf:3: AIO file /base/f.img is already used by A at line 2",
    ],
    [
      "duplicate bdev name",
      `[AIO]\n  AIO /f Malloc1\n${MINIMAL}`,
      'test.conf:2: block device name "Malloc1" is already used at line 4',
    ],
    [
      "TCMUR minor range",
      `[TCMUR]\n  TCMUR 256 r /ram/x\n${MINIMAL}`,
      "test.conf:2: TCMUR minor expects an integer from 0 to 255, got 256",
    ],
    [
      "TCMUR minor twice",
      `[TCMUR]\n  TCMUR 1 r /ram/x\n  TCMUR 1 s /ram/y\n${MINIMAL}`,
      "test.conf:3: TCMUR minor 1 is already used at line 2",
    ],
    [
      "TCMUR cfgstring",
      `[TCMUR]\n  TCMUR 1 r ram\n${MINIMAL}`,
      'test.conf:2: TCMUR config string expects /<handler>/<handler config>, got "ram"',
    ],
    [
      "TCMUR name twice",
      `[TCMUR]\n  TCMUR 1 r /ram/x\n  TCMUR 2 r /ram/y\n${MINIMAL}`,
      'test.conf:3: block device name "r" is already used at line 2',
    ],
    [
      "BIO path",
      `[BIO]\n  BIO b0 dev/x\n${MINIMAL}`,
      'test.conf:2: BIO device path must be absolute, got "dev/x"',
    ],
    [
      "duplicate target name",
      `${MINIMAL}[TargetNode2]\n  TargetName disk1\n  Mapping PortalGroup1 InitiatorGroup1\n  LUN0 Malloc1\n`,
      "test.conf:13: target name iqn.2016-06.io.spdk:disk1 is also used by [TargetNode1]",
    ],
    [
      "bad AuthFile Auth line",
      `[iSCSI]\n  AuthFile a.conf\n${MINIMAL}`,
      '/base/a.conf:2: Auth expects "user" "secret" or "user" "secret" "muser" "msecret"',
      `[AuthGroup1]\n  Auth "u" "s" "m"\n`,
    ],
    [
      "AuthFile section",
      `[iSCSI]\n  AuthFile a.conf\n${MINIMAL}`,
      "/base/a.conf:1: expected an [AuthGroup<N>] section in the AuthFile, got [Group1]",
      `[Group1]\n  Auth u s\n`,
    ],
  ];
  for (const [what, text, message, auth] of errors) {
    it(`reports ${what} as file:line`, () => {
      if (message.endsWith("expected one of: ")) {
        assert.throws(
          () => parse(text, auth),
          (err: unknown) => err instanceof ConfigError && err.message.startsWith(message) && err.line > 0,
        );
      } else {
        expectError(text, message, auth);
      }
    });
  }

  it("loads a config and a relative AuthFile from disk, and names the line of an unreadable AuthFile", async () => {
    const dir = await mkdtemp(join(tmpdir(), "usertgt-cfg-"));
    try {
      await writeFile(join(dir, "auth.conf"), AUTH);
      await writeFile(
        join(dir, "ok.conf"),
        `[iSCSI]\n  AuthFile auth.conf\n${MINIMAL}  AuthMethod CHAP\n  AuthGroup AuthGroup1\n`,
      );
      const c = await loadSpdkConfig(join(dir, "ok.conf"));
      assert.equal(c.authGroups[0].secrets[0].secret, "secret1");
      assert.equal(c.targetNodes[0].authGroup, 1);

      await writeFile(join(dir, "bad.conf"), `[iSCSI]\n  AuthFile missing.conf\n${MINIMAL}`);
      await assert.rejects(loadSpdkConfig(join(dir, "bad.conf")), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(
          err.message,
          new RegExp(`^${join(dir, "bad.conf")}:2: AuthFile ${join(dir, "missing.conf")} cannot be read: `),
        );
        return true;
      });
      await assert.rejects(loadSpdkConfig(join(dir, "none.conf")), /none\.conf: cannot read the config file/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("embeds the default config of the README", () => {
    const c = defaultConfig();
    assert.deepEqual(c.portalGroups, [{ tag: 1, portals: [{ host: "127.0.0.1", port: 3260 }] }]);
    assert.equal(c.targetNodes[0].name, "iqn.2016-06.io.spdk:disk1");
    assert.deepEqual(c.targetNodes[0].auth, { disableChap: true, requireChap: false, mutualChap: false });
    assert.deepEqual(c.bdevs, [
      {
        kind: "malloc",
        name: "Malloc0",
        blockSize: 4096,
        blockCount: 32768,
        file: "<default config>",
        line: 6,
      },
    ]);
    assert.deepEqual(c.notices, []);
  });
});

describe("SPDK config reader on damaged input", () => {
  /** A deterministic PRNG (mulberry32), so a failure reproduces from its seed. */
  function prng(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  it("answers every mutation of the reference config with a model or a located ConfigError, never another error", () => {
    const lines = SEED.split("\n");
    const junk = [
      '"',
      "'",
      "\\",
      "#",
      "[",
      "]",
      "[X",
      "0",
      "-1",
      "99999999999999999999",
      "Yes",
      "",
      " ",
      "\t",
      "é",
      "\0",
      ":",
      "@",
      "/",
    ];
    let errors = 0;
    for (let seed = 1; seed <= 400; seed++) {
      const rand = prng(seed);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
      const mutated = [...lines];
      for (let n = 1 + Math.floor(rand() * 3); n > 0; n--) {
        const i = Math.floor(rand() * mutated.length);
        const line = mutated[i];
        const pos = Math.floor(rand() * (line.length + 1));
        switch (Math.floor(rand() * 4)) {
          case 0: // insert junk
            mutated[i] = line.slice(0, pos) + pick(junk) + line.slice(pos);
            break;
          case 1: // truncate
            mutated[i] = line.slice(0, pos);
            break;
          case 2: // duplicate a line elsewhere
            mutated.splice(Math.floor(rand() * mutated.length), 0, line);
            break;
          default: // drop a line
            mutated.splice(i, 1);
        }
      }
      try {
        parse(mutated.join("\n"), AUTH);
      } catch (err) {
        if (!(err instanceof ConfigError)) {
          assert.fail(`seed ${seed}: ${(err as Error).stack}\n--- config ---\n${mutated.join("\n")}`);
        }
        assert.match(err.message, /^test\.conf(:\d+)?: |^\/base\/\S+(:\d+)?: /, `seed ${seed}`);
        errors++;
      }
    }
    assert.ok(errors > 50, `only ${errors} of 400 mutations were errors: the mutations are too weak`);
  });
});
