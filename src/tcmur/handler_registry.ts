/**
 * The set of TCMUR handlers: `file` and `ram` built in, more loaded from a handler directory the way
 * tcmu-runner dlopens `handler_<name>.so`: here every `handler_<name>.js` (or .mjs) module there is
 * imported and must export a handler (`export const handler` or a default export) named <name>.
 */
import { readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { log } from "../util/log.js";
import { parseCfgstring } from "./cfgstring.js";
import { fileHandler } from "./file_handler.js";
import { DEFAULT_BLOCK_SIZE, type TcmurDeviceBackend, type TcmurHandler } from "./handler.js";
import { ramHandler } from "./ram_handler.js";
import { qcowHandler } from "./qcow/qcow_handler.js";
import { rbdHandler } from "./rbd/rbd_handler.js";

const MODULE_NAME = /^handler_([A-Za-z0-9_][A-Za-z0-9_.-]*)\.m?js$/;

/** The TCMUR line, as the config model gives it. */
export interface TcmurDeviceConfig {
  readonly minor: number;
  readonly name: string;
  readonly cfgstring: string;
  /**
   * Words after the cfgstring on the TCMUR line, each `key=value` (`size=256M bs=512`): the same
   * options as after `?` in the cfgstring, for configs that prefer words. A word wins over `?`.
   */
  readonly extra?: readonly string[];
}

export class TcmurHandlerRegistry {
  private readonly handlers = new Map<string, TcmurHandler>();

  /** A registry with the built-in `file`, `ram`, `qcow` and `rbd` handlers. */
  constructor(builtins: readonly TcmurHandler[] = [fileHandler, ramHandler, qcowHandler, rbdHandler]) {
    for (const h of builtins) this.register(h);
  }

  register(handler: TcmurHandler): void {
    checkHandlerShape(handler, `handler "${String(handler?.name)}"`);
    if (this.handlers.has(handler.name))
      throw new Error(`TCMUR handler "${handler.name}" is already registered`);
    this.handlers.set(handler.name, handler);
  }

  get(name: string): TcmurHandler | undefined {
    return this.handlers.get(name);
  }

  names(): string[] {
    return [...this.handlers.keys()];
  }

  /**
   * Import every handler_<name>.js in `dir` and register it. A module that fails to load or does not
   * export a valid handler is an error naming the file (the operator asked for that directory).
   */
  async loadDirectory(dir: string): Promise<string[]> {
    let entries: string[];
    try {
      entries = (await readdir(dir)).sort();
    } catch (err) {
      throw new Error(`TCMUR handler directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
    const loaded: string[] = [];
    for (const entry of entries) {
      const m = MODULE_NAME.exec(entry);
      if (!m) continue;
      const file = resolve(join(dir, entry));
      let mod: Record<string, unknown>;
      try {
        mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
      } catch (err) {
        throw new Error(`TCMUR handler module ${file}: failed to load: ${(err as Error).message}`, {
          cause: err,
        });
      }
      const handler = (mod.handler ?? mod.default) as TcmurHandler | undefined;
      checkHandlerShape(handler, `TCMUR handler module ${file}`);
      if (handler.name !== m[1]) {
        throw new Error(
          `TCMUR handler module ${file}: exports handler "${handler.name}", expected "${m[1]}"`,
        );
      }
      this.register(handler);
      loaded.push(handler.name);
      log.info({ module: "tcmur", handler: handler.name, file }, "loaded TCMUR handler");
    }
    return loaded;
  }

  /**
   * Open the device of one TCMUR line with the handler its cfgstring names. Size and block size come
   * from the cfgstring options (`?size=256M&bs=512`), else the handler's defaults (4096, 1 GiB).
   */
  async open(dev: TcmurDeviceConfig): Promise<{ backend: TcmurDeviceBackend; handler: TcmurHandler }> {
    const where = `TCMUR ${dev.minor} ${dev.name}`;
    if (!Number.isInteger(dev.minor) || dev.minor < 0 || dev.minor > 255) {
      throw new Error(`${where}: minor must be 0..255`);
    }
    let cfg;
    try {
      for (const w of dev.extra ?? []) {
        if (!/^[A-Za-z0-9_]+=[^&?\s]*$/.test(w))
          throw new Error(`option "${w}" after the cfgstring is not key=value`);
      }
      const words = (dev.extra ?? []).join("&");
      const full =
        words === "" ? dev.cfgstring : `${dev.cfgstring}${dev.cfgstring.includes("?") ? "&" : "?"}${words}`;
      cfg = parseCfgstring(full);
    } catch (err) {
      throw new Error(`${where}: ${(err as Error).message}`, { cause: err });
    }
    const handler = this.handlers.get(cfg.handler);
    if (!handler) {
      throw new Error(`${where}: no TCMUR handler "${cfg.handler}" (have: ${this.names().join(", ")})`);
    }
    const backend = await handler.open({
      minor: dev.minor,
      name: dev.name,
      cfg,
      sizeBytes: cfg.sizeBytes,
      blockSize: cfg.blockSize ?? DEFAULT_BLOCK_SIZE,
    });
    checkBackend(backend, `${where}: handler "${handler.name}"`);
    return { backend, handler };
  }
}

function checkHandlerShape(h: unknown, where: string): asserts h is TcmurHandler {
  const o = h as Partial<TcmurHandler> | undefined;
  if (typeof o !== "object" || o === null) throw new Error(`${where}: does not export a handler object`);
  if (typeof o.name !== "string" || !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(o.name)) {
    throw new Error(`${where}: handler has no valid "name" string`);
  }
  if (typeof o.open !== "function") throw new Error(`${where}: handler "${o.name}" has no open() function`);
}

function checkBackend(b: TcmurDeviceBackend, where: string): void {
  for (const fn of ["readv", "writev", "flush", "close"] as const) {
    if (typeof b?.[fn] !== "function") throw new Error(`${where}: opened device has no ${fn}() function`);
  }
  if (!Number.isSafeInteger(b.blockSize) || b.blockSize < 512 || b.blockSize & (b.blockSize - 1)) {
    throw new Error(`${where}: opened device reports block size ${b.blockSize}`);
  }
  if (!Number.isSafeInteger(b.sizeBytes) || b.sizeBytes <= 0 || b.sizeBytes % b.blockSize !== 0) {
    throw new Error(`${where}: opened device reports size ${b.sizeBytes}, not whole blocks`);
  }
}
