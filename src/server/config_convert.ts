/**
 * `usertgt config convert`: a legacy INI config as the SPDK JSON config that builds the same
 * server (SPDK's scripts/config_converter.py did this for its users when v20.10 dropped the INI
 * format). The JSON is made by the very dump `rpc.py save_config` reads from a running server, on
 * the model the INI file describes, so converting and saving agree by construction.
 */
import { BdevRegistry } from "../bdev/registry.js";
import type { SpdkConfig } from "../config/spdk_config.js";
import type { JsonObject, JsonValue } from "../rpc/jsonrpc.js";
import { MethodRegistry } from "../rpc/registry.js";
import { LiveConfig } from "./live_config.js";
import { registerServerMethods } from "./rpc_methods.js";

/** The legacy config's model as a LiveConfig, without building anything. */
export function liveConfigOf(config: SpdkConfig): LiveConfig {
  const live = LiveConfig.fromGlobals(config);
  for (const b of config.bdevs) live.bdevMap.set(b.name, b);
  for (const pg of config.portalGroups)
    live.portalGroupMap.set(pg.tag, { ...pg, private: false, wait: false });
  for (const ig of config.initiatorGroups) live.initiatorGroupMap.set(ig.tag, ig);
  for (const t of config.targetNodes) {
    const { section: _s, file: _f, line: _l, luns, ...rest } = t;
    live.setTargetNode({ ...rest, luns: luns.map((l) => ({ id: l.id, bdev: l.bdev })) });
  }
  return live;
}

export function convertLegacyConfig(config: SpdkConfig): JsonObject {
  const methods = new MethodRegistry();
  registerServerMethods(methods, {
    config: liveConfigOf(config),
    registry: new BdevRegistry(),
    iscsiTarget: () => undefined,
  });
  const subsystems = methods.get("framework_get_subsystems")!.handler({}) as JsonObject[];
  return {
    subsystems: subsystems.map((s) => ({
      subsystem: s.subsystem as string,
      config: methods.get("framework_get_config")!.handler({ name: s.subsystem as string }) as JsonValue,
    })),
  };
}
