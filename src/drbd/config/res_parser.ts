/**
 * A reader for DRBD 8.4 resource files (drbd.conf(5), the grammar of drbd-utils' v84 drbdadm_parser.c):
 * `global {}`, `common {}`, `include "glob";`, `skip ... {}` and `resource NAME { on HOST {...} ... }`,
 * plus the `node-id` keyword DRBD 9 files carry. Every error is `file:line: expected X, got Y` or names the
 * offending line. Configuration is read once at start-up, so synchronous file access is fine here.
 */
import { createHmac, getHashes } from "node:crypto";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { hostname } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
import {
  DrbdConfigError,
  OPTION_ALIASES,
  OPTION_SPECS,
  parseScaledNumber,
  type Address,
  type DrbdConfig,
  type HostConfig,
  type OptionMap,
  type OptionSectionName,
  type OptionValue,
  type ResourceConfig,
  type SectionOptions,
  type SourcePos,
  type VolumeConfig,
} from "./model.js";
import { describeToken, tokenize, type Token } from "./res_lexer.js";
import { VERIFY_ALGS } from "../verify.js";

const SECTIONS = ["net", "disk", "options", "startup", "handlers"] as const;
/** DRBD_MINOR_NUMBER_MAX (drbd_limits.h). */
const MAX_MINOR = (1 << 20) - 1;

function emptySections(): SectionOptions {
  return { net: new Map(), disk: new Map(), options: new Map(), startup: new Map(), handlers: new Map() };
}

const posOf = (t: Token): SourcePos => ({ file: t.file, line: t.line });

function expected(what: string, got: Token): DrbdConfigError {
  return new DrbdConfigError(posOf(got), `expected ${what}, got ${describeToken(got)}`);
}

/** A volume as written, before resource-level defaults are filled in. */
interface PartialVolume {
  volume: number;
  device?: string;
  minor?: number;
  disk?: string;
  metaDisk?: string;
  metaIndex?: VolumeConfig["metaIndex"];
  diskOptions: OptionMap;
  where: SourcePos;
}

interface PartialHost {
  names: string[];
  nodeId?: number;
  address?: Address;
  volumes: Map<number, PartialVolume>;
  where: SourcePos;
}

class TokenStream {
  private i = 0;
  constructor(private readonly tokens: Token[]) {}
  peek(): Token {
    return this.tokens[this.i] as Token;
  }
  next(): Token {
    const t = this.tokens[this.i] as Token;
    if (t.kind !== "eof") this.i++;
    return t;
  }
  expect(kind: Token["kind"], what: string = `'${kind}'`): Token {
    const t = this.next();
    if (t.kind !== kind) throw expected(what, t);
    return t;
  }
  /** A value: a bare word or a quoted string. */
  value(what: string): Token {
    const t = this.next();
    if (t.kind !== "word" && t.kind !== "string") throw expected(what, t);
    return t;
  }
  integer(what: string): number {
    const t = this.next();
    if (t.kind !== "word" || !/^\d+$/.test(t.text)) throw expected(what, t);
    return Number(t.text);
  }
}

export interface ParseOptions {
  /** Text to parse instead of reading `file` (the name is still used for errors and includes). */
  text?: string;
}

/** Parses a configuration file and everything it includes. */
export function parseDrbdConfig(file: string, opts: ParseOptions = {}): DrbdConfig {
  const parser = new ResParser();
  parser.parseFile(resolve(file), opts.text);
  return parser.finish();
}

class ResParser {
  private readonly files: string[] = [];
  private readonly global: OptionMap = new Map();
  private globalSeen: SourcePos | undefined;
  private common: SectionOptions | undefined;
  private readonly resources: {
    res: ResourceConfig;
    partialHosts: PartialHost[];
    defaults: PartialVolumeDefaults;
  }[] = [];

