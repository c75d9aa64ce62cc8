/**
 * SPDK's legacy config file (etc/spdk/iscsi.conf.in, v18–v20.07) read into a validated model.
 *
 * Everything that can be checked without touching devices is checked here, with the file and line:
 * ranges, references between sections (Mapping → groups, AuthGroup → AuthFile, LUNn → bdev names),
 * uniqueness of names, tags, portals and TCMUR minors. The server (src/server) turns the model into
 * block devices, SCSI devices and the iSCSI target.
 */
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { dirname, resolve } from "node:path";
import {
  DEFAULT_ISCSI_OPTIONS,
  type AuthGroup,
  type AuthPolicy,
  type ChapSecret,
  type DigestPolicy,
  type InitiatorGroupConfig,
  type IscsiGlobalOptions,
  type Portal,
  type PortalGroupConfig,
  type TargetNodeConfig,
} from "../iscsi/options.js";
import { MAX_LUN } from "../scsi/lun_id.js";
import { ConfigError, type ConfigNotice } from "./errors.js";
import { parseIni, type IniEntry, type IniFile, type IniSection } from "./ini.js";

// ---------------------------------------------------------------------------------------------
// The model

interface Located {
  /** File and line of the config line this came from, for errors found later (at start-up). */
  readonly file: string;
  readonly line: number;
}

/** [Malloc]: NumberOfLuns RAM disks named Malloc0..MallocN-1. */
export interface MallocBdevSpec extends Located {
  readonly kind: "malloc";
  readonly name: string;
  readonly blockSize: number;
  readonly blockCount: number;
}

/** [AIO]: `AIO <file> <name> [<blocksize> [<size in MiB>]]`. */
export interface AioBdevSpec extends Located {
  readonly kind: "aio";
  readonly name: string;
  /** Absolute path (relative paths are taken from the config file's directory). */
  readonly path: string;
  readonly blockSize: number;
  /** Size to create or extend the file to; undefined = use the file's size. */
  readonly blockCount?: number;
}

/** [TCMUR]: `TCMUR <minor> <name> <cfgstring> [options...]` (issue #3 builds these). */
export interface TcmurBdevSpec extends Located {
  readonly kind: "tcmur";
  readonly minor: number;
  readonly name: string;
  /** The whole tcmu-runner config string, e.g. "/file//tmp/tcmur_file00". */
  readonly cfgString: string;
  /** Its first segment, the handler name ("file", "ram"). */
  readonly handler: string;
  /** Words after the config string, left for the TCMUR module to interpret. */
  readonly extra: readonly string[];
}

/** [BIO]: `BIO <bdev name> <device path> [helper [args...]]` (issue #3 builds these). */
export interface BioBdevSpec extends Located {
  readonly kind: "bio";
  readonly name: string;
  readonly path: string;
  /** The helper command and its arguments, run before the device is opened; empty = none. */
  readonly helper: readonly string[];
}

export type BdevSpec = MallocBdevSpec | AioBdevSpec | TcmurBdevSpec | BioBdevSpec;
export type BdevKind = BdevSpec["kind"];

export interface LunSpec extends Located {
  readonly id: number;
  readonly bdev: string;
}

/** [TargetNodeN]: everything of TargetNodeConfig except the SCSI device, plus its LUN table. */
export interface TargetNodeSpec extends Omit<TargetNodeConfig, "device">, Located {
  readonly section: string;
  readonly luns: readonly LunSpec[];
}

export interface SpdkConfig {
  readonly file: string;
  readonly globals: IscsiGlobalOptions;
  /** MaxQueueDepth: upper bound for every target's QueueDepth. */
  readonly maxQueueDepth: number;
  readonly authFile?: string;
  readonly authGroups: readonly AuthGroup[];
  readonly portalGroups: readonly PortalGroupConfig[];
  readonly initiatorGroups: readonly InitiatorGroupConfig[];
  readonly targetNodes: readonly TargetNodeSpec[];
  /** In creation order: Malloc, AIO, TCMUR, BIO (BIO devices may stack on TCMUR ones). */
  readonly bdevs: readonly BdevSpec[];
  /** Keys accepted but meaningless here, and other adjustments; the server logs them. */
  readonly notices: readonly ConfigNotice[];
}

/** SPDK's default for MaxQueueDepth and a target's QueueDepth (lib/iscsi/iscsi.h DEFAULT_MAX_QUEUE_DEPTH). */
export const DEFAULT_MAX_QUEUE_DEPTH = 64;
/** Our ceiling for MaxQueueDepth: the CmdSN window is a 32-bit serial number space, but beyond this
 * the per-session task array is only memory spent. */
const QUEUE_DEPTH_LIMIT = 4096;

// ---------------------------------------------------------------------------------------------
// Value helpers

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

class Reader {
  readonly notices: ConfigNotice[] = [];
  constructor(readonly file: string) {}

  error(line: number, what: string): ConfigError {
    return new ConfigError(this.file, line, what);
  }

