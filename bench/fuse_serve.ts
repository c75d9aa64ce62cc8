/**
 * Benchmark helper: serve a device tree with a `ram` and a `file` TCMUR device over FUSE until
 * SIGTERM/SIGINT, then unmount and close. Prints "ready" on stdout once mounted.
 *
 *   node dist/bench/fuse_serve.js <mount point> <backing dir> [size, default 1G]
 */
import { DevtreeService } from "../src/devtree/devtree_service.js";
import { log } from "../src/util/log.js";

const [mountPoint, dir, size = "1G"] = process.argv.slice(2);
if (!mountPoint || !dir) {
  process.stderr.write("usage: fuse_serve.js <mount point> <backing dir> [size]\n");
  process.exit(2);
}
const logger = log.child({ bench: "fuse" });
logger.level = "warn";
const svc = await DevtreeService.create({ mountPoint, logger });
const ram = await svc.openTcmur({ minor: 0, name: "ram_a", cfgString: `/ram/bench?size=${size}` });
const file = await svc.openTcmur({
  minor: 1,
  name: "file_a",
  cfgString: `/file/${dir}/file_a.img?size=${size}`,
});
if (!(await svc.mount())) {
  process.stderr.write("FUSE mount failed\n");
  process.exit(1);
}
process.stdout.write("ready\n");
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await svc.stop();
  await file.close();
  await ram.close();
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
