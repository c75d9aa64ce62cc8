/**
 * The control-plane methods of a running server, named and shaped as SPDK's (lib/iscsi/iscsi_rpc.c,
 * lib/bdev/bdev_rpc.c, lib/rpc/rpc.c) so that scripts written for rpc.py read our answers. These
 * are the read-only ones; the write methods are in src/server/rpc/. Each group is one `registerXxxMethods(registry, ...)`; another module (DRBD) adds its
 * own the same way and the server calls it (ServerOptions.rpcMethods).
 */
import { createRequire } from "node:module";
import type { BlockDevice } from "../bdev/bdev.js";
import type { BdevRegistry } from "../bdev/registry.js";
import type { BdevSpec } from "../config/spdk_config.js";
import type { IscsiTarget } from "../iscsi/target.js";
import type { AuthPolicy } from "../iscsi/options.js";
import { ENODEV, RpcError, RpcErrorCode, type JsonObject, type JsonValue } from "../rpc/jsonrpc.js";
import type { MethodRegistry } from "../rpc/registry.js";
import type { LiveConfig } from "./live_config.js";
import type { QosLimits } from "../bdev/accounted_bdev.js";

/** What the methods read; the server passes itself. */
export interface RpcServedState {
  readonly config: LiveConfig;
  readonly registry: BdevRegistry;
  /** Undefined before the target is built (never while the RPC server runs). */
  iscsiTarget(): IscsiTarget | undefined;
  /** A bdev's QoS limits when any are set (saved as bdev_set_qos_limit). */
  qosOf?(name: string): QosLimits | undefined;
}

function packageVersion(): string {
  // dist/src/server/rpc_methods.js → the package root.
  const pkg = createRequire(import.meta.url)("../../../package.json") as { version: string };
  return pkg.version;
}

/** rpc_get_methods and spdk_get_version (lib/rpc/rpc.c, lib/event/app_rpc.c). */
export function registerFrameworkMethods(registry: MethodRegistry): void {
  registry.register("rpc_get_methods", {
    description: "list the methods this server answers",
    states: ["startup", "runtime"],
    params: {
      // SPDK: with current, only the methods callable in the current state (startup or runtime).
      current: { type: "boolean" },
      include_aliases: { type: "boolean" },
    },
    handler: (p) => registry.names(p.include_aliases === true, p.current === true),
  });
  registry.register("spdk_get_version", {
    description: "the server's version, in SPDK's shape",
    states: ["startup", "runtime"],
    aliases: ["usertgt_get_version"],
    handler: () => {
      const version = packageVersion();
      const m = /^(\d+)\.(\d+)\.(\d+)(.*)$/.exec(version);
      return {
        version: `usertgt v${version}`,
        fields: {
          major: m ? Number(m[1]) : 0,
          minor: m ? Number(m[2]) : 0,
          patch: m ? Number(m[3]) : 0,
          suffix: m ? m[4]! : version,
        },
      };
    },
  });
}

function bdevJson(dev: BlockDevice, claimed: boolean): JsonObject {
  return {
    name: dev.name,
    aliases: [],
    product_name: dev.productName,
    block_size: dev.blockSize,
    num_blocks: dev.blockCount,
    uuid: dev.uuid,
    claimed,
    supported_io_types: {
      read: true,
      write: true,
      unmap: dev.supportsUnmap,
      write_zeroes: dev.supportsUnmap && dev.unmapReadsZeroes,
      flush: dev.volatileWriteCache,
      reset: false,
      nvme_admin: false,
      nvme_io: false,
    },
  };
}

/** bdev_get_bdevs (lib/bdev/bdev_rpc.c). */
export function registerBdevMethods(registry: MethodRegistry, state: RpcServedState): void {
  registry.register("bdev_get_bdevs", {
    description: "list block devices, or the one named",
    params: { name: { type: "string" }, timeout: { type: "integer" } },
    handler: (p) => {
      // "claimed" here: in use as a LUN (what keeps a second user off the device).
      const lunBdevs = new Set(state.config.targetNodes.flatMap((t) => t.luns.map((l) => l.bdev)));
      const devs = state.registry.list();
      if (typeof p.name === "string") {
        const dev = state.registry.get(p.name);
        // SPDK answers an unknown name with -ENODEV.
        if (!dev) throw new RpcError(ENODEV, `No such device: block device "${p.name}" does not exist`);
        return [bdevJson(dev, lunBdevs.has(dev.name))];
      }
      return devs.map((d) => bdevJson(d, lunBdevs.has(d.name)));
    },
  });
}

function authJson(a: AuthPolicy): JsonObject {
  return { disable_chap: a.disableChap, require_chap: a.requireChap, mutual_chap: a.mutualChap };
}

