import { pino, destination, type Logger } from "pino";

/**
 * The process logger, written to stderr. Level from USERTGT_LOG
 * (trace|debug|info|warn|error|silent), default info. Modules take a child:
 * `log.child({ module: "iscsi" })`.
 */
export const log: Logger = pino(
  { level: process.env.USERTGT_LOG ?? "info", base: undefined },
  destination(2), // synchronous: logs are rare events, never per I/O
);

export type { Logger };
