/** Usage errors exit 2 from every command (commander's own default would be 1); --help/--version exit 0. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const CLI = fileURLToPath(new URL("./main.js", import.meta.url));

function cli(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20000 }, (err, _stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stderr });
    });
  });
}

test("usage errors exit 2 and say what was wrong", async () => {
  const cases: [string[], RegExp][] = [
    [["serve", "--bogus"], /unknown option '--bogus'/],
    [["bogus"], /unknown command 'bogus'/],
    [["rpc"], /missing required argument 'method'/],
    [["drbdadm"], /missing required argument 'command'/],
    [["drbdsetup", "status"], /status: not supported \(supported: events2\)/],
    [["serve", "--log-level", "loud"], /argument 'loud' is invalid/],
    [["serve", "--metrics", "9470"], /--metrics 9470: expected ADDR:PORT/],
    [["drbdadm", "wait-sync"], /wait-sync needs a resource name/],
    [["drbdadm", "wait-sync", "r0", "--wait-timeout", "-1"], /--wait-timeout -1: expected a positive number/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  assert.equal((await cli(["--version"])).code, 0);
  assert.equal((await cli(["serve", "--help"])).code, 0);
});