/** iscsi_get_* (lib/iscsi/iscsi_rpc.c, portal_grp.c, init_grp.c, tgt_node.c, iscsi_subsystem.c). */
export function registerIscsiMethods(registry: MethodRegistry, state: RpcServedState): void {
  const { config } = state;
  registry.register("iscsi_get_options", {
    description: "the global iSCSI options in effect",
    handler: () => {
      const g = config.globals;
      return {
        node_base: g.nodeBase,
        auth_file: config.authFile ?? "",
        nop_timeout: Number.isFinite(g.nopTimeoutSec) ? g.nopTimeoutSec : 0,
        nop_in_interval: g.nopInIntervalSec,
        ...authJson(g.discoveryAuth),
        chap_group: g.discoveryAuthGroup ?? 0,
        max_sessions: g.maxSessions,
        max_connections_per_session: g.maxConnectionsPerSession,
        max_queue_depth: config.maxQueueDepth,
        default_time2wait: g.defaultTime2Wait,
        default_time2retain: g.defaultTime2Retain,
        first_burst_length: g.firstBurstLength,
        max_burst_length: g.maxBurstLength,
        max_recv_data_segment_length: g.maxRecvDataSegmentLength,
        immediate_data: g.immediateData,
        initial_r2t: g.initialR2T,
        max_r2t_per_connection: g.maxOutstandingR2T,
        allow_duplicated_isid: g.allowDuplicateIsid,
        error_recovery_level: g.errorRecoveryLevel,
        login_timeout: g.loginTimeoutSec,
      };
    },
  });
  registry.register("iscsi_get_portal_groups", {
    description: "portal groups and the addresses they are bound to",
    handler: () => {
      const bound = state.iscsiTarget()?.addresses() ?? [];
      return config.portalGroups.map((pg) => ({
        tag: pg.tag,
        // The bound port, not the configured one: a config port 0 means "any" and the real one matters.
        portals: pg.portals.map((p, i) => {
          const b = bound.filter((a) => a.portalGroup === pg.tag)[i];
          return { host: p.host, port: String(b?.port ?? p.port) };
        }),
        private: pg.private,
      }));
    },
  });
  registry.register("iscsi_get_initiator_groups", {
    description: "initiator groups: names and netmasks allowed",
    handler: () =>
      config.initiatorGroups.map((ig) => ({
        tag: ig.tag,
        initiators: [...ig.initiators],
        netmasks: [...ig.netmasks],
      })),
  });
  registry.register("iscsi_get_target_nodes", {
    description: "target nodes with their LUNs, mappings and authentication",
    handler: () =>
      config.targetNodes.map((t) => {
        const out: JsonObject = {
          name: t.name,
          alias_name: t.alias ?? "",
          pg_ig_maps: t.maps.map((m) => ({ pg_tag: m.portalGroup, ig_tag: m.initiatorGroup })),
          luns: t.luns.map((l) => ({ bdev_name: l.bdev, lun_id: l.id })),
          queue_depth: t.queueDepth,
          ...authJson(t.auth),
          chap_group: t.authGroup ?? 0,
          header_digest: t.digest.headerRequired,
          data_digest: t.digest.dataRequired,
        };
        return out;
      }),
  });
  registry.register("iscsi_get_connections", {
    description: "open iSCSI connections",
    handler: () =>
      (state.iscsiTarget()?.connectionInfo() ?? []).map((c, i): JsonValue => ({
        id: i,
        cid: c.cid,
        tsih: c.tsih,
        state: c.state,
        pg_tag: c.portalGroup,
        initiator_addr: c.initiatorAddress,
        initiator_port: c.initiatorPort,
        target_addr: c.targetAddress,
        target_port: c.targetPort,
        initiator_node_name: c.initiatorName,
        isid: c.isid,
        target_node_name: c.targetNodeName,
        session_type: c.discovery ? "discovery" : c.tsih === 0 ? "" : "normal",
      })),
  });
}

function bdevCreateCall(spec: BdevSpec, dev: BlockDevice | undefined): JsonObject {
  switch (spec.kind) {
    case "malloc":
      return {
        method: "bdev_malloc_create",
        params: {
          name: spec.name,
          num_blocks: spec.blockCount,
          block_size: spec.blockSize,
          ...(dev ? { uuid: dev.uuid } : {}),
          // SPDK's dump also carries physical_block_size and optimal_io_boundary; we have neither.
        },
      };
    case "aio":
      return {
        method: "bdev_aio_create",
        params: { name: spec.name, filename: spec.path, block_size: dev?.blockSize ?? spec.blockSize },
      };
    // usertgt's own modules, named in SPDK's style (module/bdev/<name>: bdev_<name>_create).
    case "tcmur":
      return {
        method: "bdev_tcmur_create",
        params: { name: spec.name, minor: spec.minor, cfgstring: spec.cfgString, options: [...spec.extra] },
      };
    case "bio":
      return {
        method: "bdev_bio_create",
        params: { name: spec.name, path: spec.path, helper: [...spec.helper] },
      };
  }
}