  parseFile(file: string, text?: string): void {
    if (this.files.includes(file)) return; // drbd-utils reads each file once (was_file_already_seen)
    this.files.push(file);
    let source = text;
    if (source === undefined) {
      try {
        source = readFileSync(file, "utf8");
      } catch (e) {
        throw new Error(`cannot read DRBD configuration ${file}: ${(e as Error).message}`, { cause: e });
      }
    }
    const ts = new TokenStream(tokenize(source, file));
    for (;;) {
      const t = ts.next();
      if (t.kind === "eof") return;
      if (t.kind !== "word") throw expected("global | common | resource | include | skip", t);
      switch (t.text) {
        case "global":
          this.parseGlobal(ts, t);
          break;
        case "common":
          if (this.common) throw new DrbdConfigError(posOf(t), "common section defined twice");
          ts.expect("{");
          this.common = this.parseResourceBody(ts, undefined).sections;
          break;
        case "resource": {
          const name = ts.value("a resource name");
          if (!/^[A-Za-z0-9_.+-]+$/.test(name.text))
            throw expected("a resource name of letters, digits, '_', '.', '+' or '-'", name);
          ts.expect("{");
          const body = this.parseResourceBody(ts, name.text);
          this.resources.push({
            res: { name: name.text, hosts: [], where: posOf(t), ...body.sections },
            partialHosts: body.hosts,
            defaults: body.defaults,
          });
          break;
        }
        case "include": {
          const pattern = ts.value("a file name or glob");
          ts.expect(";");
          this.include(pattern, file);
          break;
        }
        case "skip":
          skipBlock(ts);
          break;
        default:
          throw expected("global | common | resource | include | skip", t);
      }
    }
  }

