/**
 * [TargetNodeN]: a target's name, alias, Mapping of portal and initiator groups, CHAP and digest
 * policy, queue depth and its LUN table (SPDK lib/iscsi/tgt_node.c).
 */
import type { AuthPolicy, DigestPolicy, TargetNodeConfig } from "../../iscsi/options.js";
import { MAX_LUN } from "../../scsi/lun_id.js";
import type { IniSection } from "../ini.js";
import { type Located, Reader, walk } from "../section_reader.js";
import { authGroupRef, authPolicy, checkIscsiName, digestPolicy } from "./iscsi_values.js";
import { DEFAULT_MAX_QUEUE_DEPTH } from "./iscsi.js";

export interface LunSpec extends Located {
  readonly id: number;
  readonly bdev: string;
}

/** [TargetNodeN]: everything of TargetNodeConfig except the SCSI device, plus its LUN table. */
export interface TargetNodeSpec extends Omit<TargetNodeConfig, "device">, Located {
  readonly section: string;
  readonly luns: readonly LunSpec[];
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

export function readTargetNode(r: Reader, sec: IniSection, ctx: TargetContext): TargetNodeSpec {
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
