/**
 * The in-memory form of a DRBD 8.4 configuration (drbd.conf(5) for 8.4, as drbd-utils' v84 parser reads it)
 * and the table of options it accepts, with each option's unit, range and default as drbd_limits.h and
 * drbd-utils' v84/config_flags.c define them.
 */

/** Where a configuration element was written: used by every validation error. */
export interface SourcePos {
  file: string;
  line: number;
}

export class DrbdConfigError extends Error {
  constructor(
    readonly where: SourcePos,
    detail: string,
  ) {
    super(`${where.file}:${where.line}: ${detail}`);
    this.name = "DrbdConfigError";
  }
}

export type OptionValue = number | string | boolean;

/** Options of one section, in the order written, each with where it was written. */
export type OptionMap = Map<string, { value: OptionValue; where: SourcePos }>;

export type OptionSectionName = "global" | "net" | "disk" | "options" | "startup" | "handlers";

/**
 * The unit a bare number is read in (drbd-utils' new_strtoll default unit): "1" plain, "k" KiB,
 * "s" 512-byte sectors. A suffix K/M/G/s on the value converts it into this unit, rounding up.
 */
export type NumericScale = "1" | "k" | "s";

export interface NumericOption {
  kind: "numeric";
  scale: NumericScale;
  min: number;
  max: number;
  def?: number;
  /** The unit name drbdsetup shows for the value, for dump comments. */
  unit?: string;
}
export interface EnumOption {
  kind: "enum";
  values: readonly string[];
  def: string;
  caseInsensitive?: boolean;
  /** Values made of one of these prefixes and a non-empty rest are accepted as written (discard-node-NAME). */
  prefixes?: readonly string[];
}
export interface BooleanOption {
  kind: "boolean";
  def: boolean;
}
export interface StringOption {
  kind: "string";
}
export type OptionSpec = NumericOption | EnumOption | BooleanOption | StringOption;

const num = (scale: NumericScale, min: number, max: number, def?: number, unit?: string): NumericOption => ({
  kind: "numeric",
  scale,
  min,
  max,
  ...(def === undefined ? {} : { def }),
  ...(unit === undefined ? {} : { unit }),
});
const bool = (def: boolean): BooleanOption => ({ kind: "boolean", def });
const oneOf = (values: readonly string[], def: string): EnumOption => ({ kind: "enum", values, def });
const str: StringOption = { kind: "string" };

/** after-sb policy names per number of primaries (drbd-utils v84 config_flags.c maps). */
export const AFTER_SB_0PRI = [
  "disconnect",
  "discard-younger-primary",
  "discard-older-primary",
  "discard-zero-changes",
  "discard-least-changes",
  "discard-local",
  "discard-remote",
] as const;
export const AFTER_SB_1PRI = [
  "disconnect",
  "consensus",
  "violently-as0p",
  "discard-secondary",
  "call-pri-lost-after-sb",
] as const;
export const AFTER_SB_2PRI = ["disconnect", "violently-as0p", "call-pri-lost-after-sb"] as const;

/**
 * Every option of every section, with drbd_limits.h (v84) ranges and defaults. Times follow the kernel's units:
 * `timeout`, `ping-timeout`, `c-plan-ahead`, `c-delay-target`, `disk-timeout` in 0.1 s; `ping-int`,
 * `connect-int` in s. Rates (`resync-rate`, `c-min-rate`, `c-max-rate`) in KiB/s; `c-fill-target` and
 * `congestion-fill` in sectors.
 */
