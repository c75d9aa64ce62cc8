/**
 * The device tree joined to the server: `[TCMUR]` and `[BIO]` devices come from the device tree service
 * (src/devtree/devtree_service.ts), tree devices used directly as LUNs are claimed for writing (so a
 * BIO bdev or a FUSE writer cannot write behind the LUN), the tree is shown through FUSE once the
 * target listens, and at shutdown the view is unmounted before the block devices close.
 */
import type { SpdkConfig } from "../config/spdk_config.js";
import { DevtreeService } from "../devtree/devtree_service.js";
import type { Logger } from "../util/log.js";
import type { BdevModules } from "./bdev_modules.js";
import type { ServerHooks } from "./server_hooks.js";

export interface DevtreeWiringOptions {
  /** Where the FUSE view goes (default /UMCfuse); false: no FUSE view. */
  readonly mountPoint?: string | false;
  /** A directory of handler_<name>.js TCMUR handler modules. */
  readonly handlerDir?: string;
  readonly logger?: Logger;
  /** Build the tree even without [TCMUR]/[BIO] devices (DRBD resources need one for their devices). */
  readonly always?: boolean;
}

export interface DevtreeWiring {
  readonly service: DevtreeService;
  readonly bdevModules: BdevModules;
  readonly hooks: ServerHooks;
}

/** The wiring for a config, or undefined when it has no TCMUR or BIO devices (no tree, no mount). */
export async function devtreeWiring(
  config: Pick<SpdkConfig, "bdevs">,
  opts: DevtreeWiringOptions = {},
): Promise<DevtreeWiring | undefined> {
  if (!opts.always && !config.bdevs.some((b) => b.kind === "tcmur" || b.kind === "bio")) return undefined;
  const service = await DevtreeService.create({
    mountPoint: opts.mountPoint,
    handlerDir: opts.handlerDir,
    logger: opts.logger,
  });
  return {
    service,
    bdevModules: {
      tcmur: (spec) => service.openTcmur(spec),
      bio: (spec) => service.openBio(spec),
    },
    hooks: {
      lunMapped: ({ targetName, id, bdev }) => {
        service.claimForLun(bdev, `LUN${id} of ${targetName}`);
      },
      lunUnmapped: ({ targetName, id }) => {
        service.releaseForLun(`LUN${id} of ${targetName}`);
      },
      // LUN claims go with the hot removal; any other holder (DRBD, a BIO bdev) keeps the device.
      bdevHolder: (name) =>
        service.tree
          .holders(name)
          .map((h) => h.owner)
          .find((owner) => !/^LUN\d+ of /.test(owner)),
      bdevDeleted: (dev) => {
        if (service.tree.get(dev.name)?.device === dev) service.tree.remove(dev.name);
      },
      started: async () => {
        await service.mount();
      },
      beforeClose: () => service.stop(),
    },
  };
}
