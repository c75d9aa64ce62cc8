/**
 * SPDK's legacy config file (etc/spdk/iscsi.conf.in, v18–v20.07) read into a validated model.
 *
 * Everything that can be checked without touching devices is checked here, with the file and line:
 * ranges, references between sections (Mapping → groups, AuthGroup → AuthFile, LUNn → bdev names),
 * uniqueness of names, tags, portals and TCMUR minors. The server (src/server) turns the model into
 * block devices, SCSI devices and the iSCSI target.
 *
 * This file reads the file as a whole (which sections exist, cross-section references, the AuthFile) and
 * is the one import for the model; each section is parsed in its own file under sections/ (iscsi.ts,
 * portal_group.ts, initiator_group.ts, target_node.ts, auth_file.ts, and one per block device module:
 * malloc.ts, aio.ts, tcmur.ts, bio.ts), with the value syntax they share in section_reader.ts and
 * sections/iscsi_values.ts.
 */
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import {
  DEFAULT_ISCSI_OPTIONS,
  type AuthGroup,
  type InitiatorGroupConfig,
  type IscsiGlobalOptions,
  type PortalGroupConfig,
} from "../iscsi/options.js";
import { ConfigError, type ConfigNotice } from "./errors.js";
import { parseIni, type IniFile, type IniSection } from "./ini.js";
import { Reader, walk } from "./section_reader.js";
import { parseCpuMask } from "../util/cpu_mask.js";
import { DEFAULT_MAX_QUEUE_DEPTH, type GlobalsOut, readIscsi } from "./sections/iscsi.js";
import { readAuthFile } from "./sections/auth_file.js";
import { readPortalGroup } from "./sections/portal_group.js";
import { readInitiatorGroup } from "./sections/initiator_group.js";
import { type TargetNodeSpec, readTargetNode } from "./sections/target_node.js";
import { type MallocBdevSpec, readMalloc } from "./sections/malloc.js";
import { type AioBdevSpec, readAio } from "./sections/aio.js";
import { type TcmurBdevSpec, readTcmur } from "./sections/tcmur.js";
import { type BioBdevSpec, readBio } from "./sections/bio.js";

export type { MallocBdevSpec } from "./sections/malloc.js";
export type { AioBdevSpec } from "./sections/aio.js";
export type { TcmurBdevSpec } from "./sections/tcmur.js";
export type { BioBdevSpec } from "./sections/bio.js";
export type { LunSpec, TargetNodeSpec } from "./sections/target_node.js";
export { DEFAULT_MAX_QUEUE_DEPTH } from "./sections/iscsi.js";

export type BdevSpec = MallocBdevSpec | AioBdevSpec | TcmurBdevSpec | BioBdevSpec;
export type BdevKind = BdevSpec["kind"];

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
  /** [Global] ReactorMask: the CPUs the process runs on (SPDK: its reactors'), with its line. */
  readonly reactorMask?: { readonly text: string; readonly cpus: readonly number[]; readonly line: number };
  /** Keys accepted but meaningless here, and other adjustments; the server logs them. */
  readonly notices: readonly ConfigNotice[];
}

const GLOBAL_IGNORED = [
  "SharedMemoryID",
  "NoPci",
  "TpointGroupMask",
  "LogFacility",
  "LogPrintLevel",
  "PciBlacklist",
  "PciWhitelist",
];
const BDEV_IGNORED = ["BdevIoPoolSize", "BdevIoCacheSize"];

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
  let reactorMask: SpdkConfig["reactorMask"];

  for (const sec of ini.sections) {
    const name = sec.name;
    let m: RegExpExecArray | null;
    if (name === "Global") {
      walk(
        r,
        sec,
        {
          ReactorMask: {
            apply: (e) => {
              const text = r.one(e, "a CPU mask such as 0x1 or [0-1]");
              try {
                reactorMask = { text, cpus: parseCpuMask(text), line: e.line };
              } catch (err) {
                throw r.error(e.line, `ReactorMask: ${(err as Error).message}`);
              }
            },
          },
        },
        GLOBAL_IGNORED,
      );
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
    ...(reactorMask ? { reactorMask } : {}),
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