export const OPTION_SPECS: Record<OptionSectionName, Record<string, OptionSpec>> = {
  global: {
    "usage-count": oneOf(["yes", "no", "ask"], "ask"),
    "minor-count": num("1", 1, 1 << 20, 32),
    "dialog-refresh": num("1", 0, 600, 1),
    "disable-ip-verification": bool(false),
    "udev-always-use-vnr": bool(false),
    "cmd-timeout-short": num("1", 0, 900, 5),
    "cmd-timeout-medium": num("1", 0, 900, 121),
    "cmd-timeout-long": num("1", 0, 900, 600),
  },
  net: {
    protocol: { kind: "enum", values: ["A", "B", "C"], def: "C", caseInsensitive: true },
    timeout: num("1", 1, 600, 60, "1/10 seconds"),
    "max-epoch-size": num("1", 1, 20000, 2048),
    "max-buffers": num("1", 32, 131072, 2048),
    "unplug-watermark": num("1", 1, 131072, 128),
    "connect-int": num("1", 1, 120, 10, "seconds"),
    "ping-int": num("1", 1, 120, 10, "seconds"),
    "sndbuf-size": num("1", 0, 10 << 20, 0, "bytes"),
    "rcvbuf-size": num("1", 0, 10 << 20, 0, "bytes"),
    "ko-count": num("1", 0, 200, 7),
    "allow-two-primaries": bool(false),
    "cram-hmac-alg": str,
    "shared-secret": str,
    "after-sb-0pri": { ...oneOf(AFTER_SB_0PRI, "disconnect"), prefixes: ["discard-node-"] },
    "after-sb-1pri": oneOf(AFTER_SB_1PRI, "disconnect"),
    "after-sb-2pri": oneOf(AFTER_SB_2PRI, "disconnect"),
    "always-asbp": bool(false),
    "rr-conflict": oneOf(["disconnect", "violently", "call-pri-lost"], "disconnect"),
    "ping-timeout": num("1", 1, 300, 5, "1/10 seconds"),
    "data-integrity-alg": str,
    "tcp-cork": bool(true),
    "on-congestion": oneOf(["block", "pull-ahead", "disconnect"], "block"),
    "congestion-fill": num("s", 0, 10 << 21, 0, "bytes"),
    "congestion-extents": num("1", 7, 0xfffe, 1237),
    "csums-alg": str,
    "csums-after-crash-only": bool(false),
    "verify-alg": str,
    "use-rle": bool(true),
    "socket-check-timeout": num("1", 0, 300, 0),
    "discard-my-data": bool(false),
  },
  disk: {
    "on-io-error": oneOf(["pass_on", "call-local-io-error", "detach"], "detach"),
    fencing: oneOf(["dont-care", "resource-only", "resource-and-stonith"], "dont-care"),
    "disk-barrier": bool(false),
    "disk-flushes": bool(true),
    "disk-drain": bool(true),
    "md-flushes": bool(true),
    "resync-rate": num("k", 1, 4 << 20, 250, "bytes/second"),
    "resync-after": num("1", -1, (1 << 20) - 1, -1),
    "al-extents": num("1", 7, 0xfffe, 1237),
    "al-updates": bool(true),
    "discard-zeroes-if-aligned": bool(true),
    "disable-write-same": bool(false),
    "c-plan-ahead": num("1", 0, 300, 20, "1/10 seconds"),
    "c-delay-target": num("1", 1, 100, 10, "1/10 seconds"),
    "c-fill-target": num("s", 0, 1 << 20, 100, "bytes"),
    "c-max-rate": num("k", 250, 4 << 20, 102400, "bytes/second"),
    "c-min-rate": num("k", 0, 4 << 20, 250, "bytes/second"),
    "disk-timeout": num("1", 0, 6000, 0, "1/10 seconds"),
    "read-balancing": oneOf(
      [
        "prefer-local",
        "prefer-remote",
        "round-robin",
        "least-pending",
        "when-congested-remote",
        "32K-striping",
        "64K-striping",
        "128K-striping",
        "256K-striping",
        "512K-striping",
        "1M-striping",
      ],
      "prefer-local",
    ),
    "rs-discard-granularity": num("1", 0, 1 << 20, 0, "bytes"),
    size: num("s", 0, 2 * 2 ** 40, 0, "bytes"),
  },
  options: {
    "cpu-mask": str,
    "on-no-data-accessible": oneOf(["io-error", "suspend-io"], "io-error"),
  },
  startup: {
    "wfc-timeout": num("1", 0, 300000, 0, "seconds"),
    "degr-wfc-timeout": num("1", 0, 300000, 0, "seconds"),
    "outdated-wfc-timeout": num("1", 0, 300000, 0, "seconds"),
    "wait-after-sb": bool(false),
    "become-primary-on": str,
  },
  handlers: Object.fromEntries(
    [
      "pri-on-incon-degr",
      "pri-lost-after-sb",
      "pri-lost",
      "fence-peer",
      "unfence-peer",
      "local-io-error",
      "initial-split-brain",
      "split-brain",
      "before-resync-target",
      "after-resync-target",
      "before-resync-source",
      "out-of-sync",
    ].map((name) => [name, str]),
  ),
};

