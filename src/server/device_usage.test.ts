import assert from "node:assert/strict";
import { test } from "node:test";
import { deviceUsers, type DeviceUsageSources } from "./device_usage.js";

function sources(holders: string[], sessions: Record<string, number>): DeviceUsageSources {
  return {
    holders: (d) => (d === "drbd2" ? holders.map((owner) => ({ owner })) : []),
    luns: () => [
      { target: "iqn.t:a", lun: 0, bdev: "bio1" },
      { target: "iqn.t:b", lun: 3, bdev: "bio1" },
    ],
    sessions: (t) => sessions[t] ?? 0,
  };
}

test("a LUN over the device counts only while an initiator is logged in", () => {
  assert.deepEqual(deviceUsers(sources(["BIO bio1"], {}), "drbd2"), []);
  assert.deepEqual(deviceUsers(sources(["BIO bio1"], { "iqn.t:b": 2 }), "drbd2"), [
    "BIO bio1 as LUN3 of iqn.t:b: 2 sessions logged in",
  ]);
  assert.deepEqual(deviceUsers(sources(["LUN1 of iqn.t:a"], { "iqn.t:a": 1 }), "drbd2"), [
    "LUN1 of iqn.t:a: 1 session logged in",
  ]);
  assert.deepEqual(deviceUsers(sources(["LUN1 of iqn.t:a"], {}), "drbd2"), []);
});

test("an open FUSE file and any other holder count", () => {
  assert.deepEqual(deviceUsers(sources(["FUSE mount /UMCfuse"], {}), "drbd2"), ["FUSE mount /UMCfuse: open"]);
  assert.deepEqual(deviceUsers(sources(["something else"], {}), "drbd2"), ["something else"]);
  assert.deepEqual(deviceUsers(sources([], {}), "drbd9"), []);
});
