import assert from "node:assert/strict";
import { test } from "node:test";
import { parseRpcParams, RpcUsageError } from "./rpc_command.js";

test("rpc params: none given → undefined (the request carries no params)", () => {
  assert.equal(parseRpcParams([]), undefined);
});

test("rpc params: one JSON object is sent as it is", () => {
  assert.deepEqual(parseRpcParams(['{"name":"Malloc0","timeout":5}']), { name: "Malloc0", timeout: 5 });
});

test("rpc params: --key value pairs, JSON-typed values, dashes to underscores, bare flags true", () => {
  assert.deepEqual(
    parseRpcParams([
      "--name",
      "Malloc0",
      "--queue-depth",
      "64",
      "--include-aliases",
      "--x=[1,2]",
      "--s",
      "a b",
    ]),
    { name: "Malloc0", queue_depth: 64, include_aliases: true, x: [1, 2], s: "a b" },
  );
});

test("rpc params: bad usage is a RpcUsageError naming the problem", () => {
  assert.throws(
    () => parseRpcParams(["{bad"]),
    (e: Error) => e instanceof RpcUsageError && /not JSON/.test(e.message),
  );
  assert.throws(() => parseRpcParams(["[1]"]), /must be a JSON object/);
  assert.throws(() => parseRpcParams(['{"a":1}', "--b", "2"]), /not both/);
  assert.throws(() => parseRpcParams(["--a", "1", "stray"]), /expected --key, got "stray"/);
});
