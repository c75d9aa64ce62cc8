/**
 * The INI dialect of SPDK's legacy config files (lib/conf in SPDK ≤ v20.07, etc/spdk/iscsi.conf.in):
 *
 *   - `[Name]` starts a section; a section name appears at most once per file.
 *   - Inside a section every line is `Key value...`; a key may repeat (`Portal`, `AIO`, `Auth`) and the
 *     repeats are kept in file order.
 *   - Values are separated by blanks; a value that holds blanks is quoted with "..." or '...'
 *     (inside double quotes, \" and \\ escape).
 *   - `#` at the start of a word (outside quotes) starts a comment that runs to the end of the line.
 *   - A line ending in `\` continues on the next line.
 *
 * This module only splits text into sections and words and keeps line numbers; what the keys mean
 * is spdk_config.ts's business.
 */
import { ConfigError } from "./errors.js";

export interface IniEntry {
  readonly key: string;
  readonly values: readonly string[];
  /** 1-based line number of the (first physical) line. */
  readonly line: number;
}

export interface IniSection {
  readonly name: string;
  readonly line: number;
  readonly entries: readonly IniEntry[];
}

export interface IniFile {
  /** The path (or a label such as "<default>") used in error messages. */
  readonly file: string;
  readonly sections: readonly IniSection[];
}

/** Split one logical line into words, honouring quotes and trailing comments. */
export function splitWords(text: string, file: string, line: number): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === " " || c === "\t" || c === "\r") {
      i++;
      continue;
    }
    if (c === "#") break;
    if (c === '"' || c === "'") {
      let word = "";
      let j = i + 1;
      let closed = false;
      while (j < text.length) {
        const d = text[j];
        if (d === c) {
          closed = true;
          j++;
          break;
        }
        if (d === "\\" && c === '"' && j + 1 < text.length && (text[j + 1] === '"' || text[j + 1] === "\\")) {
          word += text[j + 1];
          j += 2;
          continue;
        }
        word += d;
        j++;
      }
      if (!closed) throw new ConfigError(file, line, `unterminated ${c} quote in value`);
      if (j < text.length && text[j] !== " " && text[j] !== "\t" && text[j] !== "\r") {
        throw new ConfigError(file, line, `expected a blank after the closing ${c} quote`);
      }
      words.push(word);
      i = j;
      continue;
    }
    let j = i;
    while (j < text.length && text[j] !== " " && text[j] !== "\t" && text[j] !== "\r") j++;
    words.push(text.slice(i, j));
    i = j;
  }
  return words;
}

const SECTION_RE = /^\[([A-Za-z][A-Za-z0-9_]*)\]$/;

/** Parse the text of a config file. Throws ConfigError (file:line: what) on malformed lines. */
export function parseIni(text: string, file: string): IniFile {
  const physical = text.split("\n");
  const sections: { name: string; line: number; entries: IniEntry[] }[] = [];
  const seen = new Map<string, number>();
  let current: { name: string; line: number; entries: IniEntry[] } | undefined;

  for (let n = 0; n < physical.length; n++) {
    const lineNo = n + 1;
    let logical = physical[n].replace(/\r$/, "");
    // Continuation: SPDK joins a line ending in a backslash with the next one.
    while (/\\\s*$/.test(logical) && !logical.trimStart().startsWith("#")) {
      logical = logical.replace(/\\\s*$/, " ");
      n++;
      if (n >= physical.length) {
        throw new ConfigError(file, lineNo, "line continuation (\\) at the end of the file");
      }
      logical += physical[n].replace(/\r$/, "");
    }
    const trimmed = logical.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;

    if (trimmed.startsWith("[")) {
      const withoutComment = trimmed.replace(/\s+#.*$/, "");
      const m = SECTION_RE.exec(withoutComment);
      if (!m) {
        throw new ConfigError(
          file,
          lineNo,
          `expected a section header like [Name], got ${JSON.stringify(trimmed)}`,
        );
      }
      const name = m[1];
      const prev = seen.get(name);
      if (prev !== undefined) {
        throw new ConfigError(file, lineNo, `section [${name}] appears twice (first at line ${prev})`);
      }
      seen.set(name, lineNo);
      current = { name, line: lineNo, entries: [] };
      sections.push(current);
      continue;
    }

    const words = splitWords(logical, file, lineNo);
    if (words.length === 0) continue; // only a comment after blanks
    if (!current) {
      throw new ConfigError(file, lineNo, `expected a section header like [Global] before "${words[0]}"`);
    }
    const key = words[0];
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(key)) {
      throw new ConfigError(file, lineNo, `expected a key name, got ${JSON.stringify(key)}`);
    }
    current.entries.push({ key, values: words.slice(1), line: lineNo });
  }
  return { file, sections };
}