  private include(pattern: Token, fromFile: string): void {
    const abs = isAbsolute(pattern.text) ? pattern.text : join(dirname(fromFile), pattern.text);
    const matches = expandGlob(abs);
    if (matches.length === 0 && !/[*?[]/.test(pattern.text))
      throw new DrbdConfigError(posOf(pattern), `cannot open include file "${pattern.text}"`);
    for (const m of matches) this.parseFile(m);
  }

  private parseGlobal(ts: TokenStream, at: Token): void {
    if (this.globalSeen)
      throw new DrbdConfigError(posOf(at), `global section already defined at line ${this.globalSeen.line}`);
    this.globalSeen = posOf(at);
    ts.expect("{");
    parseOptions(ts, "global", this.global);
  }

  /** The body of `resource NAME {` or `common {`, through its closing brace. */
  private parseResourceBody(
    ts: TokenStream,
    resName: string | undefined,
  ): { sections: SectionOptions; hosts: PartialHost[]; defaults: PartialVolumeDefaults } {
    const sections = emptySections();
    const hosts: PartialHost[] = [];
    const defaults: PartialVolumeDefaults = { volumes: new Map() };
    const inCommon = resName === undefined;
    for (;;) {
      const t = ts.next();
      if (t.kind === "}") break;
      if (t.kind !== "word") throw expected("an option, section or '}'", t);
      const isSection = ts.peek().kind === "{";
      if (isSection && (SECTIONS as readonly string[]).includes(t.text)) {
        ts.next();
        parseOptions(ts, t.text as OptionSectionName, sections[t.text as (typeof SECTIONS)[number]]);
        continue;
      }
      if (t.text === "protocol" && !isSection) {
        // drbd-utils still accepts the 8.3 placement of `protocol` at resource level; it is a net option.
        const v = ts.value("A | B | C");
        ts.expect(";");
        setOption(sections.net, "net", t, v);
        continue;
      }
      if (inCommon) throw expected("net | disk | options | startup | handlers | '}'", t);
      switch (t.text) {
        case "on": {
          hosts.push(this.parseHost(ts, t));
          break;
        }
        case "volume": {
          const vnr = ts.integer("a volume number");
          ts.expect("{");
          if (defaults.volumes.has(vnr)) throw new DrbdConfigError(posOf(t), `volume ${vnr} defined twice`);
          defaults.volumes.set(vnr, parseVolume(ts, vnr, posOf(t)));
          break;
        }
        case "device":
        case "disk":
        case "meta-disk":
        case "flexible-meta-disk": {
          const v0 = defaults.volumes.get(0) ?? { volume: 0, diskOptions: new Map(), where: posOf(t) };
          defaults.volumes.set(0, v0);
          parseVolumeStatement(ts, t, v0);
          break;
        }
        default:
          throw expected(
            "on | volume | device | disk | meta-disk | net | disk | options | startup | handlers",
            t,
          );
      }
    }
    return { sections, hosts, defaults };
  }

  private parseHost(ts: TokenStream, at: Token): PartialHost {
    const names: string[] = [];
    while (ts.peek().kind !== "{") names.push(ts.value("a host name").text);
    if (names.length === 0) throw expected("a host name", ts.peek());
    ts.expect("{");
    const host: PartialHost = { names, volumes: new Map(), where: posOf(at) };
    for (;;) {
      const t = ts.next();
      if (t.kind === "}") break;
      if (t.kind !== "word")
        throw expected("address | node-id | volume | device | disk | meta-disk | '}'", t);
      switch (t.text) {
        case "node-id":
          if (host.nodeId !== undefined) throw new DrbdConfigError(posOf(t), "node-id given twice");
          host.nodeId = ts.integer("a node id");
          // DRBD 9 numbers nodes 0..31 (DRBD_NODE_ID_MAX); 8.4 ignores the keyword.
          if (host.nodeId > 31)
            throw new DrbdConfigError(posOf(t), `expected a node-id within 0..31, got ${host.nodeId}`);
          ts.expect(";");
          break;
        case "address":
          if (host.address) throw new DrbdConfigError(posOf(t), "address given twice");
          host.address = parseAddress(ts);
          break;
        case "volume": {
          const vnr = ts.integer("a volume number");
          ts.expect("{");
          if (host.volumes.has(vnr)) throw new DrbdConfigError(posOf(t), `volume ${vnr} defined twice`);
          host.volumes.set(vnr, parseVolume(ts, vnr, posOf(t)));
          break;
        }
        case "device":
        case "disk":
        case "meta-disk":
        case "flexible-meta-disk": {
          const v0 = host.volumes.get(0) ?? { volume: 0, diskOptions: new Map(), where: posOf(t) };
          host.volumes.set(0, v0);
          parseVolumeStatement(ts, t, v0);
          break;
        }
        default:
          throw expected("address | node-id | volume | device | disk | meta-disk", t);
      }
    }
    return host;
  }

  finish(): DrbdConfig {
    const common = this.common ?? emptySections();
    const resources: ResourceConfig[] = [];
    const names = new Map<string, SourcePos>();
    for (const { res, partialHosts, defaults } of this.resources) {
      const first = names.get(res.name);
      if (first)
        throw new DrbdConfigError(
          res.where,
          `resource ${res.name} already defined at ${first.file}:${first.line}`,
        );
      names.set(res.name, res.where);
      for (const s of SECTIONS) res[s] = inherit(common[s], res[s]);
      res.hosts = partialHosts.map((h) => completeHost(h, defaults, res));
      validateResource(res);
      resources.push(res);
    }
    validateAcrossResources(resources);
    return { files: this.files, global: this.global, common, resources };
  }
}

interface PartialVolumeDefaults {
  volumes: Map<number, PartialVolume>;
}

/** `common` values apply unless the resource sets the option itself. */
function inherit(common: OptionMap, own: OptionMap): OptionMap {
  const merged: OptionMap = new Map(common);
  for (const [k, v] of own) merged.set(k, v);
  return merged;
}

function parseOptions(ts: TokenStream, section: OptionSectionName, into: OptionMap): void {
  for (;;) {
    const t = ts.next();
    if (t.kind === "}") return;
    if (t.kind !== "word") throw expected(`a ${section} option or '}'`, t);
    const next = ts.peek();
    if (next.kind === ";") {
      // A bare boolean means yes; `no-NAME` means NAME no (drbdadm_parser.c).
      ts.next();
      setOption(into, section, t, undefined);
      continue;
    }
    const v = ts.value(`a value for ${t.text}`);
    // become-primary-on may name several hosts.
    let text = v.text;
    while (ts.peek().kind === "word" || ts.peek().kind === "string") text += " " + ts.next().text;
    ts.expect(";", "';'");
    setOption(into, section, t, { ...v, text });
  }
}

function setOption(
  into: OptionMap,
  section: OptionSectionName,
  nameTok: Token,
  valueTok: Token | undefined,
): void {
  let name = OPTION_ALIASES[section]?.[nameTok.text] ?? nameTok.text;
  const specs = OPTION_SPECS[section];
  let spec = specs[name];
  let negated = false;
  if (!spec && name.startsWith("no-") && specs[name.slice(3)]?.kind === "boolean" && valueTok === undefined) {
    name = name.slice(3);
    spec = specs[name];
    negated = true;
  }
  if (!spec) throw expected(`a ${section} option (${Object.keys(specs).join(" | ")})`, nameTok);
  const prev = into.get(name);
  if (prev)
    throw new DrbdConfigError(
      posOf(nameTok),
      `${section} option ${name} already set at line ${prev.where.line}`,
    );
  let value: OptionValue;
  const where = posOf(valueTok ?? nameTok);
  switch (spec.kind) {
    case "boolean":
      if (valueTok === undefined) value = !negated;
      else if (valueTok.text === "yes") value = true;
      else if (valueTok.text === "no") value = false;
      else throw expected(`yes | no for ${name}`, valueTok);
      break;
    case "numeric": {
      if (valueTok === undefined) throw expected(`a value for ${name}`, nameTok);
      const n = parseScaledNumber(valueTok.text, spec.scale);
      if (typeof n === "string") throw expected(`${n} for ${name}`, valueTok);
      if (n < spec.min || n > spec.max)
        throw new DrbdConfigError(
          where,
          `expected ${name} within ${spec.min}..${spec.max}, got ${valueTok.text}`,
        );
      value = n;
      break;
    }
    case "enum": {
      const choices = [...spec.values, ...(spec.prefixes ?? []).map((p) => `${p}NAME`)].join(" | ");
      if (valueTok === undefined) throw expected(`${choices} for ${name}`, nameTok);
      const found =
        spec.values.find((v) =>
          spec.caseInsensitive ? v.toLowerCase() === valueTok.text.toLowerCase() : v === valueTok.text,
        ) ??
        (spec.prefixes?.some((p) => valueTok.text.startsWith(p) && valueTok.text.length > p.length)
          ? valueTok.text
          : undefined);
      if (found === undefined) throw expected(`${choices} for ${name}`, valueTok);
      value = found;
      break;
    }
    case "string":
      if (valueTok === undefined) throw expected(`a value for ${name}`, nameTok);
      value = valueTok.text;
      break;
  }
  into.set(name, { value, where });
}

function parseAddress(ts: TokenStream): Address {
  let family: Address["family"] = "ipv4";
  let t = ts.next();
  if (t.kind === "word" && (t.text === "ipv4" || t.text === "ipv6")) {
    family = t.text;
    t = ts.next();
  } else if (t.kind === "word" && /^(ssocks|sdp|sci)$/.test(t.text)) {
    throw expected("ipv4 | ipv6 (other address families are not supported)", t);
  }
  let ip: string;
  let portText: string;
  if (t.kind === "[") {
    const inner = ts.value("an IPv6 address");
    ts.expect("]");
    const rest = ts.value("':PORT'");
    if (!rest.text.startsWith(":")) throw expected("':PORT'", rest);
    ip = inner.text;
    portText = rest.text.slice(1);
    family = "ipv6";
    t = inner; // errors name the address, not the bracket
  } else if (t.kind === "word") {
    const colon = t.text.lastIndexOf(":");
    if (colon < 0) throw expected("IP:PORT", t);
    ip = t.text.slice(0, colon);
    portText = t.text.slice(colon + 1);
  } else {
    throw expected("an address IP:PORT", t);
  }
  // The kernel's inet_pton would refuse what these refuse (300.1.1.1, 1::2::3): the node could never bind.
  if (family === "ipv4" && !isIPv4(ip)) throw expected("an IPv4 address", t);
  if (family === "ipv6" && !isIPv6(ip.replace(/%[\w.-]+$/, ""))) throw expected("an IPv6 address", t);
  const port = /^\d+$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) throw expected("a port within 1..65535", t);
  ts.expect(";");
  return { family, ip, port };
}

