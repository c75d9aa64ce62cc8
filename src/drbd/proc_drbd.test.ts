import { test } from "node:test";
import assert from "node:assert/strict";
import { renderProcDrbd } from "./proc_drbd.js";

test("proc/drbd: 8.4 layout for unconfigured, standalone, connected and syncing minors", () => {
  const text = renderProcDrbd([
    {
      minor: 2,
      cs: "SyncSource",
      role: "Primary",
      peerRole: "Secondary",
      disk: "UpToDate",
      peerDisk: "Inconsistent",
      protocol: "C",
      oosKiB: 917504,
      progress: { verb: "sync'ed", leftKiB: 917504, totalKiB: 1048576 },
    },
    { minor: 0 },
    { minor: 1, cs: "StandAlone", role: "Primary", disk: "UpToDate", oosKiB: 4 },
    {
      minor: 10,
      cs: "Connected",
      role: "Secondary",
      peerRole: "Primary",
      disk: "UpToDate",
      peerDisk: "UpToDate",
      protocol: "A",
      counters: [
        ["ns", 0],
        ["nr", 64],
      ],
      oosKiB: 0,
    },
  ]);
  assert.equal(
    text,
    [
      "version: 8.4 (api:1/proto:86-101)",
      "srcversion: usertgt",
      "",
      " 0: cs:Unconfigured",
      " 1: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   r-----",
      "    oos:4",
      " 2: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----",
      "    oos:917504",
      "\t[=>..................] sync'ed: 12.5% (917504/1048576)K",
      "10: cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate A r-----",
      "    ns:0 nr:64 oos:0",
      "",
    ].join("\n"),
  );
});

test("proc/drbd: the bar fills with progress and switches to M above 1 GiB", () => {
  const bar = (left: number, total: number) =>
    renderProcDrbd([
      { minor: 0, cs: "SyncTarget", progress: { verb: "sync'ed", leftKiB: left, totalKiB: total } },
    ]).split("\n")[4];
  assert.equal(bar(100, 100), "\t[>....................] sync'ed:  0.0% (100/100)K");
  assert.equal(bar(50, 100), "\t[=========>..........] sync'ed: 50.0% (50/100)K");
  assert.equal(bar(0, 100), "\t[===================>] sync'ed:100.0% (0/100)K");
  assert.equal(bar(1 << 20, 4 << 20), "\t[==============>.....] sync'ed: 75.0% (1024/4096)M");
});
