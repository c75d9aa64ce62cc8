/**
 * Loop devices for tests that export a real block device: a sparse file attached with losetup at a
 * chosen logical sector size. Needs root (losetup); `detach()` must run in the test's `after`.
 */
import { execFile } from "node:child_process";
import { open, rm } from "node:fs/promises";
import { promisify } from "node:util";

const exec = promisify(execFile);

export interface LoopDevice {
  readonly device: string;
  readonly file: string;
  readonly sectorSize: number;
  readonly sizeBytes: number;
  detach(): Promise<void>;
}

/** Attach a new sparse file of `sizeBytes` as a loop device with `sectorSize`-byte sectors. */
export async function attachLoop(file: string, sizeBytes: number, sectorSize: number): Promise<LoopDevice> {
  const fh = await open(file, "w");
  await fh.truncate(sizeBytes);
  await fh.close();
  const { stdout } = await exec("losetup", ["--find", "--show", "--sector-size", String(sectorSize), file]);
  const device = stdout.trim();
  return {
    device,
    file,
    sectorSize,
    sizeBytes,
    detach: async () => {
      await exec("losetup", ["-d", device]).catch(() => undefined);
      await rm(file, { force: true });
    },
  };
}

/** Whether this process may create loop devices (root with losetup and a loop driver). */
export async function canUseLoopDevices(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return "loop devices need root";
  try {
    await exec("losetup", ["--version"]);
  } catch {
    return "losetup (util-linux) is not installed";
  }
  return undefined;
}

/** Read `length` bytes at `offset` straight from the device with O_DIRECT (dd iflag=direct). */
export async function readDirect(
  device: string,
  offset: number,
  length: number,
  blockSize: number,
): Promise<Buffer> {
  const { stdout } = await exec(
    "dd",
    [
      `if=${device}`,
      "iflag=direct,skip_bytes,count_bytes",
      `bs=${Math.max(blockSize, 4096)}`,
      `skip=${offset}`,
      `count=${length}`,
      "status=none",
    ],
    { encoding: "buffer", maxBuffer: length + 65536 },
  );
  return stdout;
}
