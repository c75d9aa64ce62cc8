/**
 * `drbdadm dump`: the configuration as read, normalized (common merged into each resource, implicit volume 0
 * made explicit, sizes in each option's own unit with its suffix), in a form the parser reads back.
 */
import {
  OPTION_SPECS,
  type DrbdConfig,
  type OptionMap,
  type OptionSectionName,
  type ResourceConfig,
} from "./model.js";

const IND = "    ";

function quoteIfNeeded(s: string): string {
  return /^[A-Za-z0-9_./:@+,=-]+$/.test(s) ? s : `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

function formatOption(section: OptionSectionName, name: string, value: number | string | boolean): string {
  const spec = OPTION_SPECS[section][name];
  let text: string;
  let comment = "";
  if (typeof value === "boolean") text = value ? "yes" : "no";
  else if (typeof value === "number") {
    const scale = spec?.kind === "numeric" ? spec.scale : "1";
    text = `${value}${scale === "1" ? "" : scale}`;
    if (spec?.kind === "numeric" && spec.unit) comment = ` # ${spec.unit}`;
  } else text = quoteIfNeeded(value);
  return `${name.padEnd(20)} ${text};${comment}`;
}

function dumpSection(
  out: string[],
  depth: number,
  section: OptionSectionName,
  map: OptionMap,
  label = section,
): void {
  if (map.size === 0) return;
  const pad = IND.repeat(depth);
  out.push(`${pad}${label} {`);
  for (const [name, { value }] of map) out.push(`${pad}${IND}${formatOption(section, name, value)}`);
  out.push(`${pad}}`);
}

function dumpResource(out: string[], res: ResourceConfig): void {
  out.push(`# resource ${res.name} defined at ${res.where.file}:${res.where.line}`);
  out.push(`resource ${res.name} {`);
  for (const h of res.hosts) {
    out.push(`${IND}on ${h.names.join(" ")} {`);
    if (h.nodeId !== undefined) out.push(`${IND}${IND}${"node-id".padEnd(20)} ${h.nodeId};`);
    for (const v of h.volumes) {
      const p = IND.repeat(3);
      out.push(`${IND}${IND}volume ${v.volume} {`);
      out.push(`${p}${"device".padEnd(20)} ${quoteIfNeeded(v.device)} minor ${v.minor};`);
      out.push(`${p}${"disk".padEnd(20)} ${quoteIfNeeded(v.disk)};`);
      const idx = typeof v.metaIndex === "number" ? ` [${v.metaIndex}]` : "";
      out.push(`${p}${"meta-disk".padEnd(20)} ${quoteIfNeeded(v.metaDisk)}${idx};`);
      dumpSection(out, 3, "disk", v.diskOptions);
      out.push(`${IND}${IND}}`);
    }
    const a = h.address;
    const ip = a.family === "ipv6" ? `[${a.ip}]` : a.ip;
    out.push(`${IND}${IND}${"address".padEnd(20)} ${a.family} ${ip}:${a.port};`);
    out.push(`${IND}}`);
  }
  for (const s of ["net", "disk", "options", "startup", "handlers"] as const) dumpSection(out, 1, s, res[s]);
  out.push("}");
}

/** The whole configuration, or only the named resource. */
export function dumpDrbdConfig(config: DrbdConfig, resourceName?: string): string {
  const out: string[] = [`# ${config.files[0] ?? ""}`];
  if (resourceName === undefined) {
    dumpSection(out, 0, "global", config.global);
    out.push("", "common {");
    for (const s of ["net", "disk", "options", "startup", "handlers"] as const)
      dumpSection(out, 1, s, config.common[s]);
    out.push("}");
  }
  for (const res of config.resources) {
    if (resourceName !== undefined && res.name !== resourceName) continue;
    out.push("");
    dumpResource(out, res);
  }
  return out.join("\n") + "\n";
}