  notice(line: number, message: string): void {
    this.notices.push({ file: this.file, line, message });
  }

  /** Exactly one value. */
  one(e: IniEntry, what: string): string {
    if (e.values.length !== 1) {
      throw this.error(
        e.line,
        `${e.key} expects ${what}, got ${e.values.length === 0 ? "nothing" : `${e.values.length} values`}`,
      );
    }
    return e.values[0];
  }

  int(e: IniEntry, min: number, max: number): number {
    const v = this.one(e, `an integer from ${min} to ${max}`);
    return this.intValue(e.line, e.key, v, min, max);
  }

  intValue(line: number, key: string, v: string, min: number, max: number): number {
    if (!/^[0-9]+$/.test(v))
      throw this.error(line, `${key} expects an integer from ${min} to ${max}, got "${v}"`);
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw this.error(line, `${key} expects an integer from ${min} to ${max}, got ${v}`);
    }
    return n;
  }

  bool(e: IniEntry): boolean {
    const v = this.one(e, "Yes or No");
    if (/^yes$/i.test(v)) return true;
    if (/^no$/i.test(v)) return false;
    throw this.error(e.line, `${e.key} expects Yes or No, got "${v}"`);
  }

  blockSize(line: number, key: string, v: string): number {
    const n = this.intValue(line, key, v, 512, 65536);
    if (n & (n - 1)) throw this.error(line, `${key} expects a power of two from 512 to 65536, got ${v}`);
    return n;
  }

  /** "AuthGroup3" → 3; "PortalGroup1" → 1 (with prefix "PortalGroup"). */
  groupRef(line: number, key: string, v: string, prefix: string): number {
    const m = new RegExp(`^${prefix}([0-9]+)$`).exec(v);
    if (!m) throw this.error(line, `${key} expects ${prefix}<N>, got "${v}"`);
    return this.intValue(line, key, m[1], 1, 65535);
  }
}

interface KeyRule {
  /** May appear more than once. */
  readonly repeat?: boolean;
  readonly apply: (e: IniEntry) => void;
}

/**
 * Walk a section's entries: known keys go to their rule, keys in `ignored` are accepted with a notice,
 * anything else is an error naming the key and the section. Non-repeatable keys given twice are errors.
 */
function walk(
  r: Reader,
  sec: IniSection,
  rules: Record<string, KeyRule>,
  ignored: readonly string[] = [],
  dynamic?: (e: IniEntry) => boolean,
): void {
  const seen = new Map<string, number>();
  for (const e of sec.entries) {
    const rule = Object.hasOwn(rules, e.key) ? rules[e.key] : undefined;
    if (rule) {
      const prev = seen.get(e.key);
      if (prev !== undefined && !rule.repeat) {
        throw r.error(e.line, `${e.key} given twice in [${sec.name}] (first at line ${prev})`);
      }
      seen.set(e.key, e.line);
      rule.apply(e);
      continue;
    }
    if (dynamic?.(e)) continue;
    if (e.key === "Comment") continue;
    if (ignored.includes(e.key)) {
      r.notice(e.line, `[${sec.name}] ${e.key} is an SPDK setting with no meaning for usertgt; ignored`);
      continue;
    }
    const known = Object.keys(rules).join(", ");
    throw r.error(e.line, `unknown key ${e.key} in [${sec.name}]; expected one of: ${known}`);
  }
}

function authPolicy(r: Reader, e: IniEntry): AuthPolicy {
  if (e.values.length === 0) throw r.error(e.line, `${e.key} expects None, Auto, CHAP or Mutual`);
  let disableChap = false;
  let requireChap = false;
  let mutualChap = false;
  // Words apply in order, as SPDK reads them: None/Auto reset, CHAP requires, Mutual implies CHAP.
  for (const v of e.values) {
    switch (v.toLowerCase()) {
      case "none":
        disableChap = true;
        requireChap = mutualChap = false;
        break;
      case "auto":
        disableChap = requireChap = mutualChap = false;
        break;
      case "chap":
        disableChap = false;
        requireChap = true;
        break;
      case "mutual":
        disableChap = false;
        requireChap = mutualChap = true;
        break;
      default:
        throw r.error(e.line, `${e.key} expects None, Auto, CHAP or Mutual, got "${v}"`);
    }
  }
  return { disableChap, requireChap, mutualChap };
}

/** AuthGroup / DiscoveryAuthGroup: AuthGroupN or None. */
function authGroupRef(r: Reader, e: IniEntry): number | undefined {
  const v = r.one(e, "AuthGroup<N> or None");
  if (/^none$/i.test(v)) return undefined;
  return r.groupRef(e.line, e.key, v, "AuthGroup");
}

