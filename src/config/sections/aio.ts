/**
 * [AIO]: block devices over a file or a disk (SPDK module/bdev/aio; src/bdev/aio builds them).
 */
import { resolve } from "node:path";
import type { IniSection } from "../ini.js";
import { type Located, Reader, walk } from "../section_reader.js";

/** [AIO]: `AIO <file> <name> [<blocksize> [<size in MiB>]]`. */
export interface AioBdevSpec extends Located {
  readonly kind: "aio";
  readonly name: string;
  /** Absolute path (relative paths are taken from the config file's directory). */
  readonly path: string;
  readonly blockSize: number;
  /** True when the line gave no block size: a block device's own is used (512 for a file). */
  readonly blockSizeFromDevice?: boolean;
  /** Size to create or extend the file to; undefined = use the file's size. */
  readonly blockCount?: number;
  /**
   * `DirectIo Yes|No` in [AIO]: Yes opens files O_DIRECT too, No opens block devices through the page
   * cache too; undefined (not given): files through the page cache, block devices O_DIRECT under io_uring.
   */
  readonly direct?: boolean;
}

export function readAio(r: Reader, sec: IniSection, baseDir: string): AioBdevSpec[] {
  const out: AioBdevSpec[] = [];
  let direct: boolean | undefined;
  walk(r, sec, {
    DirectIo: { apply: (e) => (direct = r.bool(e)) },
    AIO: {
      repeat: true,
      apply: (e) => {
        const v = e.values;
        if (v.length < 2 || v.length > 4) {
          throw r.error(e.line, `AIO expects <file> <name> [<block size> [<size in MiB>]]`);
        }
        // SPDK probes the block size of a disk when it is omitted (AioBdev does); for files that is 512.
        const blockSize = v.length >= 3 ? r.blockSize(e.line, "AIO block size", v[2]) : 512;
        let blockCount: number | undefined;
        if (v.length === 4)
          blockCount = (r.intValue(e.line, "AIO size in MiB", v[3], 1, 1 << 24) * 1048576) / blockSize;
        const path = resolve(baseDir, v[0]);
        // Two block devices over one file would each cache and flush it independently.
        const twin = out.find((a) => a.path === path);
        if (twin)
          throw r.error(e.line, `AIO file ${path} is already used by ${twin.name} at line ${twin.line}`);
        out.push({
          kind: "aio",
          name: v[1],
          path,
          blockSize,
          ...(v.length < 3 ? { blockSizeFromDevice: true } : {}),
          blockCount,
          file: r.file,
          line: e.line,
        });
      },
    },
  });
  return direct === undefined ? out : out.map((a) => ({ ...a, direct }));
}
