/**
 * A TCMUR handler for tests (loaded with `usertgt serve --handler-dir dist/test/support/tcmur_faulty`):
 * the file handler, except that every request fails with EIO while a file `<path>.fail` exists — a backing
 * disk that dies and (when the file goes) comes back, under the test's control. cfgstring `/faulty/<path>`.
 */
import { existsSync } from "node:fs";
import { fileHandler } from "../../../src/tcmur/file_handler.js";
import type { TcmurDeviceBackend, TcmurHandler } from "../../../src/tcmur/handler.js";

function eio(path: string): Error {
  return Object.assign(new Error(`${path}: Input/output error (injected)`), { code: "EIO" });
}

export const handler: TcmurHandler = {
  name: "faulty",
  productName: "TCMU faulty",
  async open(req) {
    const be = await fileHandler.open(req);
    const marker = `${req.cfg.path}.fail`;
    const check = () => {
      if (existsSync(marker)) throw eio(req.cfg.path);
    };
    const wrapped: TcmurDeviceBackend = {
      sizeBytes: be.sizeBytes,
      blockSize: be.blockSize,
      readOnly: be.readOnly,
      volatileWriteCache: be.volatileWriteCache,
      async readv(iov, offset) {
        check();
        return be.readv(iov, offset);
      },
      async writev(iov, offset) {
        check();
        return be.writev(iov, offset);
      },
      async flush() {
        check();
        return be.flush();
      },
      close: () => be.close(),
    };
    return wrapped;
  },
};