function digestPolicy(r: Reader, e: IniEntry): DigestPolicy {
  if (e.values.length === 0) throw r.error(e.line, `${e.key} expects Header, Data or Auto`);
  let headerRequired = false;
  let dataRequired = false;
  for (const v of e.values) {
    switch (v.toLowerCase()) {
      case "header":
        headerRequired = true;
        break;
      case "data":
        dataRequired = true;
        break;
      case "auto":
        headerRequired = dataRequired = false;
        break;
      default:
        throw r.error(e.line, `${e.key} expects Header, Data or Auto, got "${v}"`);
    }
  }
  return { headerRequired, dataRequired };
}

const HOSTNAME_RE = /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

/** `<host>[:<port>[@<cpumask>]]`, host an IPv4 address, a name, or `[IPv6]`. Port 0 = ephemeral. */
function parsePortal(r: Reader, line: number, text: string): Portal {
  let rest = text;
  const at = rest.indexOf("@");
  if (at >= 0) {
    r.notice(line, `cpumask "${rest.slice(at + 1)}" of portal ${text} is ignored (SPDK reactor affinity)`);
    rest = rest.slice(0, at);
  }
  let host: string;
  let portText: string | undefined;
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]");
    if (close < 0) throw r.error(line, `Portal expects [IPv6 address]:port, got "${text}"`);
    host = rest.slice(1, close);
    if (isIP(host) !== 6) throw r.error(line, `Portal expects an IPv6 address inside [], got "${host}"`);
    const after = rest.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) throw r.error(line, `Portal expects ":port" after "]", got "${after}"`);
      portText = after.slice(1);
    }
  } else {
    const colons = rest.split(":").length - 1;
    if (colons > 1)
      throw r.error(line, `Portal: an IPv6 address must be written in brackets, like [::1]:3260`);
    const c = rest.indexOf(":");
    host = c >= 0 ? rest.slice(0, c) : rest;
    if (c >= 0) portText = rest.slice(c + 1);
    if (isIP(host) !== 4 && !HOSTNAME_RE.test(host)) {
      throw r.error(line, `Portal expects an IPv4 address, a host name or [IPv6], got "${host}"`);
    }
  }
  const port = portText === undefined ? 3260 : r.intValue(line, "Portal port", portText, 0, 65535);
  return { host, port };
}

function checkNetmask(r: Reader, line: number, v: string): string {
  if (/^any$/i.test(v)) return "ANY";
  const slash = v.lastIndexOf("/");
  const addr = slash >= 0 ? v.slice(0, slash) : v;
  const len = slash >= 0 ? v.slice(slash + 1) : undefined;
  let family: number;
  if (addr.startsWith("[") && addr.endsWith("]")) {
    family = isIP(addr.slice(1, -1)) === 6 ? 6 : 0;
  } else {
    family = isIP(addr) === 4 ? 4 : 0;
  }
  if (family === 0) {
    throw r.error(line, `Netmask expects ANY, an IPv4 address or CIDR, or [IPv6][/len], got "${v}"`);
  }
  if (len !== undefined) r.intValue(line, "Netmask prefix length", len, 0, family === 4 ? 32 : 128);
  return v;
}

