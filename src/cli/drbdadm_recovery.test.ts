/**
 * `usertgt drbdadm` for the recovery commands: what reaches the server's drbd_adm (a stand-in RPC server on
 * a Unix socket records the parameters): verify, invalidate-remote, connect --discard-my-data.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import type { JsonObject } from "../rpc/jsonrpc.js";
import { MethodRegistry } from "../rpc/registry.js";
import { RpcServer } from "../rpc/server.js";

const CLI = fileURLToPath(new URL("./main.js", import.meta.url));

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

test("usertgt drbdadm verify / invalidate-remote / connect --discard-my-data send drbd_adm with their parameters", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbdadm-recovery-"));
  const sock = join(dir, "rpc.sock");
  const calls: JsonObject[] = [];
  const registry = new MethodRegistry();
  registry.register("drbd_adm", {
    description: "records its parameters",
    params: {
      command: { type: "string", required: true },
      resource: { type: "string", required: true },
      force: { type: "boolean" },
      clear_bitmap: { type: "boolean" },
      discard_my_data: { type: "boolean" },
    },
    handler: (p) => {
      calls.push({ ...(p as JsonObject) });
      return { status: "" };
    },
  });
  const server = await RpcServer.start({ path: sock, registry });
  t.after(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });
  for (const args of [
    ["verify", "r1"],
    ["invalidate-remote", "r1"],
    ["connect", "r1", "--discard-my-data"],
  ]) {
    const r = await cli(["drbdadm", "-s", sock, ...args]);
    assert.equal(r.code, 0, r.stderr);
  }
  assert.deepEqual(calls, [
    { command: "verify", resource: "r1" },
    { command: "invalidate-remote", resource: "r1" },
    { command: "connect", resource: "r1", discard_my_data: true },
  ]);
});
