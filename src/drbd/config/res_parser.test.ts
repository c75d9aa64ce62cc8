import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseDrbdConfig, selectLocalHost, findResource } from "./res_parser.js";
import { dumpDrbdConfig } from "./res_dump.js";
import { DrbdConfigError, effectiveOptions, numericOption, optionValue, parseScaledNumber } from "./model.js";

/** /etc/drbd.d/spdk_drbd2.res of the reference SPDK+DRBD deployment, verbatim (tabs, commented net section). */
const SEED_RES = `# /etc/drbd.d/spdk_drbd2.res

resource spdk_drbd2 {
    on blackbox {
\tnode-id\t\t\t0;
\taddress\t\t\t192.168.1.22:7788;
\tvolume 0 {
\t    device\t\tdrbd2 minor 2;
\t    disk\t\t"/UMCfuse/dev/ram001";
\t    meta-disk\t\tinternal;
\t}
    }

    on bottom {
\tnode-id\t\t\t2;
\taddress\t\t\t192.168.1.23:7788;
\tvolume 0 {
\t    device\t\tdrbd2 minor 2;
            disk\t\t"/UMCfuse/dev/file_c";
\t    meta-disk\t\tinternal;
\t }
    }

#   net {
#\tprotocol        \tA;
#\ton-congestion   \tpull-ahead;
#\tcongestion-fill \t1024s; # bytes
#   }

    disk {
\t# Put the "c-plan-ahead 0" line first or the others will be silently ignored
\tc-plan-ahead\t\t0;\t\t\t# do not use plan-ahead algorithm
\tresync-rate\t\t40000K;\t\t\t# max bytes/second for resync
\tc-min-rate\t\t0k;\t\t\t# min bytes/second for app
    }
}
`;

/** That file with its commented-out net section enabled (every comment line but the first). */
const uncommentNet = (text: string) =>
  text
    .split("\n")
    .map((l, i) => (i > 0 && l.startsWith("#") ? l.slice(1) : l))
    .join("\n");

const parseText = (text: string, file = "/etc/drbd.d/test.res") => parseDrbdConfig(file, { text });

function parseError(text: string): string {
  try {
    parseText(text);
  } catch (e) {
    assert.ok(e instanceof DrbdConfigError, `expected DrbdConfigError, got ${String(e)}`);
    return e.message;
  }
  assert.fail("configuration was accepted");
}

test("res: the reference deployment's spdk_drbd2.res parses with its hosts, volume and disk options", () => {
  const cfg = parseText(SEED_RES, "/etc/drbd.d/spdk_drbd2.res");
  assert.equal(cfg.resources.length, 1);
  const res = findResource(cfg, "spdk_drbd2");
  assert.deepEqual(
    res.hosts.map((h) => [h.names[0], h.nodeId, h.address.ip, h.address.port]),
    [
      ["blackbox", 0, "192.168.1.22", 7788],
      ["bottom", 2, "192.168.1.23", 7788],
    ],
  );
  const v = res.hosts[1]!.volumes[0]!;
  assert.deepEqual(
    [v.volume, v.device, v.minor, v.disk, v.metaDisk, v.metaIndex],
    [0, "/dev/drbd2", 2, "/UMCfuse/dev/file_c", "internal", "internal"],
  );
  assert.equal(v.where.line, 17);
  assert.equal(numericOption(res.disk, "disk", "c-plan-ahead"), 0);
  assert.equal(numericOption(res.disk, "disk", "resync-rate"), 40000, "resync-rate is kept in KiB/s");
  assert.equal(numericOption(res.disk, "disk", "c-min-rate"), 0);
  // Unset options fall back to drbd_limits.h defaults.
  assert.equal(optionValue(res.net, "net", "protocol"), "C");
  assert.equal(numericOption(res.net, "net", "ping-timeout"), 5);
  assert.equal(numericOption(res.disk, "disk", "al-extents"), 1237);
  assert.equal(optionValue(res.disk, "disk", "on-io-error"), "detach");
  const net = effectiveOptions(res.net, "net");
  assert.equal(net["ping-int"], 10);
  assert.equal(net["use-rle"], true);
  assert.equal("shared-secret" in net, false, "unset strings have no default");
  assert.equal(effectiveOptions(res.disk, "disk")["resync-rate"], 40000);
});