/** RFC 7143 §4.2.7.2 name forms; iqn names take lower-case letters, digits, '-', '.', ':'. */
function checkIscsiName(r: Reader, line: number, name: string): void {
  const ok =
    /^iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.\-:]*$/.test(name) ||
    /^eui\.[0-9A-Fa-f]{16}$/.test(name) ||
    /^naa\.([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})$/.test(name);
  if (!ok || Buffer.byteLength(name) > 223) {
    throw r.error(
      line,
      `TargetName gives the iSCSI name "${name}", which is not a valid iqn./eui./naa. name ` +
        `(RFC 7143 §4.2.7: lower-case letters, digits, '-', '.', ':'; at most 223 bytes)`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Sections

const GLOBAL_IGNORED = [
  "SharedMemoryID",
  "ReactorMask",
  "NoPci",
  "TpointGroupMask",
  "LogFacility",
  "LogPrintLevel",
  "PciBlacklist",
  "PciWhitelist",
];
const BDEV_IGNORED = ["BdevIoPoolSize", "BdevIoCacheSize"];
const ISCSI_IGNORED = ["MinConnectionsPerCore", "MaxConnectionsPerCore"];

/** SPDK bdev modules that exist there but not here: a clear error rather than a missing-bdev surprise. */
const SPDK_ONLY_SECTIONS = [
  "Nvme",
  "Ioat",
  "Pmem",
  "Split",
  "Null",
  "RAID",
  "Ceph",
  "Rpc",
  "VirtioUser",
  "VirtioPci",
  "QoS",
  "Passthru",
  "iSCSI_Initiator",
  "Nvmf",
  "Subsystem",
];

interface GlobalsOut {
  globals: Mutable<IscsiGlobalOptions>;
  maxQueueDepth: number;
  authFile?: { path: string; line: number };
  discoveryAuthLine?: number;
}

function readIscsi(r: Reader, sec: IniSection, out: GlobalsOut): void {
  const g = out.globals;
  const burstMax = 16777215; // RFC 7143 §13.13-14: 512 to 2^24-1
  const intKey = (set: (n: number) => void, min: number, max: number): KeyRule => ({
    apply: (e) => set(r.int(e, min, max)),
  });
  walk(
    r,
    sec,
    {
      NodeBase: {
        apply: (e) => {
          const v = r.one(e, "an iSCSI name prefix such as iqn.2016-06.io.spdk");
          if (!/^(iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.\-:]*|eui\.|naa\.)/.test(v) || /\s/.test(v)) {
            throw r.error(
              e.line,
              `NodeBase expects an iqn. name prefix such as iqn.2016-06.io.spdk, got "${v}"`,
            );
          }
          g.nodeBase = v;
        },
      },
      AuthFile: {
        apply: (e) => {
          out.authFile = { path: r.one(e, "the path of the CHAP secrets file"), line: e.line };
        },
      },
      // SPDK: "Socket I/O timeout sec. (0 is infinite)": 0 = never drop an idle-but-unanswering connection.
      // The iSCSI layer reads Infinity as "never time out".
      Timeout: intKey((n) => (g.nopTimeoutSec = n === 0 ? Infinity : n), 0, 3600),
      NopInInterval: intKey((n) => (g.nopInIntervalSec = n), 1, 60),
      DiscoveryAuthMethod: {
        apply: (e) => {
          g.discoveryAuth = authPolicy(r, e);
          out.discoveryAuthLine = e.line;
        },
      },
      DiscoveryAuthGroup: { apply: (e) => (g.discoveryAuthGroup = authGroupRef(r, e)) },
      MaxSessions: intKey((n) => (g.maxSessions = n), 1, 65535),
      MaxConnectionsPerSession: intKey((n) => (g.maxConnectionsPerSession = n), 1, 65535),
      MaxQueueDepth: intKey((n) => (out.maxQueueDepth = n), 1, QUEUE_DEPTH_LIMIT),
      DefaultTime2Wait: intKey((n) => (g.defaultTime2Wait = n), 0, 3600),
      DefaultTime2Retain: intKey((n) => (g.defaultTime2Retain = n), 0, 3600),
      FirstBurstLength: intKey((n) => (g.firstBurstLength = n), 512, burstMax),
      MaxBurstLength: intKey((n) => (g.maxBurstLength = n), 512, burstMax),
      MaxRecvDataSegmentLength: intKey((n) => (g.maxRecvDataSegmentLength = n), 512, burstMax),
      MaxOutstandingR2T: intKey((n) => (g.maxOutstandingR2T = n), 1, 65535),
      ImmediateData: { apply: (e) => (g.immediateData = r.bool(e)) },
      InitialR2T: { apply: (e) => (g.initialR2T = r.bool(e)) },
      AllowDuplicateIsid: { apply: (e) => (g.allowDuplicateIsid = r.bool(e)) },
      ErrorRecoveryLevel: {
        apply: (e) => {
          const n = r.int(e, 0, 2);
          if (n !== 0)
            throw r.error(e.line, `ErrorRecoveryLevel ${n} is not supported; usertgt implements level 0`);
          g.errorRecoveryLevel = 0;
        },
      },
      LoginTimeout: intKey((n) => (g.loginTimeoutSec = n), 1, 3600),
    },
    ISCSI_IGNORED,
  );
  if (g.firstBurstLength > g.maxBurstLength) {
    const line = sec.entries.find((e) => e.key === "FirstBurstLength")?.line ?? sec.line;
    throw r.error(
      line,
      `FirstBurstLength ${g.firstBurstLength} exceeds MaxBurstLength ${g.maxBurstLength} (RFC 7143 §13.14)`,
    );
  }
}

function readAuthFile(ini: IniFile): AuthGroup[] {
  const r = new Reader(ini.file);
  const groups: AuthGroup[] = [];
  for (const sec of ini.sections) {
    const m = /^AuthGroup([0-9]+)$/.exec(sec.name);
    if (!m) throw r.error(sec.line, `expected an [AuthGroup<N>] section in the AuthFile, got [${sec.name}]`);
    const tag = r.intValue(sec.line, "AuthGroup tag", m[1], 1, 65535);
    const secrets: ChapSecret[] = [];
    walk(r, sec, {
      Auth: {
        repeat: true,
        apply: (e) => {
          const v = e.values;
          if (v.length !== 2 && v.length !== 4) {
            throw r.error(e.line, `Auth expects "user" "secret" or "user" "secret" "muser" "msecret"`);
          }
          if (v.some((s) => s === "")) throw r.error(e.line, `Auth: empty user name or secret`);
          if (secrets.some((s) => s.user === v[0])) {
            throw r.error(e.line, `Auth: user "${v[0]}" appears twice in [${sec.name}]`);
          }
          secrets.push(
            v.length === 4
              ? { user: v[0], secret: v[1], muser: v[2], msecret: v[3] }
              : { user: v[0], secret: v[1] },
          );
        },
      },
    });
    if (secrets.length === 0) throw r.error(sec.line, `[${sec.name}] has no Auth lines`);
    groups.push({ tag, secrets });
  }
  return groups;
}

// ---------------------------------------------------------------------------------------------
// Entry points

/**
 * Build the model from parsed INI. `authIni` is the parsed AuthFile (loadSpdkConfig reads it; callers
 * that build from text pass it themselves).
 */
export function buildSpdkConfig(ini: IniFile, authIni?: IniFile, baseDir = "."): SpdkConfig {
  const r = new Reader(ini.file);
  const out: GlobalsOut = {
    globals: { ...DEFAULT_ISCSI_OPTIONS },
    maxQueueDepth: DEFAULT_MAX_QUEUE_DEPTH,
  };
  const portalGroups: PortalGroupConfig[] = [];
  const initiatorGroups: InitiatorGroupConfig[] = [];
  const targetSections: IniSection[] = [];
  const bdevs: BdevSpec[] = [];
  const bdevLines = new Map<string, number>();
  const addBdev = (b: BdevSpec): void => {
    const prev = bdevLines.get(b.name);
    if (prev !== undefined)
      throw r.error(b.line, `block device name "${b.name}" is already used at line ${prev}`);
    bdevLines.set(b.name, b.line);
    bdevs.push(b);
  };
  const byKind: Record<BdevKind, IniSection | undefined> = {
    malloc: undefined,
    aio: undefined,
    tcmur: undefined,
    bio: undefined,
  };
  let iscsiSection: IniSection | undefined;
  // Portals must be unique across groups (two listeners cannot share one address).
  const portalSeen = new Map<string, string>();

  for (const sec of ini.sections) {
    const name = sec.name;
    let m: RegExpExecArray | null;
    if (name === "Global") {
      walk(r, sec, {}, GLOBAL_IGNORED);
    } else if (name === "Bdev") {
      walk(r, sec, {}, BDEV_IGNORED);
    } else if (name === "iSCSI") {
      iscsiSection = sec;
    } else if ((m = /^PortalGroup([0-9]+)$/.exec(name))) {
      const tag = r.intValue(sec.line, "PortalGroup tag", m[1], 1, 65535);
      portalGroups.push(readPortalGroup(r, sec, tag, portalSeen));
    } else if ((m = /^InitiatorGroup([0-9]+)$/.exec(name))) {
      initiatorGroups.push(
        readInitiatorGroup(r, sec, r.intValue(sec.line, "InitiatorGroup tag", m[1], 1, 65535)),
      );
    } else if (/^TargetNode([0-9]+)$/.test(name)) {
      targetSections.push(sec);
    } else if (name === "Malloc") {
      byKind.malloc = sec;
    } else if (name === "AIO") {
      byKind.aio = sec;
    } else if (name === "TCMUR") {
      byKind.tcmur = sec;
    } else if (name === "BIO") {
      byKind.bio = sec;
    } else if (SPDK_ONLY_SECTIONS.includes(name) || /^RAID[0-9]+$/.test(name)) {
      throw r.error(sec.line, `section [${name}] is an SPDK module that usertgt does not implement`);
    } else {
      const known = [
        "Global",
        "Bdev",
        "iSCSI",
        "PortalGroupN",
        "InitiatorGroupN",
        "TargetNodeN",
        "Malloc",
        "AIO",
        "TCMUR",
        "BIO",
      ];
      const bare = name.replace(/[0-9]+$/, "").toLowerCase();
      const hint = known.find((k) => k.replace(/N$/, "").toLowerCase() === bare);
      throw r.error(
        sec.line,
        `unknown section [${name}]${hint ? ` (did you mean [${hint}]?)` : ""}; expected one of: ${known.join(", ")}`,
      );
    }
  }

  if (iscsiSection) readIscsi(r, iscsiSection, out);

  // Bdev sections in creation order, whatever their order in the file.
  if (byKind.malloc) for (const b of readMalloc(r, byKind.malloc)) addBdev(b);
  if (byKind.aio) for (const b of readAio(r, byKind.aio, baseDir)) addBdev(b);
  if (byKind.tcmur) for (const b of readTcmur(r, byKind.tcmur)) addBdev(b);
  if (byKind.bio) for (const b of readBio(r, byKind.bio)) addBdev(b);

  // AuthFile groups.
  let authGroups: AuthGroup[] = [];
  if (authIni) authGroups = readAuthFile(authIni);
  const authTags = new Set(authGroups.map((a) => a.tag));
  const authLine = out.authFile?.line ?? iscsiSection?.line ?? 0;
  const needAuthGroup = (line: number, tag: number | undefined, key: string): void => {
    if (tag === undefined) return;
    if (!out.authFile) throw r.error(line, `${key} AuthGroup${tag} needs an AuthFile in [iSCSI]`);
    if (!authTags.has(tag)) {
      throw r.error(
        line,
        `${key} AuthGroup${tag}: no [AuthGroup${tag}] in AuthFile ${out.authFile.path} (line ${authLine})`,
      );
    }
  };
  if (iscsiSection) {
    const e = iscsiSection.entries.find((x) => x.key === "DiscoveryAuthGroup");
    if (e) needAuthGroup(e.line, out.globals.discoveryAuthGroup, "DiscoveryAuthGroup");
    if (out.globals.discoveryAuth.requireChap && out.globals.discoveryAuthGroup === undefined) {
      throw r.error(
        out.discoveryAuthLine ?? iscsiSection.line,
        `DiscoveryAuthMethod requires CHAP but no DiscoveryAuthGroup is set`,
      );
    }
  }

  const bdevUse = new Map<string, string>();
  const targetNodes = targetSections.map((sec) =>
    readTargetNode(r, sec, {
      nodeBase: out.globals.nodeBase,
      maxQueueDepth: out.maxQueueDepth,
      portalTags: new Set(portalGroups.map((p) => p.tag)),
      initiatorTags: new Set(initiatorGroups.map((p) => p.tag)),
      bdevNames: bdevLines,
      bdevUse,
      needAuthGroup,
    }),
  );
  const names = new Map<string, string>();
  for (const t of targetNodes) {
    const prev = names.get(t.name);
    if (prev) throw r.error(t.line, `target name ${t.name} is also used by [${prev}]`);
    names.set(t.name, t.section);
  }
  if (targetNodes.length === 0) r.notice(0, "no [TargetNodeN] section: the server will export nothing");

  return {
    file: ini.file,
    globals: out.globals,
    maxQueueDepth: out.maxQueueDepth,
    authFile: out.authFile?.path,
    authGroups,
    portalGroups,
    initiatorGroups,
    targetNodes,
    bdevs,
    notices: r.notices,
  };
}

/** Parse config text. `readAuthFile` is asked for the AuthFile's text when the config names one. */
export function parseSpdkConfig(
  text: string,
  file: string,
  readAuth?: (path: string) => string,
  baseDir = file.startsWith("<") ? process.cwd() : dirname(resolve(file)),
): SpdkConfig {
  const ini = parseIni(text, file);
  const authRef = findAuthFile(ini);
  let authIni: IniFile | undefined;
  if (authRef) {
    const path = resolve(baseDir, authRef.path);
    if (!readAuth) throw new ConfigError(file, authRef.line, `AuthFile ${authRef.path} cannot be read here`);
    let authText: string;
    try {
      authText = readAuth(path);
    } catch (err) {
      throw new ConfigError(file, authRef.line, `AuthFile ${path} cannot be read: ${(err as Error).message}`);
    }
    authIni = parseIni(authText, path);
  }
  return buildSpdkConfig(ini, authIni, baseDir);
}

/** Read a config file (and its AuthFile) from disk. */
export async function loadSpdkConfig(path: string): Promise<SpdkConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new ConfigError(path, 0, `cannot read the config file: ${(err as Error).message}`);
  }
  const ini = parseIni(text, path);
  const baseDir = dirname(resolve(path));
  const authRef = findAuthFile(ini);
  let authIni: IniFile | undefined;
  if (authRef) {
    const authPath = resolve(baseDir, authRef.path);
    let authText: string;
    try {
      authText = await readFile(authPath, "utf8");
    } catch (err) {
      throw new ConfigError(
        path,
        authRef.line,
        `AuthFile ${authPath} cannot be read: ${(err as Error).message}`,
      );
    }
    authIni = parseIni(authText, authPath);
  }
  return buildSpdkConfig(ini, authIni, baseDir);
}

