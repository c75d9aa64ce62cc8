/**
 * The iSCSI write methods, with SPDK's names, parameters and defaults (lib/iscsi/iscsi_rpc.c).
 * Parameters are read and checked here; ServerGraph checks the rest (references, uniqueness)
 * before changing anything, so a refused call leaves nothing behind.
 */
import type { AuthPolicy, ChapSecret, IscsiGlobalOptions } from "../../iscsi/options.js";
import type { JsonObject, JsonValue } from "../../rpc/jsonrpc.js";
import type { ParamSpec } from "../../rpc/registry.js";
import { checkChapParams, fullTargetName } from "../graph_control.js";
import type { TargetNodeState } from "../live_config.js";
import { field, invalidParam, objects, port, strings } from "./params.js";
import type { ControlServer, MethodTable } from "./control_server.js";

const CHAP_PARAMS: Record<string, ParamSpec> = {
  disable_chap: { type: "boolean" },
  require_chap: { type: "boolean" },
  mutual_chap: { type: "boolean" },
  chap_group: { type: "integer" },
};

function chap(p: JsonObject): { auth: AuthPolicy; group: number | undefined } {
  return {
    auth: {
      disableChap: p.disable_chap === true,
      requireChap: p.require_chap === true,
      mutualChap: p.mutual_chap === true,
    },
    group: p.chap_group as number | undefined,
  };
}

function maps(method: string, v: JsonValue | undefined): TargetNodeState["maps"] {
  return objects(method, v, "pg_ig_maps").map((m, i) => ({
    portalGroup: field(method, m, `pg_ig_maps[${i}]`, "pg_tag", "integer") as number,
    initiatorGroup: field(method, m, `pg_ig_maps[${i}]`, "ig_tag", "integer") as number,
  }));
}

function secrets(method: string, v: JsonValue | undefined): ChapSecret[] {
  return objects(method, v, "secrets").map((s, i) => {
    const w = `secrets[${i}]`;
    const muser = field(method, s, w, "muser", "string", false) as string | undefined;
    const msecret = field(method, s, w, "msecret", "string", false) as string | undefined;
    return {
      user: field(method, s, w, "user", "string") as string,
      secret: field(method, s, w, "secret", "string") as string,
      ...(muser !== undefined ? { muser } : {}),
      ...(msecret !== undefined ? { msecret } : {}),
    };
  });
}

/** iscsi_set_options's integer keys: our option, and the range SPDK (or RFC 7143 §13) allows. */
const INT_OPTIONS: Record<
  string,
  { key: keyof IscsiGlobalOptions | "maxQueueDepth"; min: number; max: number }
> = {
  nop_timeout: { key: "nopTimeoutSec", min: 0, max: 3600 },
  nop_in_interval: { key: "nopInIntervalSec", min: 1, max: 60 },
  max_sessions: { key: "maxSessions", min: 1, max: 65535 },
  max_connections_per_session: { key: "maxConnectionsPerSession", min: 1, max: 65535 },
  max_queue_depth: { key: "maxQueueDepth", min: 1, max: 4096 },
  default_time2wait: { key: "defaultTime2Wait", min: 0, max: 3600 },
  default_time2retain: { key: "defaultTime2Retain", min: 0, max: 3600 },
  first_burst_length: { key: "firstBurstLength", min: 512, max: 16777215 },
  max_burst_length: { key: "maxBurstLength", min: 512, max: 16777215 },
  max_recv_data_segment_length: { key: "maxRecvDataSegmentLength", min: 512, max: 16777215 },
  max_r2t_per_connection: { key: "maxOutstandingR2T", min: 1, max: 65535 },
  error_recovery_level: { key: "errorRecoveryLevel", min: 0, max: 2 },
  login_timeout: { key: "loginTimeoutSec", min: 1, max: 3600 },
};
const BOOL_OPTIONS: Record<string, keyof IscsiGlobalOptions> = {
  immediate_data: "immediateData",
  initial_r2t: "initialR2T",
  allow_duplicated_isid: "allowDuplicateIsid",
};
/** SPDK's memory-pool sizes: meaningless here (no pools), accepted so SPDK configs load. */
const POOL_OPTIONS = [
  "max_large_datain_per_connection",
  "pdu_pool_size",
  "immediate_data_pool_size",
  "data_out_pool_size",
];