test("res: the reference spdk_drbd2.res with its net section uncommented selects protocol A and pull-ahead", () => {
  const text = uncommentNet(SEED_RES);
  const res = parseText(text).resources[0]!;
  assert.equal(optionValue(res.net, "net", "protocol"), "A");
  assert.equal(optionValue(res.net, "net", "on-congestion"), "pull-ahead");
  assert.equal(numericOption(res.net, "net", "congestion-fill"), 1024, "congestion-fill is kept in sectors");
});

test("res: the local node is chosen by host name, the other section is the peer", () => {
  const res = parseText(SEED_RES).resources[0]!;
  const view = selectLocalHost(res, "bottom");
  assert.equal(view.local.nodeId, 2);
  assert.equal(view.peer?.names[0], "blackbox");
  assert.throws(
    () => selectLocalHost(res, "nosuchhost"),
    /expected an 'on nosuchhost' section in resource spdk_drbd2, got 'on blackbox', 'on bottom'/,
  );
});

test("res: size suffixes convert into each option's unit as drbd-utils does, rounding up", () => {
  assert.equal(parseScaledNumber("1M", "k"), 1024);
  assert.equal(parseScaledNumber("1M", "s"), 2048);
  assert.equal(parseScaledNumber("10k", "s"), 20);
  assert.equal(parseScaledNumber("1s", "k"), 1);
  assert.equal(parseScaledNumber("3s", "k"), 2);
  assert.equal(parseScaledNumber("2G", "1"), 2 * 1024 ** 3);
  assert.equal(parseScaledNumber("250", "k"), 250);
  assert.match(String(parseScaledNumber("12x", "k")), /unit of K, M, G or s/);
  assert.match(String(parseScaledNumber("fast", "k")), /a number/);
});

const TWO_NODES = (body: string, extra = "") => `resource r0 {
  ${extra}
  on alpha { address 127.0.0.1:7789; volume 0 { device /dev/drbd0; disk /tmp/a; meta-disk internal; } }
  on beta { address 127.0.0.2:7789; volume 0 { device /dev/drbd0; disk /tmp/b; meta-disk internal; } }
  ${body}
}
`;