function findAuthFile(ini: IniFile): { path: string; line: number } | undefined {
  const sec = ini.sections.find((s) => s.name === "iSCSI");
  const e = sec?.entries.find((x) => x.key === "AuthFile");
  if (!e) return undefined;
  if (e.values.length !== 1) throw new ConfigError(ini.file, e.line, `AuthFile expects one path`);
  return { path: e.values[0], line: e.line };
}

// ---------------------------------------------------------------------------------------------
// Group and target sections

function readPortalGroup(
  r: Reader,
  sec: IniSection,
  tag: number,
  seen: Map<string, string>,
): PortalGroupConfig {
  const portals: Portal[] = [];
  walk(r, sec, {
    Portal: {
      repeat: true,
      apply: (e) => {
        if (e.values.length !== 2)
          throw r.error(e.line, `Portal expects <label> <host>[:<port>], e.g. Portal DA1 127.0.0.1:3260`);
        const p = parsePortal(r, e.line, e.values[1]);
        // Port 0 is ephemeral: every such portal gets its own port.
        const key = `${p.host}:${p.port}`;
        const prev = seen.get(key);
        if (p.port !== 0 && prev !== undefined) {
          throw r.error(
            e.line,
            prev === sec.name
              ? `portal ${key} is listed twice in [${sec.name}]`
              : `portal ${key} is also in [${prev}]`,
          );
        }
        seen.set(key, sec.name);
        portals.push(p);
      },
    },
  });
  if (portals.length === 0) throw r.error(sec.line, `[${sec.name}] needs at least one Portal line`);
  if (portals.length > 1024) throw r.error(sec.line, `[${sec.name}] has more than 1024 portals`);
  return { tag, portals };
}