/** Names drbd-utils still accepts for renamed options (drbdadm_parser.c deprecated aliases). */
export const OPTION_ALIASES: Partial<Record<OptionSectionName, Record<string, string>>> = {
  handlers: { "outdate-peer": "fence-peer" },
  disk: { rate: "resync-rate", after: "resync-after" },
};

const SUFFIX_SHIFT: Record<string, number> = { K: 10, k: 10, M: 20, m: 20, G: 30, g: 30, s: 9 };
const SCALE_SHIFT: Record<NumericScale, number> = { "1": 0, k: 10, s: 9 };

/**
 * Reads a number with an optional unit suffix into the option's own unit, as drbd-utils' new_strtoll does:
 * K/M/G are powers of 1024, `s` is 512-byte sectors; converting down rounds up. Returns a message on error.
 */
export function parseScaledNumber(text: string, scale: NumericScale): number | string {
  const m = /^(-?\d+)([A-Za-z]?)$/.exec(text);
  if (!m) return `a number with optional K/M/G/s suffix`;
  const n = BigInt(m[1] as string);
  const suffix = m[2] as string;
  if (suffix === "") return Number(n);
  const from = SUFFIX_SHIFT[suffix];
  if (from === undefined) return `a unit of K, M, G or s (not "${suffix}")`;
  const shift = BigInt(from - SCALE_SHIFT[scale]);
  const value = shift >= 0n ? n << shift : (n + (1n << -shift) - 1n) >> -shift;
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) return "a number small enough to represent";
  return Number(value);
}

export interface Address {
  family: "ipv4" | "ipv6";
  ip: string;
  port: number;
}

export interface VolumeConfig {
  volume: number;
  /** `/dev/drbdN` (a bare `drbdN` is read as `/dev/drbdN`, as drbd-utils does). */
  device: string;
  minor: number;
  disk: string;
  /** "internal", or the external metadata device. */
  metaDisk: string;
  /** "internal", "flexible" (external, sized to fit) or the 128 MiB slot index of indexed external metadata. */
  metaIndex: "internal" | "flexible" | number;
  /** Per-volume `disk { }` options, over the resource's. */
  diskOptions: OptionMap;
  where: SourcePos;
}

export interface HostConfig {
  /** Host names of the `on` section (usually one); the first is the node's name. */
  names: string[];
  nodeId?: number;
  address: Address;
  volumes: VolumeConfig[];
  where: SourcePos;
}

export interface SectionOptions {
  net: OptionMap;
  disk: OptionMap;
  options: OptionMap;
  startup: OptionMap;
  handlers: OptionMap;
}

export interface ResourceConfig extends SectionOptions {
  name: string;
  hosts: HostConfig[];
  where: SourcePos;
}

export interface DrbdConfig {
  /** Every file read, in order: the main file, then includes. */
  files: string[];
  global: OptionMap;
  common: SectionOptions;
  /** Resources with `common` already merged in (resource values win). */
  resources: ResourceConfig[];
}

/** The value of an option: as configured, else its default, else undefined (unset string options). */
export function optionValue(
  map: OptionMap,
  section: OptionSectionName,
  name: string,
): OptionValue | undefined {
  const set = map.get(name);
  if (set) return set.value;
  const spec = OPTION_SPECS[section][name];
  if (!spec) throw new Error(`unknown ${section} option "${name}"`);
  return spec.kind === "string" ? undefined : spec.def;
}

export function numericOption(map: OptionMap, section: OptionSectionName, name: string): number {
  const v = optionValue(map, section, name);
  if (typeof v !== "number") throw new Error(`${section} option "${name}" is not numeric`);
  return v;
}

/** Every option of a section with its effective value (configured, else default; unset strings omitted). */
export function effectiveOptions(map: OptionMap, section: OptionSectionName): Record<string, OptionValue> {
  const out: Record<string, OptionValue> = {};
  for (const name of Object.keys(OPTION_SPECS[section])) {
    const v = optionValue(map, section, name);
    if (v !== undefined) out[name] = v;
  }
  return out;
}
