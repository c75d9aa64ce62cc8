/**
 * Tokens of drbd.conf as drbd-utils' scanner sees them: braces, semicolons, brackets (meta-disk index and
 * IPv6 addresses), double-quoted strings and bare words; `#` starts a comment to the end of the line.
 */
import { DrbdConfigError } from "./model.js";

export type TokenKind = "{" | "}" | ";" | "[" | "]" | "word" | "string" | "eof";

export interface Token {
  kind: TokenKind;
  /** The word or the unquoted string; the punctuation itself otherwise. */
  text: string;
  file: string;
  line: number;
}

const PUNCT = new Set(["{", "}", ";", "[", "]"]);

/** Splits one file's text into tokens; an unterminated string is an error naming its line. */
export function tokenize(text: string, file: string): Token[] {
  const out: Token[] = [];
  let line = 1;
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === "\n") {
      line++;
      i++;
    } else if (c === " " || c === "\t" || c === "\r" || c === "\f" || c === "\v") {
      i++;
    } else if (c === "#") {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (PUNCT.has(c)) {
      out.push({ kind: c as TokenKind, text: c, file, line });
      i++;
    } else if (c === '"') {
      let s = "";
      i++;
      for (;;) {
        const d = text[i];
        if (d === undefined || d === "\n")
          throw new DrbdConfigError(
            { file, line },
            `expected closing '"', got ${d === undefined ? "end of file" : "end of line"}`,
          );
        if (d === '"') break;
        if (d === "\\" && (text[i + 1] === '"' || text[i + 1] === "\\")) {
          s += text[i + 1];
          i += 2;
          continue;
        }
        s += d;
        i++;
      }
      i++;
      out.push({ kind: "string", text: s, file, line });
    } else {
      const start = i;
      while (i < text.length && !/[\s{};[\]"#]/.test(text[i] as string)) i++;
      out.push({ kind: "word", text: text.slice(start, i), file, line });
    }
  }
  out.push({ kind: "eof", text: "end of file", file, line });
  return out;
}

/** How a token is named in "expected X, got Y" messages. */
export function describeToken(t: Token): string {
  if (t.kind === "eof") return "end of file";
  if (t.kind === "string") return `"${t.text.length > 20 ? t.text.slice(0, 20) + "..." : t.text}"`;
  return `'${t.text.length > 20 ? t.text.slice(0, 20) + "..." : t.text}'`;
}