export function registerIscsiControl(registry: MethodTable, server: ControlServer): void {
  const { graph } = server;

  const optionParams: Record<string, ParamSpec> = {
    auth_file: { type: "string" },
    node_base: { type: "string" },
    ...CHAP_PARAMS,
  };
  for (const k of Object.keys(INT_OPTIONS)) optionParams[k] = { type: "integer" };
  for (const k of Object.keys(BOOL_OPTIONS)) optionParams[k] = { type: "boolean" };
  for (const k of POOL_OPTIONS) optionParams[k] = { type: "integer" };
  registry.register("iscsi_set_options", {
    description: "global iSCSI options (before framework_start_init only, as SPDK)",
    states: ["startup"],
    params: optionParams,
    handler: (p) => {
      const m = "iscsi_set_options";
      const g: Record<string, unknown> = { ...server.live.globals };
      let maxQueueDepth = server.live.maxQueueDepth;
      for (const [k, o] of Object.entries(INT_OPTIONS)) {
        const v = p[k] as number | undefined;
        if (v === undefined) continue;
        if (v < o.min || v > o.max) throw invalidParam(m, `${k} must be ${o.min}..${o.max}, got ${v}`);
        if (o.key === "maxQueueDepth") maxQueueDepth = v;
        else if (o.key === "nopTimeoutSec") g.nopTimeoutSec = v === 0 ? Infinity : v;
        else g[o.key] = v;
      }
      for (const [k, key] of Object.entries(BOOL_OPTIONS)) if (p[k] !== undefined) g[key] = p[k];
      if (p.node_base !== undefined) {
        if (!/^(iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.\-:]*|eui\.|naa\.)/.test(p.node_base as string))
          throw invalidParam(m, `node_base "${p.node_base as string}" is not an iqn. name prefix`);
        g.nodeBase = p.node_base;
      }
      const globals = g as unknown as IscsiGlobalOptions;
      if (globals.firstBurstLength > globals.maxBurstLength)
        throw invalidParam(
          m,
          `first_burst_length ${globals.firstBurstLength} exceeds max_burst_length ${globals.maxBurstLength}`,
        );
      const authFile =
        p.auth_file === undefined || p.auth_file === "" ? server.live.authFile : (p.auth_file as string);
      const c = chap(p);
      // The group is checked at the first discovery login: auth groups are created after start-up.
      checkChapParams(c.auth, c.group, m);
      const withAuth: IscsiGlobalOptions = ["disable_chap", "require_chap", "mutual_chap", "chap_group"].some(
        (k) => p[k] !== undefined,
      )
        ? { ...globals, discoveryAuth: c.auth, discoveryAuthGroup: c.group === 0 ? undefined : c.group }
        : globals;
      graph.setIscsiOptions(withAuth, maxQueueDepth, authFile);
      return true;
    },
  });
  registry.register("iscsi_set_discovery_auth", {
    description: "CHAP for discovery sessions",
    states: ["startup", "runtime"],
    params: CHAP_PARAMS,
    handler: (p) => {
      const c = chap(p);
      graph.setDiscoveryAuth(c.auth, c.group);
      return true;
    },
  });

  registry.register("iscsi_create_portal_group", {
    description: "a portal group: listens at once, or after iscsi_start_portal_group with wait",
    params: {
      tag: { type: "integer", required: true },
      portals: { type: "array", required: true },
      private: { type: "boolean" },
      wait: { type: "boolean" },
    },
    handler: async (p) => {
      const m = "iscsi_create_portal_group";
      const portals = objects(m, p.portals, "portals").map((o, i) => ({
        host: field(m, o, `portals[${i}]`, "host", "string") as string,
        port: port(m, o, `portals[${i}]`),
      }));
      await graph.createPortalGroup({
        tag: p.tag as number,
        portals,
        private: p.private === true,
        wait: p.wait === true,
      });
      return true;
    },
  });
  registry.register("iscsi_start_portal_group", {
    description: "start listening on a portal group created with wait",
    params: { tag: { type: "integer", required: true } },
    handler: async (p) => {
      await graph.startPortalGroup(p.tag as number);
      return true;
    },
  });
  registry.register("iscsi_delete_portal_group", {
    description: "close a portal group's listeners and connections",
    params: { tag: { type: "integer", required: true } },
    handler: async (p) => {
      await graph.deletePortalGroup(p.tag as number);
      return true;
    },
  });

  registry.register("iscsi_create_initiator_group", {
    description: "an initiator group: names (ANY, an IQN, !IQN) and netmasks",
    params: {
      tag: { type: "integer", required: true },
      initiators: { type: "array", required: true },
      netmasks: { type: "array", required: true },
    },
    handler: (p) => {
      const m = "iscsi_create_initiator_group";
      graph.createInitiatorGroup({
        tag: p.tag as number,
        initiators: strings(m, p.initiators, "initiators"),
        netmasks: strings(m, p.netmasks, "netmasks"),
      });
      return true;
    },
  });
  registry.register("iscsi_delete_initiator_group", {
    description: "delete an initiator group (and the mappings naming it)",
    params: { tag: { type: "integer", required: true } },
    handler: (p) => {
      graph.deleteInitiatorGroup(p.tag as number);
      return true;
    },
  });
  for (const [name, add] of [
    ["iscsi_initiator_group_add_initiators", true],
    ["iscsi_initiator_group_remove_initiators", false],
  ] as const) {
    registry.register(name, {
      description: `${add ? "add" : "remove"} initiator names and netmasks of a group`,
      params: {
        tag: { type: "integer", required: true },
        initiators: { type: "array" },
        netmasks: { type: "array" },
      },
      handler: (p) => {
        graph.changeInitiatorGroup(
          p.tag as number,
          add,
          strings(name, p.initiators, "initiators"),
          strings(name, p.netmasks, "netmasks"),
        );
        return true;
      },
    });
  }

  registry.register("iscsi_create_auth_group", {
    description: "a CHAP auth group with its secrets",
    params: { tag: { type: "integer", required: true }, secrets: { type: "array" } },
    handler: (p) => {
      graph.setAuthGroup(p.tag as number, secrets("iscsi_create_auth_group", p.secrets), true);
      return true;
    },
  });
  registry.register("iscsi_delete_auth_group", {
    description: "delete a CHAP auth group",
    params: { tag: { type: "integer", required: true } },
    handler: (p) => {
      graph.deleteAuthGroup(p.tag as number);
      return true;
    },
  });
  registry.register("iscsi_auth_group_add_secret", {
    description: "add a CHAP secret to an auth group",
    params: {
      tag: { type: "integer", required: true },
      user: { type: "string", required: true },
      secret: { type: "string", required: true },
      muser: { type: "string" },
      msecret: { type: "string" },
    },
    handler: (p) => {
      const m = "iscsi_auth_group_add_secret";
      const ag = server.live.authGroupMap.get(p.tag as number);
      if (!ag) throw invalidParam(m, `tag: no auth group ${p.tag as number}`);
      if (ag.secrets.some((s) => s.user === p.user))
        throw invalidParam(m, `user "${p.user as string}" is already in group ${ag.tag}`);
      const [added] = secrets(m, [p]);
      graph.setAuthGroup(ag.tag, [...ag.secrets, added!], false);
      return true;
    },
  });
  registry.register("iscsi_auth_group_remove_secret", {
    description: "remove a CHAP secret from an auth group",
    params: { tag: { type: "integer", required: true }, user: { type: "string", required: true } },
    handler: (p) => {
      const m = "iscsi_auth_group_remove_secret";
      const ag = server.live.authGroupMap.get(p.tag as number);
      if (!ag) throw invalidParam(m, `tag: no auth group ${p.tag as number}`);
      if (!ag.secrets.some((s) => s.user === p.user))
        throw invalidParam(m, `user "${p.user as string}" is not in group ${ag.tag}`);
      graph.setAuthGroup(
        ag.tag,
        ag.secrets.filter((s) => s.user !== p.user),
        false,
      );
      return true;
    },
  });
  registry.register("iscsi_get_auth_groups", {
    description: "CHAP auth groups and their secrets",
    handler: () =>
      server.live.authGroups.map((ag) => ({
        tag: ag.tag,
        secrets: ag.secrets.map((s) => ({
          user: s.user,
          secret: s.secret,
          ...(s.muser !== undefined ? { muser: s.muser, msecret: s.msecret ?? "" } : {}),
        })),
      })),
  });

  registry.register("iscsi_get_stats", {
    description:
      "connections by state (SPDK's invalid/running/exiting/exited), and counters of refused, delayed and timed-out peers (usertgt's)",
    handler: () => {
      const target = graph.iscsiTarget();
      const conns = target?.connectionInfo() ?? [];
      const exiting = conns.filter((c) => c.state === "logout" || c.state === "closed").length;
      const defences = target
        ? {
            ...target.stats.toJSON(),
            prelogin_connections: target.preLogin.count,
            write_data_buffered: target.writeBudget.used,
          }
        : {};
      return { invalid: 0, running: conns.length - exiting, exiting, exited: 0, ...defences };
    },
  });
  registry.register("scsi_get_devices", {
    description: "SCSI devices (one per target node)",
    handler: () => graph.scsiDevices().map((d, id) => ({ id, device_name: d.name })),
  });

  registry.register("iscsi_create_target_node", {
    description: "a target node with its LUNs and mappings",
    params: {
      name: { type: "string", required: true },
      alias_name: { type: "string" },
      luns: { type: "array", required: true },
      pg_ig_maps: { type: "array", required: true },
      queue_depth: { type: "integer", required: true },
      ...CHAP_PARAMS,
      header_digest: { type: "boolean" },
      data_digest: { type: "boolean" },
    },
    handler: async (p) => {
      const m = "iscsi_create_target_node";
      const luns = objects(m, p.luns, "luns").map((l, i) => ({
        bdev: field(m, l, `luns[${i}]`, "bdev_name", "string") as string,
        id: field(m, l, `luns[${i}]`, "lun_id", "integer") as number,
      }));
      const c = chap(p);
      const alias = p.alias_name as string | undefined;
      await graph.createTargetNode({
        name: fullTargetName(server.live.globals.nodeBase, p.name as string),
        ...(alias ? { alias } : {}),
        maps: maps(m, p.pg_ig_maps),
        auth: c.auth,
        authGroup: c.group === 0 ? undefined : c.group,
        digest: { headerRequired: p.header_digest === true, dataRequired: p.data_digest === true },
        queueDepth: p.queue_depth as number,
        luns,
      });
      return true;
    },
  });
  const nodeName = (p: JsonObject): string => fullTargetName(server.live.globals.nodeBase, p.name as string);
  registry.register("iscsi_delete_target_node", {
    description: "delete a target node; its sessions are asked to log out, then dropped",
    params: { name: { type: "string", required: true } },
    handler: async (p) => {
      await graph.deleteTargetNode(nodeName(p));
      return true;
    },
  });
  registry.register("iscsi_target_node_add_lun", {
    description: "add a LUN (initiators get REPORTED LUNS DATA HAS CHANGED)",
    params: {
      name: { type: "string", required: true },
      bdev_name: { type: "string", required: true },
      lun_id: { type: "integer" },
    },
    handler: async (p) => {
      await graph.addLun(nodeName(p), p.bdev_name as string, p.lun_id as number | undefined);
      return true;
    },
  });
  for (const [name, add] of [
    ["iscsi_target_node_add_pg_ig_maps", true],
    ["iscsi_target_node_remove_pg_ig_maps", false],
  ] as const) {
    registry.register(name, {
      description: `${add ? "add" : "remove"} portal group / initiator group mappings of a target`,
      params: { name: { type: "string", required: true }, pg_ig_maps: { type: "array", required: true } },
      handler: (p) => {
        graph.changeMaps(nodeName(p), add, maps(name, p.pg_ig_maps));
        return true;
      },
    });
  }
  registry.register("iscsi_target_node_set_auth", {
    description: "CHAP for one target node",
    params: { name: { type: "string", required: true }, ...CHAP_PARAMS },
    handler: (p) => {
      const c = chap(p);
      graph.setNodeAuth(nodeName(p), c.auth, c.group);
      return true;
    },
  });
  registry.register("iscsi_target_node_request_logout", {
    description: "ask a target's sessions (through one portal group, if given) to log out",
    params: { name: { type: "string", required: true }, pg_tag: { type: "integer" } },
    handler: async (p) => {
      await graph.requestLogout(nodeName(p), p.pg_tag as number | undefined);
      return true;
    },
  });
}
