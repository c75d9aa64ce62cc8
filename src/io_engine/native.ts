/**
 * The optional native addon (native/, built by `npm ci`): range operations, block-device geometry
 * and the io_uring engine. Loaded once; null when it was not built, and each part may be missing
 * from an older or a liburing-less build, so callers check what they use.
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

export interface BlockDeviceGeometry {
  readonly sizeBytes: number;
  readonly logicalBlockSize: number;
  readonly physicalBlockSize: number;
  readonly minimumIoSize: number;
  readonly optimalIoSize: number;
  readonly rotational: boolean;
}

export interface NativeAddon {
  punchHole(fd: number, offset: number, length: number): Promise<void>;
  blockDiscard(fd: number, offset: number, length: number): Promise<void>;
  blockZeroOut(fd: number, offset: number, length: number): Promise<void>;
  blockDeviceInfo(fd: number): BlockDeviceGeometry;
  /** A Buffer over page-aligned memory (O_DIRECT reads land in it without a bounce). */
  alignedBuffer(bytes: number): Buffer;
  uringAvailable(): boolean;
  /**
   * How the ring hands completions to the event loop: "deferred" (DEFER_TASKRUN, Linux 6.1+: one
   * eventfd signal per batch), "cooperative" (COOP_TASKRUN), "signal" (each completion interrupts
   * the thread); undefined before uringInit.
   */
  uringCompletionMode?(): "deferred" | "cooperative" | "signal" | undefined;
  uringInit(
    slots: number,
    onComplete: (count: number) => void,
    ids: Int32Array,
    results: Int32Array,
    bounceChunkSize: number,
    bounceChunks: number,
  ): number;
  uringSubmit(
    slot: number,
    op: number,
    fd: number,
    offset: number,
    bufs: readonly Buffer[],
    flags: number,
  ): number;
}

let addon: Partial<NativeAddon> | null | undefined;

/** native/build/Release/usertgt_native.node, or null when it is not built. */
export function nativeAddon(): Partial<NativeAddon> | null {
  if (addon !== undefined) return addon;
  try {
    // dist/src/io_engine/native.js → the package root is three levels up.
    const require = createRequire(import.meta.url);
    addon = require(
      fileURLToPath(new URL("../../../native/build/Release/usertgt_native.node", import.meta.url)),
    ) as Partial<NativeAddon>;
  } catch {
    addon = null;
  }
  return addon;
}

/**
 * An allocator of page-aligned Buffers for data an O_DIRECT read fills (READ data buffers), or
 * undefined when the addon lacks it (ordinary Buffers then, bounced by the engine).
 */
export function alignedBufferAllocator(): ((bytes: number) => Buffer) | undefined {
  const a = nativeAddon();
  return typeof a?.alignedBuffer === "function" ? a.alignedBuffer : undefined;
}
