import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

const CLI = fileURLToPath(new URL("./main.js", import.meta.url));

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

test("usertgt drbdadm: dump runs locally from -c; usage and unsupported commands fail clearly", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbdadm-cli-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "r.res");
  await writeFile(
    file,
    `resource r5 {\n  on n1 {\n    address 127.0.0.1:7805;\n    volume 0 { device drbd5 minor 5; disk "/UMCfuse/dev/x"; meta-disk internal; }\n  }\n}\n`,
  );
  const dump = await cli(["drbdadm", "-c", file, "dump", "r5"]);
  assert.equal(dump.code, 0, dump.stderr);
  assert.match(dump.stdout, /resource r5 \{/);
  assert.match(dump.stdout, /device +\/dev\/drbd5 minor 5;/);

  const noFile = await cli(["drbdadm", "dump", "r5"]);
  assert.equal(noFile.code, 2);
  assert.match(noFile.stderr, /dump needs the config file: -c FILE/);

  const pauseSync = await cli(["drbdadm", "-s", join(dir, "none.sock"), "pause-sync", "r5"]);
  assert.equal(pauseSync.code, 1);
  assert.match(pauseSync.stderr, /usertgt drbdadm: pause-sync: not supported \(supported: up, down/);

  const badWfc = await cli([
    "drbdadm",
    "-s",
    join(dir, "none.sock"),
    "wait-connect",
    "r5",
    "--wfc-timeout",
    "soon",
  ]);
  assert.equal(badWfc.code, 2);
  assert.match(badWfc.stderr, /--wfc-timeout soon: expected whole seconds 0\.\.300000/);
  const noWfcRes = await cli(["drbdadm", "-s", join(dir, "none.sock"), "wait-connect"]);
  assert.equal(noWfcRes.code, 2);
  assert.match(noWfcRes.stderr, /wait-connect needs a resource name/);
  const resizeNoServer = await cli([
    "drbdadm",
    "-s",
    join(dir, "none.sock"),
    "resize",
    "r5",
    "--assume-clean",
  ]);
  assert.equal(resizeNoServer.code, 1);
  assert.match(resizeNoServer.stderr, /is `usertgt serve --drbd-config FILE/);

  const noRes = await cli(["drbdadm", "-s", join(dir, "none.sock"), "up"]);
  assert.equal(noRes.code, 2);
  assert.match(noRes.stderr, /up needs a resource name/);

  const noServer = await cli(["drbdadm", "-s", join(dir, "none.sock"), "status"]);
  assert.equal(noServer.code, 1);
  assert.match(noServer.stderr, /is `usertgt serve --drbd-config FILE --rpc-socket .*none\.sock` running\?/);
});

test("usertgt serve --drbd-config with a bad .res: FILE:LINE and exit 2", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbdadm-cli-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "bad.res");
  await writeFile(file, `resource r6 {\n  on n1 {\n    adress 127.0.0.1:7806;\n  }\n}\n`);
  const r = await cli(["serve", "--no-rpc", "--no-fuse", "--drbd-config", file, "--node-name", "n1"]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, new RegExp(`usertgt: ${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:3: `));
});
