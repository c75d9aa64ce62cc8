/**
 * Creating the block devices a config names, one module per section kind (SPDK's bdev modules:
 * each fills one small table and registers it). The server asks the module of each BdevSpec's kind
 * to build it and puts the result in the BdevRegistry.
 *
 * Extension point: TCMUR and BIO (device tree modules) are not built in here; ServerOptions.bdevModules adds
 * modules for "tcmur" and "bio" (devtree_wiring.ts does, for the CLI). A module can keep shared state
 * (the device tree, the handler registry) in its closure and register clean-up with ctx.onStop().
 */
import type { BlockDevice } from "../bdev/bdev.js";
import { AioBdev } from "../bdev/aio/aio.js";
import { MallocBdev } from "../bdev/malloc/malloc.js";
import type { BdevRegistry } from "../bdev/registry.js";
import type { BdevKind, BdevSpec } from "../config/spdk_config.js";
import { ConfigError } from "../config/errors.js";
import type { Logger } from "../util/log.js";

export interface BdevModuleContext {
  readonly registry: BdevRegistry;
  readonly logger: Logger;
  /** Run `fn` when the server stops, after every block device is closed (last registered runs first). */
  onStop(fn: () => Promise<void>): void;
}

export type SpecOf<K extends BdevKind> = Extract<BdevSpec, { kind: K }>;
export type BdevFactory<K extends BdevKind> = (
  spec: SpecOf<K>,
  ctx: BdevModuleContext,
) => Promise<BlockDevice>;
export type BdevModules = { readonly [K in BdevKind]?: BdevFactory<K> };

/** The modules built into the server. */
export const BUILTIN_BDEV_MODULES: BdevModules = {
  malloc: async (spec) =>
    new MallocBdev({
      name: spec.name,
      blockSize: spec.blockSize,
      blockCount: spec.blockCount,
      // A device re-created from a saved config keeps its UUID (VPD 0x83 stays the same).
      uuid: "uuid" in spec && typeof spec.uuid === "string" ? spec.uuid : undefined,
    }),
  aio: (spec) =>
    AioBdev.open({
      name: spec.name,
      path: spec.path,
      blockSize: spec.blockSizeFromDevice ? undefined : spec.blockSize,
      blockCount: spec.blockCount,
      direct: spec.direct,
    }),
};

const SECTION_OF: Record<BdevKind, string> = {
  malloc: "[Malloc]",
  aio: "[AIO]",
  tcmur: "[TCMUR]",
  bio: "[BIO]",
};

/**
 * Create every block device of `specs` in order and register it. A failure names the config line;
 * the devices created so far stay in the registry for the caller to close.
 */
export async function createBdevs(
  specs: readonly BdevSpec[],
  modules: BdevModules,
  ctx: BdevModuleContext,
): Promise<void> {
  for (const spec of specs) await createBdev(spec, modules, ctx);
}

/** Create one block device with its module and register it; errors are ConfigErrors naming `spec`'s line. */
export async function createBdev(
  spec: BdevSpec,
  modules: BdevModules,
  ctx: BdevModuleContext,
): Promise<BlockDevice> {
  const factory = modules[spec.kind] as BdevFactory<typeof spec.kind> | undefined;
  if (!factory) {
    throw new ConfigError(
      spec.file,
      spec.line,
      `${SECTION_OF[spec.kind]} devices are not available in this server (no "${spec.kind}" block device module)`,
    );
  }
  let dev: BlockDevice;
  try {
    dev = await factory(spec, ctx);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const e = new ConfigError(
      spec.file,
      spec.line,
      `cannot create block device ${spec.name}: ${(err as Error).message}`,
    );
    e.cause = err;
    throw e;
  }
  if (dev.name !== spec.name) {
    await dev.close();
    throw new ConfigError(
      spec.file,
      spec.line,
      `block device module "${spec.kind}" created "${dev.name}" for ${spec.name}`,
    );
  }
  ctx.registry.register(dev);
  ctx.logger.info(
    { bdev: dev.name, kind: spec.kind, blockSize: dev.blockSize, blockCount: dev.blockCount },
    "block device ready",
  );
  return dev;
}