function readInitiatorGroup(r: Reader, sec: IniSection, tag: number): InitiatorGroupConfig {
  const initiators: string[] = [];
  const netmasks: string[] = [];
  walk(r, sec, {
    InitiatorName: {
      repeat: true,
      apply: (e) => {
        if (e.values.length === 0)
          throw r.error(e.line, `InitiatorName expects ANY, an initiator name or !name`);
        for (const v of e.values) {
          // SPDK treats ALL as ANY (lib/iscsi/init_grp.c).
          const name = /^(any|all)$/i.test(v) ? "ANY" : v;
          if (name === "!" || /[\s]/.test(name))
            throw r.error(e.line, `InitiatorName: "${v}" is not an initiator name`);
          initiators.push(name);
        }
      },
    },
    Netmask: {
      repeat: true,
      apply: (e) => {
        if (e.values.length === 0) throw r.error(e.line, `Netmask expects ANY, an address or a CIDR`);
        for (const v of e.values) netmasks.push(checkNetmask(r, e.line, v));
      },
    },
  });
  if (initiators.length === 0)
    throw r.error(sec.line, `[${sec.name}] needs an InitiatorName line (ANY allows all)`);
  if (netmasks.length === 0) throw r.error(sec.line, `[${sec.name}] needs a Netmask line (ANY allows all)`);
  if (initiators.length > 256 || netmasks.length > 256) {
    throw r.error(sec.line, `[${sec.name}] has more than 256 initiator names or netmasks`);
  }
  return { tag, initiators, netmasks };
}

