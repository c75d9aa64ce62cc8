/**
 * The control plane's write methods, one file per subsystem as SPDK's *_rpc.c: framework (and
 * log), bdev, iscsi. The read-only ones are in ../rpc_methods.ts.
 */
import type { MethodRegistry } from "../../rpc/registry.js";
import type { ControlServer, MethodTable } from "./control_server.js";
import { registerBdevControl } from "./bdev_methods.js";
import { registerFrameworkControl } from "./framework_methods.js";
import { registerIscsiControl } from "./iscsi_methods.js";

/** Methods that must not wait for others: framework_wait_init waits for framework_start_init. */
const UNSERIALIZED = new Set(["framework_wait_init"]);

/**
 * The write methods run one at a time, in arrival order across connections (SPDK runs its RPCs on
 * one thread): an operation that awaits (a listener bound, a LUN drained) never sees another change
 * the model under it, e.g. two add_lun calls picking the same free LUN ID.
 */
export function registerControlMethods(registry: MethodRegistry, server: ControlServer): void {
  let tail: Promise<unknown> = Promise.resolve();
  const serialized: MethodTable = {
    register: (name, spec) =>
      registry.register(
        name,
        UNSERIALIZED.has(name)
          ? spec
          : {
              ...spec,
              handler: (params) => {
                const run = tail.then(() => spec.handler(params));
                tail = run.catch(() => undefined);
                return run;
              },
            },
      ),
  };
  registerFrameworkControl(serialized, server);
  registerBdevControl(serialized, server);
  registerIscsiControl(serialized, server);
}
