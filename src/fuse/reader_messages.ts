/** What the FUSE reader thread (dev_reader_worker.ts) and the session (fuse_session.ts) exchange. */
import type { MessagePort } from "node:worker_threads";

export interface ReaderWorkerData {
  readonly fd: number;
  readonly control: SharedArrayBuffer;
  /** Where the main thread sends request buffers back. */
  readonly returns: MessagePort;
  readonly bufferSize: number;
  readonly bufferCount: number;
}

export type ReaderMessage =
  | { readonly type: "ready" }
  | { readonly type: "request"; readonly buffer: ArrayBuffer; readonly length: number }
  | { readonly type: "end"; readonly reason: string };

export const CTL_GENERATION = 0;
export const CTL_START = 1;