interface TargetContext {
  nodeBase: string;
  maxQueueDepth: number;
  portalTags: Set<number>;
  initiatorTags: Set<number>;
  bdevNames: Map<string, number>;
  /** bdev name → "LUNn of [TargetNodeM]" for bdevs already exported. */
  bdevUse: Map<string, string>;
  needAuthGroup: (line: number, tag: number | undefined, key: string) => void;
}

function readTargetNode(r: Reader, sec: IniSection, ctx: TargetContext): TargetNodeSpec {
  let name: string | undefined;
  let alias: string | undefined;
  const maps: { portalGroup: number; initiatorGroup: number }[] = [];
  let auth: AuthPolicy = { disableChap: false, requireChap: false, mutualChap: false };
  let authLine = sec.line;
  let authGroup: number | undefined;
  let digest: DigestPolicy = { headerRequired: false, dataRequired: false };
  let queueDepth = Math.min(DEFAULT_MAX_QUEUE_DEPTH, ctx.maxQueueDepth);
  const luns: LunSpec[] = [];

  walk(
    r,
    sec,
    {
      TargetName: {
        apply: (e) => {
          const v = r.one(e, "a target name (disk1, or a full iqn./eui./naa. name)");
          // SPDK: a name that is not already a full iSCSI name gets "<NodeBase>:" in front.
          const full = /^(iqn|eui|naa)\./i.test(v) ? v : `${ctx.nodeBase}:${v}`;
          checkIscsiName(r, e.line, full);
          name = full;
        },
      },
      TargetAlias: { apply: (e) => (alias = r.one(e, "one (quoted) alias")) },
      Mapping: {
        repeat: true,
        apply: (e) => {
          if (e.values.length !== 2)
            throw r.error(e.line, `Mapping expects PortalGroup<N> InitiatorGroup<M>`);
          const pg = r.groupRef(e.line, "Mapping", e.values[0], "PortalGroup");
          const ig = r.groupRef(e.line, "Mapping", e.values[1], "InitiatorGroup");
          if (!ctx.portalTags.has(pg))
            throw r.error(e.line, `Mapping names PortalGroup${pg}, which is not defined`);
          if (!ctx.initiatorTags.has(ig))
            throw r.error(e.line, `Mapping names InitiatorGroup${ig}, which is not defined`);
          if (maps.some((m) => m.portalGroup === pg && m.initiatorGroup === ig)) {
            throw r.error(e.line, `Mapping PortalGroup${pg} InitiatorGroup${ig} is given twice`);
          }
          maps.push({ portalGroup: pg, initiatorGroup: ig });
        },
      },
      AuthMethod: {
        apply: (e) => {
          auth = authPolicy(r, e);
          authLine = e.line;
        },
      },
      AuthGroup: {
        apply: (e) => {
          authGroup = authGroupRef(r, e);
          ctx.needAuthGroup(e.line, authGroup, "AuthGroup");
        },
      },
      UseDigest: { apply: (e) => (digest = digestPolicy(r, e)) },
      QueueDepth: { apply: (e) => (queueDepth = r.int(e, 1, ctx.maxQueueDepth)) },
    },
    [],
    (e) => {
      const m = /^LUN([0-9]+)$/.exec(e.key);
      if (!m) return false;
      const id = r.intValue(e.line, e.key, m[1], 0, MAX_LUN);
      const bdev = r.one(e, "the name of a block device");
      if (luns.some((l) => l.id === id)) throw r.error(e.line, `LUN${id} is given twice in [${sec.name}]`);
      if (!ctx.bdevNames.has(bdev)) {
        const known = [...ctx.bdevNames.keys()].join(", ") || "none";
        throw r.error(
          e.line,
          `LUN${id} names block device "${bdev}", which no section defines (defined: ${known})`,
        );
      }
      const used = ctx.bdevUse.get(bdev);
      if (used) throw r.error(e.line, `block device "${bdev}" is already exported as ${used}`);
      ctx.bdevUse.set(bdev, `LUN${id} of [${sec.name}]`);
      luns.push({ id, bdev, file: r.file, line: e.line });
      return true;
    },
  );

  if (name === undefined) throw r.error(sec.line, `[${sec.name}] needs a TargetName`);
  if (maps.length === 0)
    throw r.error(sec.line, `[${sec.name}] needs at least one Mapping PortalGroupN InitiatorGroupM`);
  if (luns.length === 0) throw r.error(sec.line, `[${sec.name}] needs at least one LUN (LUN0 <bdev>)`);
  if (!luns.some((l) => l.id === 0)) {
    // SAM-5 requires LUN 0 to answer REPORT LUNS; SPDK's example makes LUN0 mandatory too.
    throw r.error(sec.line, `[${sec.name}] needs a LUN0`);
  }
  if (auth.requireChap && authGroup === undefined) {
    throw r.error(authLine, `AuthMethod requires CHAP but [${sec.name}] has no AuthGroup`);
  }
  luns.sort((a, b) => a.id - b.id);
  return {
    section: sec.name,
    file: r.file,
    line: sec.line,
    name,
    alias,
    maps,
    auth,
    authGroup,
    digest,
    queueDepth,
    luns,
  };
}