function parseVolume(ts: TokenStream, vnr: number, where: SourcePos): PartialVolume {
  if (vnr > 65535) throw new DrbdConfigError(where, `expected a volume number within 0..65535, got ${vnr}`);
  const vol: PartialVolume = { volume: vnr, diskOptions: new Map(), where };
  for (;;) {
    const t = ts.next();
    if (t.kind === "}") return vol;
    if (t.kind === "word" && t.text === "disk" && ts.peek().kind === "{") {
      ts.next();
      parseOptions(ts, "disk", vol.diskOptions);
      continue;
    }
    if (t.kind !== "word" || !["device", "disk", "meta-disk", "flexible-meta-disk"].includes(t.text))
      throw expected("device | disk | meta-disk | '}'", t);
    parseVolumeStatement(ts, t, vol);
  }
}

/** `device ...;`, `disk ...;` or `meta-disk ...;` after its keyword `kw`. */
function parseVolumeStatement(ts: TokenStream, kw: Token, vol: PartialVolume): void {
  const twice = (what: string) =>
    new DrbdConfigError(posOf(kw), `${what} given twice for volume ${vol.volume}`);
  switch (kw.text) {
    case "device": {
      if (vol.device !== undefined || vol.minor !== undefined) throw twice("device");
      let t = ts.next();
      if (t.kind === "word" && t.text === "minor") {
        vol.minor = ts.integer("a minor number");
        if (vol.minor > MAX_MINOR)
          throw new DrbdConfigError(posOf(kw), `expected a minor within 0..${MAX_MINOR}, got ${vol.minor}`);
        ts.expect(";");
        return;
      }
      if (t.kind !== "word" && t.kind !== "string") throw expected("a device name | minor", t);
      const name = t.text.startsWith("drbd") ? `/dev/${t.text}` : t.text;
      if (!name.startsWith("/dev/drbd")) throw expected("a device name starting with /dev/drbd or drbd", t);
      vol.device = name;
      const fromName = /^\/dev\/drbd(\d+)$/.exec(name);
      t = ts.next();
      if (t.kind === "word" && t.text === "minor") {
        vol.minor = ts.integer("a minor number");
        if (fromName && Number(fromName[1]) !== vol.minor)
          throw new DrbdConfigError(
            posOf(t),
            `expected minor ${fromName[1]} to match device ${name}, got ${vol.minor}`,
          );
        ts.expect(";");
      } else if (t.kind === ";") {
        if (!fromName) throw expected("minor N (the device name carries no minor number)", t);
        vol.minor = Number(fromName[1]);
      } else {
        throw expected("minor | ;", t);
      }
      if (vol.minor > MAX_MINOR)
        throw new DrbdConfigError(posOf(kw), `expected a minor within 0..1048575, got ${vol.minor}`);
      return;
    }
    case "disk": {
      if (vol.disk !== undefined) throw twice("disk");
      vol.disk = ts.value("a disk path").text;
      ts.expect(";");
      return;
    }
    default: {
      if (vol.metaDisk !== undefined) throw twice("meta-disk");
      const d = ts.value("internal | a metadata device");
      vol.metaDisk = d.text;
      if (d.text === "internal") {
        vol.metaIndex = "internal";
        ts.expect(";");
        return;
      }
      const t = ts.next();
      if (t.kind === "[") {
        vol.metaIndex = ts.integer("a metadata index");
        ts.expect("]");
        ts.expect(";");
      } else if (t.kind === ";") {
        vol.metaIndex = "flexible";
      } else {
        throw expected("[ | ;", t);
      }
      if (kw.text === "flexible-meta-disk" && vol.metaIndex !== "flexible") throw expected(";", t);
    }
  }
}

