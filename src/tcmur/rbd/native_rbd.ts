/**
 * The librbd binding (native/rbd.c, built as usertgt_rbd.node when Debian's librbd-dev is
 * installed). Loaded once on first use; absent, the rbd handler reports itself unavailable.
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** Opaque librbd image handle. */
export type RbdHandle = { readonly __rbd: unique symbol };

export const enum RbdOp {
  Readv = 0,
  Writev = 1,
  Flush = 2,
  Discard = 3,
  WriteSame = 4,
  CompareAndWrite = 5,
}

export interface RbdOpenOptions {
  readonly pool: string;
  readonly namespace?: string;
  readonly image: string;
  readonly conf?: string;
  readonly id?: string;
  /** Seconds, as a string for rados_conf_set. */
  readonly osdOpTimeout?: string;
  readonly readOnly: boolean;
}

/**
 * (tag, ret, mismatch) triples of completed requests, up to a triple whose tag is 0 (the array is
 * reused between calls: read it before returning); tag -1: the image header changed.
 */
export type RbdDispatcher = (events: Float64Array) => void;

export interface RbdNative {
  open(opts: RbdOpenOptions, dispatcher: RbdDispatcher): Promise<{ handle: RbdHandle; size: number }>;
  submit(
    handle: RbdHandle,
    tag: number,
    op: RbdOp,
    offset: number,
    length: number,
    a?: readonly Buffer[] | Buffer,
    b?: Buffer,
  ): number;
  size(handle: RbdHandle): Promise<number>;
  lock(handle: RbdHandle, acquire: boolean): Promise<void>;
  lockOwner(handle: RbdHandle): Promise<boolean>;
  close(handle: RbdHandle): Promise<void>;
}

let loaded: { native: RbdNative } | { error: string } | undefined;

export function loadRbdNative(): RbdNative {
  if (!loaded) {
    try {
      // dist/src/tcmur/rbd/native_rbd.js → the package root is four levels up.
      const require = createRequire(import.meta.url);
      const mod = require(
        fileURLToPath(new URL("../../../../native/build/Release/usertgt_rbd.node", import.meta.url)),
      ) as Partial<RbdNative>;
      loaded =
        typeof mod.submit === "function" ? { native: mod as RbdNative } : { error: "module has no submit()" };
    } catch (err) {
      loaded = { error: (err as Error).message.split("\n")[0] };
    }
  }
  if ("error" in loaded) {
    throw new Error(
      `rbd handler unavailable: librbd not built (install librbd-dev and run npm ci: ${loaded.error})`,
    );
  }
  return loaded.native;
}