// ---------------------------------------------------------------------------------------------
// Block device sections

function readMalloc(r: Reader, sec: IniSection): MallocBdevSpec[] {
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

function readAio(r: Reader, sec: IniSection, baseDir: string): AioBdevSpec[] {
  const out: AioBdevSpec[] = [];
  walk(r, sec, {
    AIO: {
      repeat: true,
      apply: (e) => {
        const v = e.values;
        if (v.length < 2 || v.length > 4) {
          throw r.error(e.line, `AIO expects <file> <name> [<block size> [<size in MiB>]]`);
        }
        // SPDK probes the block size of a disk when it is omitted; for files that is 512.
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
          blockCount,
          file: r.file,
          line: e.line,
        });
      },
    },
  });
  return out;
}

function readTcmur(r: Reader, sec: IniSection): TcmurBdevSpec[] {
  const out: TcmurBdevSpec[] = [];
  walk(r, sec, {
    TCMUR: {
      repeat: true,
      apply: (e) => {
        const v = e.values;
        if (v.length < 3)
          throw r.error(e.line, `TCMUR expects <minor> <name> <cfgstring>, e.g. TCMUR 0 ram_a /ram/tmp/x`);
        // The seed: "tcmur-minor-number should be less than 256 and unique across TCMUR instances".
        const minor = r.intValue(e.line, "TCMUR minor", v[0], 0, 255);
        const dup = out.find((t) => t.minor === minor);
        if (dup) throw r.error(e.line, `TCMUR minor ${minor} is already used at line ${dup.line}`);
        const m = /^\/([A-Za-z0-9_]+)\//.exec(v[2]);
        if (!m)
          throw r.error(e.line, `TCMUR config string expects /<handler>/<handler config>, got "${v[2]}"`);
        out.push({
          kind: "tcmur",
          minor,
          name: v[1],
          cfgString: v[2],
          handler: m[1],
          extra: v.slice(3),
          file: r.file,
          line: e.line,
        });
      },
    },
  });
  return out;
}

function readBio(r: Reader, sec: IniSection): BioBdevSpec[] {
  const out: BioBdevSpec[] = [];
  walk(r, sec, {
    BIO: {
      repeat: true,
      apply: (e) => {
        const v = e.values;
        if (v.length < 2) throw r.error(e.line, `BIO expects <bdev name> <device path> [helper [args...]]`);
        if (!v[1].startsWith("/")) throw r.error(e.line, `BIO device path must be absolute, got "${v[1]}"`);
        out.push({ kind: "bio", name: v[0], path: v[1], helper: v.slice(2), file: r.file, line: e.line });
      },
    },
  });
  return out;
}