function completeHost(h: PartialHost, defaults: PartialVolumeDefaults, res: ResourceConfig): HostConfig {
  const name = h.names.join(" ");
  if (!h.address)
    throw new DrbdConfigError(h.where, `expected an address in section 'on ${name}' of resource ${res.name}`);
  const vnrs = new Set([...h.volumes.keys(), ...defaults.volumes.keys()]);
  const volumes: VolumeConfig[] = [];
  for (const vnr of [...vnrs].sort((a, b) => a - b)) {
    const own = h.volumes.get(vnr);
    const dflt = defaults.volumes.get(vnr);
    const where = own?.where ?? dflt?.where ?? h.where;
    const pick = <K extends keyof PartialVolume>(k: K): PartialVolume[K] | undefined => own?.[k] ?? dflt?.[k];
    const missing = (what: string) =>
      new DrbdConfigError(
        where,
        `expected ${what} for volume ${vnr} of host ${name} in resource ${res.name}`,
      );
    const device = pick("device");
    const minor = pick("minor");
    const disk = pick("disk");
    const metaDisk = pick("metaDisk");
    const metaIndex = pick("metaIndex");
    if (minor === undefined) throw missing("device");
    if (disk === undefined) throw missing("disk");
    if (metaDisk === undefined || metaIndex === undefined) throw missing("meta-disk");
    volumes.push({
      volume: vnr,
      device: device ?? `/dev/drbd${minor}`,
      minor,
      disk,
      metaDisk,
      metaIndex,
      diskOptions: inherit(dflt?.diskOptions ?? new Map(), own?.diskOptions ?? new Map()),
      where,
    });
  }
  if (volumes.length === 0)
    throw new DrbdConfigError(h.where, `expected a volume in section 'on ${name}' of resource ${res.name}`);
  return {
    names: h.names,
    ...(h.nodeId === undefined ? {} : { nodeId: h.nodeId }),
    address: h.address,
    volumes,
    where: h.where,
  };
}

