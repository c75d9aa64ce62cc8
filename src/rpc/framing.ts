/**
 * Stream framing for the control socket. SPDK's rpc.py writes one JSON object per request with no
 * delimiter and the server finds its end by parsing (lib/jsonrpc/jsonrpc_server.c); other clients
 * send newline-terminated JSON. This framer accepts both: it scans for the end of each top-level
 * JSON value (braces/brackets outside strings), skipping whitespace between values. It also follows
 * the JSON grammar byte by byte, so a value that has already gone wrong ("{not json") is given up at
 * the next newline and handed on as one garbage frame (answered -32700) instead of waiting forever
 * for a closing brace that will never come.
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

const COLON = 0x3a;
const COMMA = 0x2c;
const NEWLINE = 0x0a;

/** What the grammar allows next, outside a string, number or literal. */
const enum Expect {
  Value,
  ValueOrClose,
  KeyOrClose,
  Key,
  Colon,
  CommaOrClose,
}

function isNumberByte(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45;
}

const LITERALS: Record<number, string> = { 0x74: "true", 0x66: "false", 0x6e: "null" };

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

export class JsonStreamFramer {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  // Scan state carried across chunks so each byte is looked at once.
  /** Open containers: true for an object, false for an array. */
  private readonly containers: boolean[] = [];
  private expect = Expect.Value;
  private inString = false;
  private escaped = false;
  private inNumber = false;
  /** The rest of a literal (true/false/null) still to come. */
  private literal = "";
  private started = false;
  /** The value broke the grammar: everything up to the next newline is one garbage frame. */
  private garbage = false;

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
        // Not a JSON object/array: garbage up to the next newline.
        if (c !== OPEN_BRACE && c !== OPEN_BRACKET) this.garbage = true;
      }
      if (this.garbage) {
        if (c === NEWLINE) {
          frames.push(this.take(chunk, start, i + 1));
          start = i + 1;
        }
        continue;
      }
      if (this.scan(c)) {
        frames.push(this.take(chunk, start, i + 1));
        start = i + 1;
      } else if (this.garbage && c === NEWLINE) {
        frames.push(this.take(chunk, start, i + 1));
        start = i + 1;
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

  /** One byte of a value: true when it closes the top-level value; sets `garbage` on a grammar error. */
  private scan(c: number): boolean {
    if (this.inString) {
      if (this.escaped) this.escaped = false;
      else if (c === BACKSLASH) this.escaped = true;
      else if (c === QUOTE) {
        this.inString = false;
        this.expect = this.expect === Expect.Key ? Expect.Colon : Expect.CommaOrClose;
      } else if (c < 0x20) this.garbage = true; // raw control characters are not allowed in strings
      return false;
    }
    if (this.literal !== "") {
      if (c !== this.literal.charCodeAt(0)) {
        this.garbage = true;
        return false;
      }
      this.literal = this.literal.slice(1);
      if (this.literal === "") this.expect = Expect.CommaOrClose;
      return false;
    }
    if (this.inNumber) {
      if (isNumberByte(c)) return false;
      this.inNumber = false;
      this.expect = Expect.CommaOrClose;
    }
    if (isSpace(c)) return false;
    switch (this.expect) {
      case Expect.Value:
      case Expect.ValueOrClose:
        if (c === CLOSE_BRACKET && this.expect === Expect.ValueOrClose) return this.close();
        return this.beginValue(c);
      case Expect.KeyOrClose:
      case Expect.Key:
        if (c === CLOSE_BRACE && this.expect === Expect.KeyOrClose) return this.close();
        if (c !== QUOTE) break;
        this.inString = true;
        this.expect = Expect.Key;
        return false;
      case Expect.Colon:
        if (c !== COLON) break;
        this.expect = Expect.Value;
        return false;
      case Expect.CommaOrClose: {
        const inObject = this.containers[this.containers.length - 1];
        if (c === COMMA) {
          this.expect = inObject ? Expect.Key : Expect.Value;
          return false;
        }
        if (c === CLOSE_BRACE && inObject === true) return this.close();
        if (c === CLOSE_BRACKET && inObject === false) return this.close();
        break;
      }
    }
    this.garbage = true;
    return false;
  }

  private beginValue(c: number): boolean {
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      this.containers.push(c === OPEN_BRACE);
      this.expect = c === OPEN_BRACE ? Expect.KeyOrClose : Expect.ValueOrClose;
    } else if (c === QUOTE) {
      this.inString = true;
      this.expect = Expect.Value;
    } else if ((c >= 0x30 && c <= 0x39) || c === 0x2d) {
      this.inNumber = true;
    } else if (LITERALS[c] !== undefined) {
      this.literal = LITERALS[c].slice(1);
    } else {
      this.garbage = true;
    }
    return false;
  }

  /** A closing brace or bracket: true when it ends the top-level value. */
  private close(): boolean {
    this.containers.pop();
    this.expect = Expect.CommaOrClose;
    return this.containers.length === 0;
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
    this.containers.length = 0;
    this.expect = Expect.Value;
    this.inString = false;
    this.escaped = false;
    this.inNumber = false;
    this.literal = "";
    this.started = false;
    this.garbage = false;
    return text;
  }
}
