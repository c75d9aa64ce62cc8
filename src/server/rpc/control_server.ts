/** What the control plane's write methods act on and register through. */
import type { BdevRegistry } from "../../bdev/registry.js";
import type { MethodRegistry } from "../../rpc/registry.js";
import type { BdevModules } from "../bdev_modules.js";
import type { ServerGraph } from "../graph_control.js";
import type { LiveConfig } from "../live_config.js";

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

/** What a method file needs of the registry. */
export type MethodTable = Pick<MethodRegistry, "register">;