function validateResource(res: ResourceConfig): void {
  if (res.hosts.length === 0)
    throw new DrbdConfigError(res.where, `expected an 'on HOST' section in resource ${res.name}`);
  if (res.hosts.length > 2)
    throw new DrbdConfigError(
      (res.hosts[2] as HostConfig).where,
      `expected at most two 'on' sections in resource ${res.name} (DRBD 8.4 pairs two nodes), got ${res.hosts.length}`,
    );
  const seenNames = new Map<string, SourcePos>();
  const seenIds = new Map<number, SourcePos>();
  for (const h of res.hosts) {
    for (const n of h.names) {
      if (seenNames.has(n))
        throw new DrbdConfigError(h.where, `host ${n} appears twice in resource ${res.name}`);
      seenNames.set(n, h.where);
    }
    if (h.nodeId !== undefined) {
      if (seenIds.has(h.nodeId))
        throw new DrbdConfigError(h.where, `node-id ${h.nodeId} used twice in resource ${res.name}`);
      seenIds.set(h.nodeId, h.where);
    }
  }
  const vnrs = (h: HostConfig) => h.volumes.map((v) => v.volume).join(",");
  if (res.hosts.length === 2 && vnrs(res.hosts[0] as HostConfig) !== vnrs(res.hosts[1] as HostConfig))
    throw new DrbdConfigError(
      res.where,
      `hosts of resource ${res.name} define different volumes (${res.hosts.map(vnrs).join(" vs ")})`,
    );
  // Kernel rule (drbd_nl.c): congestion policies other than block need protocol A; two primaries need C.
  const protocol = res.net.get("protocol")?.value ?? "C";
  const cong = res.net.get("on-congestion");
  if (cong && cong.value !== "block" && protocol !== "A")
    throw new DrbdConfigError(
      cong.where,
      `on-congestion ${String(cong.value)} needs protocol A, got protocol ${String(protocol)}`,
    );
  const two = res.net.get("allow-two-primaries");
  if (two && two.value === true && protocol !== "C")
    throw new DrbdConfigError(
      two.where,
      `allow-two-primaries needs protocol C, got protocol ${String(protocol)}`,
    );
  const alg = res.net.get("cram-hmac-alg");
  if (alg && !res.net.has("shared-secret"))
    throw new DrbdConfigError(alg.where, `cram-hmac-alg needs a shared-secret in resource ${res.name}`);
  checkAlgorithms(res);
}

/**
 * Algorithm names the node could never use are refused here rather than at the first connect (the kernel
 * refuses them in drbd_nl.c when drbdadm hands them over: "crypto_alloc_hash failed").
 */
function checkAlgorithms(res: ResourceConfig): void {
  const hashes = new Set([...getHashes(), "crc32c"]);
  const bare = (name: string): string => name.replace(/^hmac\((.*)\)$/, "$1");
  const cram = res.net.get("cram-hmac-alg");
  if (cram) {
    const name = bare(String(cram.value));
    let usable = true;
    try {
      createHmac(name, "probe");
    } catch {
      usable = false;
    }
    if (!usable)
      throw new DrbdConfigError(
        cram.where,
        `cram-hmac-alg ${String(cram.value)} is not a known hash (e.g. sha1, sha256, md5)`,
      );
  }
  const verify = res.net.get("verify-alg");
  if (verify && !(VERIFY_ALGS as readonly string[]).includes(String(verify.value)))
    throw new DrbdConfigError(
      verify.where,
      `verify-alg ${String(verify.value)} is not one of ${VERIFY_ALGS.join(", ")}`,
    );
  for (const key of ["csums-alg", "data-integrity-alg"] as const) {
    const opt = res.net.get(key);
    if (opt && !hashes.has(bare(String(opt.value))))
      throw new DrbdConfigError(opt.where, `${key} ${String(opt.value)} is not a known hash`);
  }
  // A known hash, but csums-alg digests are computed here (verify.ts): the same choice as verify-alg.
  const csums = res.net.get("csums-alg");
  if (csums && !(VERIFY_ALGS as readonly string[]).includes(String(csums.value)))
    throw new DrbdConfigError(
      csums.where,
      `csums-alg ${String(csums.value)} is not one of ${VERIFY_ALGS.join(", ")}`,
    );
}

