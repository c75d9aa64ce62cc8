import assert from "node:assert/strict";
import { test } from "node:test";
import { FrameTooLargeError, JsonStreamFramer } from "./framing.js";

test("framer: rpc.py style back-to-back objects split at their closing braces", () => {
  const f = new JsonStreamFramer();
  assert.deepEqual(f.push(Buffer.from('{"a":1}{"b":{"c":[1,2]}}')), ['{"a":1}', '{"b":{"c":[1,2]}}']);
});

test("framer: newline-terminated objects and whitespace between them", () => {
  const f = new JsonStreamFramer();
  assert.deepEqual(f.push(Buffer.from('{"a":1}\n  \n{"b":2}\n')), ['{"a":1}', '{"b":2}']);
});

test("framer: braces and escaped quotes inside strings do not end a frame", () => {
  const f = new JsonStreamFramer();
  const text = '{"s":"}{ \\" ]"}';
  assert.deepEqual(f.push(Buffer.from(text)), [text]);
  assert.equal(JSON.parse(text).s, '}{ " ]');
});

test("framer: a value split over many chunks (one byte at a time) is put back together", () => {
  const f = new JsonStreamFramer();
  const text = '{"method":"x","params":{"k":"v\\\\"}}';
  const out: string[] = [];
  for (const b of Buffer.from(text + text)) out.push(...f.push(Buffer.from([b])));
  assert.deepEqual(out, [text, text]);
});

test("framer: a garbage line is one frame (so the server can answer -32700), then framing resumes", () => {
  const f = new JsonStreamFramer();
  assert.deepEqual(f.push(Buffer.from('hello } world\n{"a":1}')), ["hello } world\n", '{"a":1}']);
});

test("framer: more than the limit without an end throws FrameTooLargeError", () => {
  const f = new JsonStreamFramer(100);
  f.push(Buffer.from('{"a":"' + "x".repeat(50)));
  assert.throws(() => f.push(Buffer.from("x".repeat(60))), FrameTooLargeError);
});

test("framer: a value that breaks the grammar ends at the next newline as one garbage frame", () => {
  const f = new JsonStreamFramer();
  assert.deepEqual(f.push(Buffer.from('{not json\n{"a":1}')), ["{not json\n", '{"a":1}']);
  assert.deepEqual(f.push(Buffer.from('{"a":tru\n')), ['{"a":tru\n']);
});

test("framer: pretty-printed requests (rpc.py indent=2) with newlines inside are one frame", () => {
  const f = new JsonStreamFramer();
  const text = JSON.stringify(
    { jsonrpc: "2.0", method: "x", id: 1, params: { a: [1, -2.5e3, true, null, "s"] } },
    null,
    2,
  );
  assert.deepEqual(f.push(Buffer.from(text + text)), [text, text]);
});

test("framer: each kind of grammar error is given up at the newline", () => {
  for (const bad of ['{"a" 1}', '{"a":}', "[1 2]", '{"a":1,}x', '{"a":nul}', '{"a":"x"]', "{,}"]) {
    const f = new JsonStreamFramer();
    assert.deepEqual(f.push(Buffer.from(bad + "\n")), [bad + "\n"], bad);
  }
});