/**
 * framework_get_subsystems / framework_get_config (lib/event/app_rpc.c): the running configuration
 * as the create calls that would rebuild it, per subsystem (what rpc.py save_config collects).
 * Auth groups are dumped with their secrets, as SPDK's iscsi_create_auth_group calls: the output
 * rebuilds the same server on its own (keep the file as private as the AuthFile it replaces).
 */
export function registerConfigMethods(registry: MethodRegistry, state: RpcServedState): void {
  const subsystems: Record<string, () => JsonObject[]> = {
    bdev: () => [
      ...state.config.bdevs.map((spec) => bdevCreateCall(spec, state.registry.get(spec.name))),
      // After every create, as SPDK's bdev_qos_config_json.
      ...state.config.bdevs.flatMap((spec): JsonObject[] => {
        const q = state.qosOf?.(spec.name);
        if (!q) return [];
        return [
          {
            method: "bdev_set_qos_limit",
            params: {
              name: spec.name,
              rw_ios_per_sec: q.rwIosPerSec,
              rw_mbytes_per_sec: q.rwMbytesPerSec,
              r_mbytes_per_sec: q.rMbytesPerSec,
              w_mbytes_per_sec: q.wMbytesPerSec,
            },
          },
        ];
      }),
    ],
    iscsi: () => {
      const c = state.config;
      const options = registry.get("iscsi_get_options")!.handler({}) as JsonObject;
      return [
        { method: "iscsi_set_options", params: options },
        ...c.authGroups.map((ag) => ({
          method: "iscsi_create_auth_group",
          params: {
            tag: ag.tag,
            secrets: ag.secrets.map((sec) => ({
              user: sec.user,
              secret: sec.secret,
              ...(sec.muser !== undefined ? { muser: sec.muser, msecret: sec.msecret ?? "" } : {}),
            })),
          },
        })),
        ...c.portalGroups.map((pg) => ({
          method: "iscsi_create_portal_group",
          params: {
            tag: pg.tag,
            portals: pg.portals.map((p) => ({ host: p.host, port: String(p.port) })),
            private: pg.private,
            wait: pg.wait,
          },
        })),
        ...c.initiatorGroups.map((ig) => ({
          method: "iscsi_create_initiator_group",
          params: { tag: ig.tag, initiators: [...ig.initiators], netmasks: [...ig.netmasks] },
        })),
        ...c.targetNodes.map((t) => ({
          method: "iscsi_create_target_node",
          params: {
            name: t.name,
            alias_name: t.alias ?? "",
            pg_ig_maps: t.maps.map((m) => ({ pg_tag: m.portalGroup, ig_tag: m.initiatorGroup })),
            luns: t.luns.map((l) => ({ bdev_name: l.bdev, lun_id: l.id })),
            queue_depth: t.queueDepth,
            ...authJson(t.auth),
            chap_group: t.authGroup ?? 0,
            header_digest: t.digest.headerRequired,
            data_digest: t.digest.dataRequired,
          },
        })),
      ];
    },
  };
  registry.register("framework_get_subsystems", {
    description: "the subsystems framework_get_config can dump",
    handler: () => [
      { subsystem: "bdev", depends_on: [] },
      { subsystem: "iscsi", depends_on: ["bdev"] },
    ],
  });
  registry.register("framework_get_config", {
    description: "one subsystem's configuration as the create calls that rebuild it",
    params: { name: { type: "string", required: true }, with_batches: { type: "boolean" } },
    handler: (p) => {
      // with_batches: SPDK may group calls into batch arrays; ours are always flat, which it allows.
      const dump = subsystems[p.name as string];
      if (!dump) {
        throw new RpcError(
          RpcErrorCode.InvalidParams,
          `framework_get_config: no subsystem "${p.name as string}" (have ${Object.keys(subsystems).join(", ")})`,
        );
      }
      return dump();
    },
  });
}

/** Every method of the core server. */
export function registerServerMethods(registry: MethodRegistry, state: RpcServedState): void {
  registerFrameworkMethods(registry);
  registerBdevMethods(registry, state);
  registerIscsiMethods(registry, state);
  registerConfigMethods(registry, state);
}
