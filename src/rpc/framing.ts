/**
 * Stream framing for the control socket. SPDK's rpc.py writes one JSON object per request with no
 * delimiter and the server finds its end by parsing (lib/jsonrpc/jsonrpc_server.c); other clients
 * send newline-terminated JSON. This framer accepts both: it scans for the end of each top-level
 * JSON value (braces/brackets outside strings), skipping whitespace between values.
 */

/** Longest single request accepted; a client sending more without completing a value is cut off. */
export const MAX_REQUEST_BYTES = 1024 * 1024;

export class FrameTooLargeError extends Error {
  constructor(readonly bytes: number) {
    super(`request exceeds ${MAX_REQUEST_BYTES} bytes without ending (${bytes} bytes buffered)`);
  }
}

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

export class JsonStreamFramer {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  // Scan state carried across chunks so each byte is looked at once.
  private depth = 0;
  private inString = false;
  private escaped = false;
  private started = false;

  constructor(private readonly maxBytes = MAX_REQUEST_BYTES) {}

  /**
   * Feed bytes; returns the complete frames (each the text of one top-level value, or of one
   * line of non-JSON garbage so the caller can answer -32700). Throws FrameTooLargeError.
   */
  push(chunk: Buffer): string[] {
    const frames: string[] = [];
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (!this.started) {
        if (isSpace(c)) {
          if (this.pendingBytes === 0) start = i + 1;
          continue;
        }
        this.started = true;
        if (c !== OPEN_BRACE && c !== OPEN_BRACKET) {
          // Not a JSON object/array: treat as garbage up to the next newline (depth stays 0,
          // so the newline below ends it).
          this.depth = -1;
        }
      }
      if (this.depth === -1) {
        if (c === 0x0a) {
          frames.push(this.take(chunk, start, i + 1));
          start = i + 1;
        }
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) this.inString = false;
        continue;
      }
      if (c === QUOTE) this.inString = true;
      else if (c === OPEN_BRACE || c === OPEN_BRACKET) this.depth++;
      else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
        this.depth--;
        if (this.depth === 0) {
          frames.push(this.take(chunk, start, i + 1));
          start = i + 1;
        }
      }
    }
    if (start < chunk.length && (this.started || this.pendingBytes > 0)) {
      const rest = chunk.subarray(start);
      this.pending.push(rest);
      this.pendingBytes += rest.length;
      if (this.pendingBytes > this.maxBytes) throw new FrameTooLargeError(this.pendingBytes);
    }
    return frames;
  }

  /** The frame that ends at chunk[end): what was pending plus chunk[start, end). */
  private take(chunk: Buffer, start: number, end: number): string {
    const tail = chunk.subarray(start, end);
    const text =
      this.pendingBytes === 0
        ? tail.toString("utf8")
        : Buffer.concat([...this.pending, tail], this.pendingBytes + tail.length).toString("utf8");
    if (this.pendingBytes + tail.length > this.maxBytes) {
      throw new FrameTooLargeError(this.pendingBytes + tail.length);
    }
    this.pending = [];
    this.pendingBytes = 0;
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
    this.started = false;
    return text;
  }
}
