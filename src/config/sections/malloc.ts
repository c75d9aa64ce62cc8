/**
 * [Malloc]: NumberOfLuns RAM disks (SPDK module/bdev/malloc; src/bdev/malloc builds them).
 */
import type { IniSection } from "../ini.js";
import { type Located, Reader, walk } from "../section_reader.js";

/** [Malloc]: NumberOfLuns RAM disks named Malloc0..MallocN-1. */
export interface MallocBdevSpec extends Located {
  readonly kind: "malloc";
  readonly name: string;
  readonly blockSize: number;
  readonly blockCount: number;
}

export function readMalloc(r: Reader, sec: IniSection): MallocBdevSpec[] {
  let count = 0;
  let sizeMB: number | undefined;
  let blockSize = 512; // SPDK's default
  let countLine = sec.line;
  walk(r, sec, {
    NumberOfLuns: {
      apply: (e) => {
        count = r.int(e, 0, 1024);
        countLine = e.line;
      },
    },
    LunSizeInMB: { apply: (e) => (sizeMB = r.int(e, 1, 1 << 20)) },
    BlockSize: { apply: (e) => (blockSize = r.blockSize(e.line, "BlockSize", r.one(e, "a block size"))) },
  });
  if (count > 0 && sizeMB === undefined) throw r.error(countLine, `[Malloc] NumberOfLuns needs LunSizeInMB`);
  const out: MallocBdevSpec[] = [];
  for (let i = 0; i < count; i++) {
    out.push({
      kind: "malloc",
      name: `Malloc${i}`,
      blockSize,
      blockCount: ((sizeMB ?? 0) * 1048576) / blockSize,
      file: r.file,
      line: countLine,
    });
  }
  return out;
}
