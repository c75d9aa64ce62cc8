/**
 * Build the optional native addon (native/*.c) with node-gyp during `npm ci`.
 * It never fails the install: without it the AIO block device writes zeroes for UNMAP, reports no
 * thin provisioning, cannot export block devices, and I/O runs on Node's thread pool. Without
 * liburing-dev the addon is built without the io_uring engine (thread-pool fallback at run time).
 * Node's own headers are used (no download) when they are installed next to the node binary.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const fallback =
  "usertgt: native addon not built; AIO unmap writes zeroes, block devices cannot be exported, I/O uses the thread pool";

if (process.platform !== "linux" || process.env.USERTGT_NO_NATIVE) {
  console.warn(fallback);
  process.exit(0);
}
if (!existsSync("/usr/include/liburing.h")) {
  console.warn(
    "usertgt: liburing-dev is not installed: building without the io_uring engine (AIO and TCMUR file I/O use the thread pool; apt-get install liburing-dev, then npm ci)",
  );
}
const args = ["rebuild", "--directory", here];
const prefix = dirname(dirname(process.execPath));
if (!process.env.npm_config_nodedir && existsSync(join(prefix, "include", "node", "node_api.h"))) {
  args.push(`--nodedir=${prefix}`);
}
// npm tells its scripts where its bundled node-gyp is; run by hand, look next to npm.
const bundled = join(prefix, "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js");
const gyp = process.env.npm_config_node_gyp ?? (existsSync(bundled) ? bundled : undefined);
const result = gyp
  ? spawnSync(process.execPath, [gyp, ...args], { stdio: "inherit", timeout: 300_000 })
  : spawnSync("node-gyp", args, { stdio: "inherit", timeout: 300_000 });
if (result.status !== 0)
  console.warn(`${fallback} (node-gyp ${result.error?.message ?? `exit ${result.status}`})`);
process.exit(0);