/** Minors, devices, disks and addresses are unique per host across all resources (drbdadm check_uniq). */
function validateAcrossResources(resources: ResourceConfig[]): void {
  const seen = new Map<string, { res: string; where: SourcePos }>();
  const claim = (key: string, what: string, res: string, where: SourcePos) => {
    const prev = seen.get(key);
    if (prev)
      throw new DrbdConfigError(
        where,
        `${what} in resource ${res} is already used by resource ${prev.res} at ${prev.where.file}:${prev.where.line}`,
      );
    seen.set(key, { res, where });
  };
  for (const res of resources) {
    for (const h of res.hosts) {
      const a = h.address;
      claim(`addr:${a.family}:${a.ip}:${a.port}`, `address ${a.ip}:${a.port}`, res.name, h.where);
      for (const name of h.names) {
        for (const v of h.volumes) {
          claim(`minor:${name}:${v.minor}`, `minor ${v.minor} on host ${name}`, res.name, v.where);
          claim(`device:${name}:${v.device}`, `device ${v.device} on host ${name}`, res.name, v.where);
          claim(`disk:${name}:${v.disk}`, `disk ${v.disk} on host ${name}`, res.name, v.where);
        }
      }
    }
  }
}

function skipBlock(ts: TokenStream): void {
  for (;;) {
    const t = ts.next();
    if (t.kind === "{") break;
    if (t.kind === "eof") throw expected("'{' after skip", t);
  }
  let depth = 1;
  while (depth > 0) {
    const t = ts.next();
    if (t.kind === "{") depth++;
    else if (t.kind === "}") depth--;
    else if (t.kind === "eof") throw expected("'}' closing the skip block", t);
  }
}

/** Shell-style glob (`*`, `?`, `[...]` within path components), results sorted as glob(3) sorts them. */
export function expandGlob(pattern: string): string[] {
  const parts = pattern.split("/");
  let bases = [parts[0] === "" ? "/" : (parts[0] as string)];
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i] as string;
    if (part === "") continue;
    const last = i === parts.length - 1;
    const next: string[] = [];
    for (const base of bases) {
      if (!/[*?[]/.test(part)) {
        const p = join(base, part);
        if (exists(p, last)) next.push(p);
        continue;
      }
      const re = globToRegExp(part);
      let entries: string[];
      try {
        entries = readdirSync(base);
      } catch {
        continue;
      }
      for (const e of entries.sort()) {
        if (e.startsWith(".") && !part.startsWith(".")) continue;
        const p = join(base, e);
        if (re.test(e) && exists(p, last)) next.push(p);
      }
    }
    bases = next;
  }
  return bases;
}

function exists(p: string, file: boolean): boolean {
  try {
    const s = statSync(p);
    return file ? s.isFile() : s.isDirectory();
  } catch {
    return false;
  }
}

function globToRegExp(part: string): RegExp {
  let re = "^";
  for (let i = 0; i < part.length; i++) {
    const c = part[i] as string;
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const end = part.indexOf("]", i + 1);
      if (end < 0) re += "\\[";
      else {
        let cls = part.slice(i + 1, end);
        if (cls.startsWith("!")) cls = "^" + cls.slice(1);
        re += `[${cls.replace(/\\/g, "\\\\")}]`;
        i = end;
      }
    } else re += c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(re + "$");
}

export interface LocalView {
  resource: ResourceConfig;
  local: HostConfig;
  /** The other `on` section; absent for a one-node (standalone) resource. */
  peer?: HostConfig;
}

/**
 * Picks this node's `on` section: the one naming `nodeName` (drbdadm's `--node-name`, default the host name,
 * as `uname -n` gives it).
 */
export function selectLocalHost(resource: ResourceConfig, nodeName: string = hostname()): LocalView {
  const local = resource.hosts.find((h) => h.names.includes(nodeName));
  if (!local)
    throw new DrbdConfigError(
      resource.where,
      `expected an 'on ${nodeName}' section in resource ${resource.name}, got ${resource.hosts.map((h) => `'on ${h.names.join(" ")}'`).join(", ")}`,
    );
  const peer = resource.hosts.find((h) => h !== local);
  return { resource, local, ...(peer ? { peer } : {}) };
}

export function findResource(config: DrbdConfig, name: string): ResourceConfig {
  const r = config.resources.find((x) => x.name === name);
  if (!r) throw new Error(`no resource ${name} in ${config.files[0] ?? "the configuration"}`);
  return r;
}