test("res: syntax and validation errors name the file, the line and what was expected", () => {
  assert.equal(parseError(TWO_NODES("net { protocol C }")), "/etc/drbd.d/test.res:5: expected ';', got '}'");
  assert.match(
    parseError(TWO_NODES("net { protocl C; }")),
    /^\/etc\/drbd\.d\/test\.res:5: expected a net option \(protocol \| timeout .*got 'protocl'$/,
  );
  assert.equal(
    parseError(TWO_NODES("net { protocol D; }")),
    "/etc/drbd.d/test.res:5: expected A | B | C for protocol, got 'D'",
  );
  assert.equal(
    parseError(TWO_NODES("disk { al-extents 3; }")),
    "/etc/drbd.d/test.res:5: expected al-extents within 7..65534, got 3",
  );
  assert.equal(
    parseError(TWO_NODES("disk { resync-rate 40q; }")),
    `/etc/drbd.d/test.res:5: expected a unit of K, M, G or s (not "q") for resync-rate, got '40q'`,
  );
  assert.equal(
    parseError(TWO_NODES("net { on-congestion pull-ahead; }")),
    "/etc/drbd.d/test.res:5: on-congestion pull-ahead needs protocol A, got protocol C",
  );
  assert.equal(
    parseError(TWO_NODES("net { ping-int 3; ping-int 4; }")),
    "/etc/drbd.d/test.res:5: net option ping-int already set at line 5",
  );
  assert.equal(
    parseError('resource r0 {\n  on a { disk "/x;\n }\n}'),
    `/etc/drbd.d/test.res:2: expected closing '"', got end of line`,
  );
  assert.equal(
    parseError("resource r0 {\n on a { address 1.2.3.4; }\n}"),
    "/etc/drbd.d/test.res:2: expected IP:PORT, got '1.2.3.4'",
  );
  assert.equal(
    parseError("resource r0 {\n on a { address 1.2.3.4:99999; }\n}"),
    "/etc/drbd.d/test.res:2: expected a port within 1..65535, got '1.2.3.4:99999'",
  );
  assert.equal(
    parseError("resource r0 {\n on a { address 1.2.3.4:7000;\n volume 0 { device drbd1 minor 2; } } }"),
    "/etc/drbd.d/test.res:3: expected minor 1 to match device /dev/drbd1, got 2",
  );
  assert.equal(
    parseError("resource r0 {\n on a { address 1.2.3.4:7000;\n volume 0 { device drbd1; disk /x; } } }"),
    "/etc/drbd.d/test.res:3: expected meta-disk for volume 0 of host a in resource r0",
  );
  assert.equal(
    parseError(
      "resource r0 {\n on a { address 1.2.3.4:7000;\n volume 0 { device drbd1; disk /x; meta-disk /md [x]; } } }",
    ),
    "/etc/drbd.d/test.res:3: expected a metadata index, got 'x'",
  );
  assert.equal(
    parseError("resource r0 {\n"),
    "/etc/drbd.d/test.res:2: expected an option, section or '}', got end of file",
  );
  assert.equal(
    parseError("resource r0 {\n on a { address 1.2.3.4:7000;\n volume 0 { device minor 2000000; } } }"),
    "/etc/drbd.d/test.res:3: expected a minor within 0..1048575, got 2000000",
  );
  assert.equal(
    parseError("resource r0 {\n on a { node-id 40; } }"),
    "/etc/drbd.d/test.res:2: expected a node-id within 0..31, got 40",
  );
  assert.equal(
    parseError("resource r0 {\n on a { address 300.1.1.1:7000; }\n}"),
    "/etc/drbd.d/test.res:2: expected an IPv4 address, got '300.1.1.1:7000'",
  );
  assert.equal(
    parseError("resource r0 {\n on a { address ipv6 [1::2::3]:7000; }\n}"),
    "/etc/drbd.d/test.res:2: expected an IPv6 address, got '1::2::3'",
  );
  assert.equal(
    parseError(TWO_NODES("net { verify-alg rot13; }")),
    "/etc/drbd.d/test.res:5: verify-alg rot13 is not one of sha1, md5, sha256, crc32c",
  );
  assert.equal(
    parseError(TWO_NODES('net { cram-hmac-alg md99; shared-secret "s"; }')),
    "/etc/drbd.d/test.res:5: cram-hmac-alg md99 is not a known hash (e.g. sha1, sha256, md5)",
  );
  assert.equal(
    parseError(TWO_NODES("net { csums-alg rot13; }")),
    "/etc/drbd.d/test.res:5: csums-alg rot13 is not a known hash",
  );
  assert.equal(
    parseError(TWO_NODES("net { csums-alg sha512; }")),
    "/etc/drbd.d/test.res:5: csums-alg sha512 is not one of sha1, md5, sha256, crc32c",
  );
  assert.equal(
    parseError("resorce r0 {}"),
    "/etc/drbd.d/test.res:1: expected global | common | resource | include | skip, got 'resorce'",
  );
  assert.equal(
    parseError("global { usage-count maybe; }"),
    "/etc/drbd.d/test.res:1: expected yes | no | ask for usage-count, got 'maybe'",
  );
});

test("res: duplicate minors and addresses across resources are refused with both places", () => {
  const r1 = TWO_NODES("");
  const r2 = r1
    .replace("resource r0", "resource r1")
    .replace(/7789/g, "7790")
    .replace(/\/tmp\/(a|b)/g, "/tmp/$12");
  assert.equal(
    parseError(r1 + r2),
    "/etc/drbd.d/test.res:9: minor 0 on host alpha in resource r1 is already used by resource r0 at /etc/drbd.d/test.res:3",
  );
  const r3 = r1
    .replace("resource r0", "resource r2")
    .replace(/drbd0/g, "drbd5")
    .replace(/\/tmp\/(a|b)/g, "/tmp/$13");
  assert.equal(
    parseError(r1 + r3),
    "/etc/drbd.d/test.res:9: address 127.0.0.1:7789 in resource r2 is already used by resource r0 at /etc/drbd.d/test.res:3",
  );
  assert.match(parseError(r1 + r1), /:7: resource r0 already defined at \/etc\/drbd\.d\/test\.res:1$/);
});

test("res: includes resolve relative to the including file; common is inherited, resources override", () => {
  const dir = mkdtempSync(join(tmpdir(), "drbdres-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, "drbd.d"));
  writeFileSync(join(dir, "drbd.conf"), 'include "drbd.d/global_common.conf";\ninclude "drbd.d/*.res";\n');
  writeFileSync(
    join(dir, "drbd.d", "global_common.conf"),
    'global { usage-count no; }\ncommon {\n net { protocol B; ping-int 3; }\n disk { resync-rate 10M; }\n handlers { split-brain "/bin/true"; }\n}\n',
  );
  writeFileSync(join(dir, "drbd.d", "a.res"), TWO_NODES("net { protocol A; on-congestion pull-ahead; }"));
  writeFileSync(
    join(dir, "drbd.d", "b.res"),
    TWO_NODES("")
      .replace("r0", "r1")
      .replace(/7789/g, "7800")
      .replace(/drbd0/g, "drbd1")
      .replace(/\/tmp\/(a|b)/g, "/tmp/$1x"),
  );
  const cfg = parseDrbdConfig(join(dir, "drbd.conf"));
  assert.deepEqual(
    cfg.files.map((f) => f.slice(dir.length)),
    ["/drbd.conf", "/drbd.d/global_common.conf", "/drbd.d/a.res", "/drbd.d/b.res"],
  );
  assert.equal(optionValue(cfg.global, "global", "usage-count"), "no");
  const [r0, r1] = cfg.resources;
  assert.equal(optionValue(r0!.net, "net", "protocol"), "A");
  assert.equal(optionValue(r1!.net, "net", "protocol"), "B");
  assert.equal(numericOption(r0!.net, "net", "ping-int"), 3);
  assert.equal(numericOption(r1!.disk, "disk", "resync-rate"), 10240);
  assert.equal(optionValue(r1!.handlers, "handlers", "split-brain"), "/bin/true");
  // An include of a literal missing file is an error; a glob that matches nothing is not.
  writeFileSync(join(dir, "bad.conf"), '\ninclude "nothere.conf";\n');
  assert.throws(
    () => parseDrbdConfig(join(dir, "bad.conf")),
    /bad\.conf:2: cannot open include file "nothere.conf"/,
  );
  writeFileSync(join(dir, "empty.conf"), 'include "none/*.res";\n');
  assert.equal(parseDrbdConfig(join(dir, "empty.conf")).resources.length, 0);
  // A file including itself is read once.
  writeFileSync(join(dir, "self.conf"), 'include "self.conf";\n' + TWO_NODES(""));
  assert.equal(parseDrbdConfig(join(dir, "self.conf")).resources.length, 1);
});

test("res: resource-level device/disk/meta-disk, external metadata index, IPv6 and booleans", () => {
  const cfg = parseText(`resource r9 {
  device /dev/drbd9; disk /dev/sdb1; meta-disk /dev/md0 [3];
  net { allow-two-primaries; use-rle no; no-tcp-cork; cram-hmac-alg sha1; shared-secret "s3cr et"; }
  on a { address ipv6 [fd00::1]:7789; }
  on b { address ipv6 [fd00::2]:7789; volume 0 { disk /dev/sdc1; } }
}`);
  const res = cfg.resources[0]!;
  const [a, b] = res.hosts;
  assert.deepEqual(a!.address, { family: "ipv6", ip: "fd00::1", port: 7789 });
  assert.deepEqual(
    [a!.volumes[0]!.disk, b!.volumes[0]!.disk, b!.volumes[0]!.minor],
    ["/dev/sdb1", "/dev/sdc1", 9],
  );
  assert.deepEqual([b!.volumes[0]!.metaDisk, b!.volumes[0]!.metaIndex], ["/dev/md0", 3]);
  assert.equal(optionValue(res.net, "net", "allow-two-primaries"), true);
  assert.equal(optionValue(res.net, "net", "use-rle"), false);
  assert.equal(optionValue(res.net, "net", "tcp-cork"), false);
  assert.equal(optionValue(res.net, "net", "shared-secret"), "s3cr et");
});

test("res: dump prints a normalized configuration that parses back to the same model", () => {
  const text = uncommentNet(SEED_RES);
  const cfg = parseText(text, "/etc/drbd.d/spdk_drbd2.res");
  const dumped = dumpDrbdConfig(cfg, "spdk_drbd2");
  assert.match(dumped, /device\s+\/dev\/drbd2 minor 2;/);
  assert.match(dumped, /resync-rate\s+40000k; # bytes\/second/);
  assert.match(dumped, /congestion-fill\s+1024s;/);
  const again = parseText(dumped, "/dump.res").resources[0]!;
  const orig = cfg.resources[0]!;
  const strip = (m: Map<string, { value: unknown }>) => [...m].map(([k, v]) => [k, v.value]);
  assert.deepEqual(strip(again.net), strip(orig.net));
  assert.deepEqual(strip(again.disk), strip(orig.disk));
  assert.deepEqual(
    again.hosts.map((h) => ({ ...h, where: null, volumes: h.volumes.map((v) => ({ ...v, where: null })) })),
    orig.hosts.map((h) => ({ ...h, where: null, volumes: h.volumes.map((v) => ({ ...v, where: null })) })),
  );
});

test("res: after-sb-0pri discard-node-NAME is taken as written; a bare prefix is refused", () => {
  const res = parseText(TWO_NODES("net { after-sb-0pri discard-node-alpha; }")).resources[0]!;
  assert.equal(optionValue(res.net, "net", "after-sb-0pri"), "discard-node-alpha");
  assert.equal(
    parseError(TWO_NODES("net { after-sb-0pri discard-node-; }")),
    "/etc/drbd.d/test.res:5: expected disconnect | discard-younger-primary | discard-older-primary | " +
      "discard-zero-changes | discard-least-changes | discard-local | discard-remote | discard-node-NAME " +
      "for after-sb-0pri, got 'discard-node-'",
  );
});

test("res: volumes — per host, with resource-level defaults and per-volume disk options", () => {
  const cfg = parseText(`resource r0 {
    volume 1 { meta-disk internal; disk { resync-rate 10M; } }
    on alpha {
        address 10.0.0.1:7789;
        volume 0 { device /dev/drbd0 minor 0; disk "/UMCfuse/dev/a0"; meta-disk internal; }
        volume 1 { device /dev/drbd1 minor 1; disk "/UMCfuse/dev/a1"; }
    }
    on beta {
        address 10.0.0.2:7789;
        volume 0 { device /dev/drbd0 minor 0; disk "/UMCfuse/dev/b0"; meta-disk internal; }
        volume 1 { device /dev/drbd1 minor 1; disk "/UMCfuse/dev/b1"; }
    }
}
`);
  const view = selectLocalHost(findResource(cfg, "r0"), "beta");
  assert.deepEqual(
    view.local.volumes.map((v) => [v.volume, v.minor, v.disk, v.metaIndex]),
    [
      [0, 0, "/UMCfuse/dev/b0", "internal"],
      [1, 1, "/UMCfuse/dev/b1", "internal"],
    ],
  );
  assert.equal(numericOption(view.local.volumes[1]!.diskOptions, "disk", "resync-rate"), 10240);
  assert.equal(view.local.volumes[0]!.diskOptions.size, 0);
  // Both hosts must define the same volumes; a volume without a disk is named with its host.
  assert.match(
    parseError(`resource r0 {
    on alpha { address 10.0.0.1:7789;
        volume 0 { device minor 0; disk /dev/a0; meta-disk internal; }
        volume 1 { device minor 1; disk /dev/a1; meta-disk internal; } }
    on beta { address 10.0.0.2:7789;
        volume 0 { device minor 0; disk /dev/b0; meta-disk internal; } }
}
`),
    /hosts of resource r0 define different volumes \(0,1 vs 0\)/,
  );
  assert.match(
    parseError(`resource r0 {
    on alpha { address 10.0.0.1:7789;
        volume 0 { device minor 0; disk /dev/a0; meta-disk internal; }
        volume 0 { device minor 1; disk /dev/a1; meta-disk internal; } }
    on beta { address 10.0.0.2:7789; volume 0 { device minor 0; disk /dev/b0; meta-disk internal; } }
}
`),
    /volume 0 defined twice/,
  );
});
