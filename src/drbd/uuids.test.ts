import { test } from "node:test";
import assert from "node:assert/strict";
import { compareUuids, newCurrentUuid, resyncFinished, withPrimaryBit, type UuidSet } from "./uuids.js";

const cmp = (mine: UuidSet, peer: UuidSet, extra: Partial<Parameters<typeof compareUuids>[0]> = {}) =>
  compareUuids({
    mine,
    peer,
    myCrashedPrimary: false,
    peerCrashedPrimary: false,
    resolveConflicts: false,
    ...extra,
  });

const X = 0x1000n;
const Y = 0x2000n;
const Z = 0x3000n;

test("compareUuids follows drbd_uuid_compare's rules", () => {
  assert.deepEqual(cmp([4n, 0n, 0n, 0n], [4n, 0n, 0n, 0n]), { result: 0, rule: 10 });
  assert.deepEqual(cmp([4n, 0n, 0n, 0n], [X, 0n, 0n, 0n]), { result: -2, rule: 20 });
  assert.deepEqual(cmp([X | 1n, 0n, 0n, 0n], [4n, 0n, 0n, 0n]), { result: 2, rule: 30 });
  assert.deepEqual(cmp([X | 1n, 0n, 0n, 0n], [X, 0n, 0n, 0n]), { result: 0, rule: 40 }, "bit 0 is ignored");
  assert.deepEqual(cmp([X, 0n, 0n, 0n], [X, 0n, 0n, 0n], { myCrashedPrimary: true }), {
    result: 1,
    rule: 40,
  });
  assert.deepEqual(cmp([X, 0n, 0n, 0n], [X, 0n, 0n, 0n], { peerCrashedPrimary: true }), {
    result: -1,
    rule: 40,
  });
  assert.deepEqual(cmp([X, 0n, 0n, 0n], [Y, X, 0n, 0n]), { result: -1, rule: 50 });
  assert.deepEqual(cmp([X, 0n, 0n, 0n], [Y, 0n, X, 0n]), { result: -2, rule: 60 });
  assert.deepEqual(cmp([Y, X, 0n, 0n], [X, 0n, 0n, 0n]), { result: 1, rule: 70 });
  assert.deepEqual(cmp([Y, 0n, X, 0n], [X, 0n, 0n, 0n]), { result: 2, rule: 80 });
  assert.deepEqual(cmp([Y, X, 0n, 0n], [Z, X, 0n, 0n]), { result: 100, rule: 90 });
  assert.deepEqual(cmp([Y, 0n, X, 0n], [Z, 0n, X, 0n]), { result: -100, rule: 100 });
  assert.deepEqual(cmp([Y, 0n, 0n, 0n], [Z, 0n, 0n, 0n]), { result: -1000, rule: 0 });
});

test("newCurrentUuid keeps the shared generation as bitmap UUID and pushes an older one into history", () => {
  assert.deepEqual(newCurrentUuid([4n, 0n, 0n, 0n], true, 0x10n), [0x11n, 0n, 0n, 0n]);
  assert.deepEqual(newCurrentUuid([X | 1n, 0n, 0n, 0n], true, 0x10n), [0x11n, X, 0n, 0n]);
  assert.deepEqual(newCurrentUuid([Y, X, Z, 0n], false, 0x11n), [0x10n, Y, X, Z]);
  assert.deepEqual(resyncFinished([Y, X, Z, 0n]), [Y, 0n, X, Z]);
  assert.deepEqual(withPrimaryBit([X, 0n, 0n, 0n], true), [X | 1n, 0n, 0n, 0n]);
  assert.deepEqual(withPrimaryBit([4n, 0n, 0n, 0n], true), [4n, 0n, 0n, 0n], "just-created stays 4");
});
