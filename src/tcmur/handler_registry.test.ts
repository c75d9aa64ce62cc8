import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCfgstring } from "./cfgstring.js";
import { TcmurHandlerRegistry } from "./handler_registry.js";

test("cfgstring: handler is the first segment, options after ?", () => {
  const f = parseCfgstring("/file//tmp/tcmur_file00");
  assert.equal(f.handler, "file");
  assert.equal(f.path, "/tmp/tcmur_file00");
  assert.equal(f.sizeBytes, undefined);
  const r = parseCfgstring("/ram/tmp/tcmur_ram00?size=256M&bs=512&ro=1");
  assert.equal(r.handler, "ram");
  assert.equal(r.path, "tmp/tcmur_ram00");
  assert.equal(r.sizeBytes, 256 * 1024 * 1024);
  assert.equal(r.blockSize, 512);
  assert.equal(r.readOnly, true);
  assert.throws(() => parseCfgstring("file//tmp/x"), /must start with/);
  assert.throws(() => parseCfgstring("/file//tmp/x?bs=1000"), /power of two/);
  assert.throws(() => parseCfgstring("/file//tmp/x?size=12Q"), /not a size/);
  assert.throws(() => parseCfgstring("/ram/x?size=5000&bs=4096"), /not a multiple/);
});

test("registry: options as words after the cfgstring, as on a TCMUR line", async () => {
  const reg = new TcmurHandlerRegistry();
  const { backend } = await reg.open({
    minor: 1,
    name: "r",
    cfgstring: "/ram/x?size=1M",
    extra: ["bs=512", "size=2M"],
  });
  assert.equal(backend.blockSize, 512);
  assert.equal(backend.sizeBytes, 2 * 1024 * 1024);
  await backend.close();
  await assert.rejects(
    reg.open({ minor: 1, name: "r", cfgstring: "/ram/x", extra: ["big"] }),
    /TCMUR 1 r: option "big"/,
  );
});

test("registry: unknown handler and bad minor are clear errors", async () => {
  const reg = new TcmurHandlerRegistry();
  assert.deepEqual(reg.names().sort(), ["file", "qcow", "ram", "rbd"]);
  await assert.rejects(reg.open({ minor: 0, name: "x", cfgstring: "/glfs/a" }), /no TCMUR handler "glfs"/);
  await assert.rejects(reg.open({ minor: 256, name: "x", cfgstring: "/ram/a" }), /minor must be 0\.\.255/);
});

test("loader: handler_<name>.js from a directory is imported and serves I/O", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tcmur-handlers-"));
  try {
    // A tiny handler whose device returns the byte 0x5a everywhere and counts writes.
    await writeFile(
      join(dir, "handler_const.js"),
      `export const handler = { name: "const", productName: "TCMU const", async open(req) {
         let writes = 0;
         return { sizeBytes: req.sizeBytes ?? 65536, blockSize: req.blockSize, readOnly: false,
           volatileWriteCache: false,
           async readv(iov) { for (const b of iov) b.fill(0x5a); },
           async writev() { writes++; }, async flush() {}, async close() {},
           get writes() { return writes; } };
       } };\n`,
    );
    await writeFile(join(dir, "README.txt"), "not a handler\n");
    const reg = new TcmurHandlerRegistry();
    assert.deepEqual(await reg.loadDirectory(dir), ["const"]);
    const { backend, handler } = await reg.open({ minor: 7, name: "c0", cfgstring: "/const/x?bs=512" });
    assert.equal(handler.productName, "TCMU const");
    assert.equal(backend.blockSize, 512);
    const b = Buffer.alloc(1024);
    await backend.readv([b], 0);
    assert.ok(b.every((x) => x === 0x5a));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("loader: a module without a valid handler is refused, naming the file", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tcmur-handlers-"));
  try {
    await writeFile(join(dir, "handler_bad.js"), `export const handler = { name: "bad" };\n`);
    await assert.rejects(
      new TcmurHandlerRegistry().loadDirectory(dir),
      /handler_bad\.js.*no open\(\) function/,
    );
    await rm(join(dir, "handler_bad.js"));
    await writeFile(join(dir, "handler_wrong.js"), `export default { name: "other", async open() {} };\n`);
    await assert.rejects(
      new TcmurHandlerRegistry().loadDirectory(dir),
      /exports handler "other", expected "wrong"/,
    );
    await rm(join(dir, "handler_wrong.js"));
    await writeFile(join(dir, "handler_syntax.js"), `export const = ;\n`);
    await assert.rejects(new TcmurHandlerRegistry().loadDirectory(dir), /handler_syntax\.js: failed to load/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
