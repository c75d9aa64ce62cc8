/**
 * The control plane's write methods, one file per subsystem as SPDK's *_rpc.c: framework (and
 * log), bdev, iscsi. The read-only ones are in ../rpc_methods.ts.
 */
import type { BdevRegistry } from "../../bdev/registry.js";
import type { MethodRegistry } from "../../rpc/registry.js";
import type { BdevModules } from "../bdev_modules.js";
import type { ServerGraph } from "../graph_control.js";
import type { LiveConfig } from "../live_config.js";
import { registerBdevControl } from "./bdev_methods.js";
import { registerFrameworkControl } from "./framework_methods.js";
import { registerIscsiControl } from "./iscsi_methods.js";

/** What the methods act on; the server passes itself. */
export interface ControlServer {
  readonly graph: ServerGraph;
  readonly live: LiveConfig;
  readonly registry: BdevRegistry;
  bdevModules(): BdevModules;
  frameworkStartInit(): Promise<void>;
  frameworkInitialized(): Promise<void>;
  readonly killHandler: ((signal: NodeJS.Signals) => void) | undefined;
}

export function registerControlMethods(registry: MethodRegistry, server: ControlServer): void {
  registerFrameworkControl(registry, server);
  registerBdevControl(registry, server);
  registerIscsiControl(registry, server);
}
