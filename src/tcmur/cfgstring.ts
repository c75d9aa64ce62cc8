/**
 * The TCMUR cfgstring: `/<handler>/<handler-specific part>[?key=value&...]`, as tcmu-runner's
 * `/file//tmp/x` (handler "file", path "/tmp/x"). The options after `?` are ours: tcmu-runner takes
 * size and block size from the kernel's TCMU configfs, which a user-space target does not have.
 */

export interface TcmurCfg {
  /** The whole cfgstring as written. */
  readonly raw: string;
  readonly handler: string;
  /** Everything after `/<handler>/` up to `?`: a file path for "file", a label for "ram". */
  readonly path: string;
  /** Device size in bytes (`size=`), when given. */
  readonly sizeBytes?: number;
  /** Logical block size (`bs=`), when given. */
  readonly blockSize?: number;
  /** `ro=1`: serve the device read-only. */
  readonly readOnly: boolean;
  /** Every option, including ones only a loaded handler understands. */
  readonly options: ReadonlyMap<string, string>;
}

const HANDLER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const SIZE = /^(\d+)([KMGT]i?B?|[kmgt])?$/;
const UNIT: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Parse a size such as `4096`, `256M`, `1G`, `2GiB` (binary units). */
export function parseSize(text: string, what: string): number {
  const m = SIZE.exec(text.trim());
  if (!m) throw new Error(`${what}: "${text}" is not a size (digits with an optional K/M/G/T suffix)`);
  const n = Number(m[1]) * (m[2] ? UNIT[m[2][0].toLowerCase()] : 1);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${what}: "${text}" is not a positive size`);
  return n;
}

/** Parse a cfgstring; errors name the cfgstring and what is wrong with it. */
export function parseCfgstring(raw: string): TcmurCfg {
  const where = `TCMUR cfgstring "${raw}"`;
  if (!raw.startsWith("/")) throw new Error(`${where}: must start with "/<handler>/"`);
  const q = raw.indexOf("?");
  const body = q < 0 ? raw : raw.slice(0, q);
  const slash = body.indexOf("/", 1);
  const handler = slash < 0 ? body.slice(1) : body.slice(1, slash);
  if (!HANDLER_NAME.test(handler)) throw new Error(`${where}: "${handler}" is not a handler name`);
  const path = slash < 0 ? "" : body.slice(slash + 1);

  const options = new Map<string, string>();
  if (q >= 0) {
    for (const pair of raw.slice(q + 1).split("&")) {
      if (pair === "") continue;
      const eq = pair.indexOf("=");
      const key = eq < 0 ? pair : pair.slice(0, eq);
      options.set(key, eq < 0 ? "" : pair.slice(eq + 1));
    }
  }
  let sizeBytes: number | undefined;
  let blockSize: number | undefined;
  const size = options.get("size");
  if (size !== undefined) sizeBytes = parseSize(size, `${where}: size`);
  const bs = options.get("bs");
  if (bs !== undefined) {
    blockSize = parseSize(bs, `${where}: bs`);
    if (blockSize < 512 || blockSize > 65536 || blockSize & (blockSize - 1)) {
      throw new Error(`${where}: bs=${bs} is not a power of two from 512 to 65536`);
    }
  }
  const ro = options.get("ro");
  if (ro !== undefined && ro !== "0" && ro !== "1" && ro !== "") {
    throw new Error(`${where}: ro=${ro} must be 0 or 1`);
  }
  const readOnly = ro === "1" || ro === "";
  if (sizeBytes !== undefined && blockSize !== undefined && sizeBytes % blockSize !== 0) {
    throw new Error(`${where}: size ${sizeBytes} is not a multiple of bs ${blockSize}`);
  }
  return { raw, handler, path, sizeBytes, blockSize, readOnly, options };
}
