/** A config problem, located: the message reads `file:line: what was expected`. */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    /** 1-based line number; 0 when the problem is about the file as a whole. */
    readonly line: number,
    readonly detail: string,
  ) {
    super(line > 0 ? `${file}:${line}: ${detail}` : `${file}: ${detail}`);
    this.name = "ConfigError";
  }
}

/** Something accepted but ignored or adjusted, reported once at start-up. */
export interface ConfigNotice {
  readonly file: string;
  readonly line: number;
  readonly message: string;
}

export function formatNotice(n: ConfigNotice): string {
  return `${n.file}:${n.line}: ${n.message}`;
}
