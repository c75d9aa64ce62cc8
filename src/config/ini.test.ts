import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError } from "./errors.js";
import { parseIni, splitWords } from "./ini.js";

describe("SPDK legacy INI reader", () => {
  it("keeps sections, repeated keys in order and line numbers", () => {
    const ini = parseIni(
      [
        "# header comment",
        "[PortalGroup1]",
        "  Portal DA1 10.0.0.1:3260",
        "  Portal DA2 10.0.0.2",
        "",
        "[AIO]",
        "  AIO /a A0",
        "  AIO /b A1 4096",
      ].join("\n"),
      "t.conf",
    );
    assert.deepEqual(
      ini.sections.map((s) => [s.name, s.line]),
      [
        ["PortalGroup1", 2],
        ["AIO", 6],
      ],
    );
    assert.deepEqual(ini.sections[0].entries, [
      { key: "Portal", values: ["DA1", "10.0.0.1:3260"], line: 3 },
      { key: "Portal", values: ["DA2", "10.0.0.2"], line: 4 },
    ]);
    assert.deepEqual(
      ini.sections[1].entries.map((e) => [e.values, e.line]),
      [
        [["/a", "A0"], 7],
        [["/b", "A1", "4096"], 8],
      ],
    );
  });

  it("reads quoted values with blanks and escapes, and trailing comments", () => {
    assert.deepEqual(splitWords(`TargetAlias "Data Disk1"  # the alias`, "f", 1), [
      "TargetAlias",
      "Data Disk1",
    ]);
    assert.deepEqual(splitWords(`Auth 'u s' "p\\"w\\\\d" x#y`, "f", 1), ["Auth", "u s", 'p"w\\d', "x#y"]);
    assert.deepEqual(splitWords(`Auth "" ""`, "f", 1), ["Auth", "", ""]);
  });

  it("joins lines ending in a backslash and reports the first line", () => {
    const ini = parseIni("[BIO]\n  BIO bio1 /dev/x \\\n    helper arg1\n  BIO bio2 /dev/y\n", "c.conf");
    assert.deepEqual(ini.sections[0].entries, [
      { key: "BIO", values: ["bio1", "/dev/x", "helper", "arg1"], line: 2 },
      { key: "BIO", values: ["bio2", "/dev/y"], line: 4 },
    ]);
  });

  it("accepts CRLF line ends", () => {
    const ini = parseIni("[Malloc]\r\n  NumberOfLuns 1\r\n", "w.conf");
    assert.deepEqual(ini.sections[0].entries[0].values, ["1"]);
  });

  const bad: [string, string][] = [
    ["  Portal DA1 1.2.3.4\n", 'b.conf:1: expected a section header like [Global] before "Portal"'],
    ["[Global]\n[Global]\n", "b.conf:2: section [Global] appears twice (first at line 1)"],
    ["[Glo bal]\n", 'b.conf:1: expected a section header like [Name], got "[Glo bal]"'],
    ['[iSCSI]\n  NodeBase "iqn.x\n', 'b.conf:2: unterminated " quote in value'],
    ['[iSCSI]\n\n  NodeBase "a"b\n', 'b.conf:3: expected a blank after the closing " quote'],
    ["[iSCSI]\n  9Key x\n", 'b.conf:2: expected a key name, got "9Key"'],
    ["[iSCSI]\n  NodeBase x \\", "b.conf:2: line continuation (\\) at the end of the file"],
  ];
  for (const [text, message] of bad) {
    it(`rejects ${JSON.stringify(text)} with file:line`, () => {
      assert.throws(
        () => parseIni(text, "b.conf"),
        (err: unknown) => err instanceof ConfigError && err.message === message,
      );
    });
  }
});
