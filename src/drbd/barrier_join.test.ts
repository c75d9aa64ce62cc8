import { test } from "node:test";
import assert from "node:assert/strict";
import { BarrierJoin } from "./barrier_join.js";

test("BarrierJoin: one P_BARRIER_ACK with every volume's writes, and no volume's next epoch before it", () => {
  const join = new BarrierJoin(2);
  const acks: [number, number][] = [];
  const opened: string[] = [];
  // Volume 0's part of epoch 7 (3 writes) is stable first; nothing is acknowledged or opened yet.
  join.reached(
    7,
    3,
    (n) => acks.push([7, n]),
    () => opened.push("v0 after 7"),
  );
  assert.equal(acks.length, 0);
  assert.equal(opened.length, 0);
  // Volume 0 also finished epoch 8 (it had no writes in it); still waiting for volume 1's 7.
  join.reached(
    8,
    0,
    (n) => acks.push([8, n]),
    () => opened.push("v0 after 8"),
  );
  join.reached(
    7,
    2,
    (n) => acks.push([7, n]),
    () => opened.push("v1 after 7"),
  );
  assert.deepEqual(acks, [[7, 5]], "set_size counts both volumes' writes");
  assert.deepEqual(opened, ["v0 after 7", "v1 after 7"]);
  join.reached(
    8,
    4,
    (n) => acks.push([8, n]),
    () => opened.push("v1 after 8"),
  );
  assert.deepEqual(acks, [
    [7, 5],
    [8, 4],
  ]);
  // A new connection forgets half-reported epochs.
  join.reached(
    9,
    1,
    (n) => acks.push([9, n]),
    () => {},
  );
  join.reset();
  join.reached(
    9,
    1,
    (n) => acks.push([9, n]),
    () => {},
  );
  assert.equal(acks.length, 2);
});
