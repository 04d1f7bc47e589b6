import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { DecodeError, decode, IdWindow, noticeSchemas, queueKind, UnsupportedVersionError, type Notice } from "../src/index.js";
import { validate } from "../src/validate.js";
import { fixtures, root } from "./helpers.js";

const run = promisify(execFile);
const enc = new TextEncoder();

test("decodes every fixture the Go encoder produced", async () => {
  const fx = await fixtures();
  const types = new Set<string>();
  for (const f of fx) {
    const n = decode(enc.encode(f.data));
    assert.equal(n.known, true, f.id);
    assert.equal(n.id, f.id);
    assert.equal(n.specversion, "1.0");
    assert.equal(n.dataschema, "urn:dialsync:notice:v1");
    assert.equal(n.time, "2024-05-06T07:08:09Z");
    types.add(n.type);
  }
  assert.deepEqual([...types].sort(), Object.keys(noticeSchemas).sort(), "fixtures cover every known type");
});

test("decoded notices narrow by type and carry the Go values", async () => {
  const byId = new Map((await fixtures()).map((f) => [f.id, decode(f.data)] as const));
  const get = (id: string): Notice => byId.get(id) ?? assert.fail(`no fixture ${id}`);

  const u = get("0-1-4711/user.changed/42");
  assert.ok(u.known && u.type === "dialsync.user.changed");
  assert.equal(u.subject, "42");
  assert.deepEqual(u.data, {
    user_id: 42,
    tables: ["claim_requirements", "claims"],
    operations: ["update"],
    columns: ["status", "updated_at"],
    source: { file: "mysql-bin.000042", pos: 123456, gtid: "0-1-4711", txn: "0-1-4711" },
  });

  const v = get("mysql-bin.000042:999/user.changed/7");
  assert.ok(v.known && v.type === "dialsync.user.changed");
  assert.deepEqual([v.data.tables, v.data.operations, v.data.columns], [[], [], []], "nil slices arrive as []");
  assert.deepEqual(v.data.values, { note: null, score: 3, status: "active" });
  assert.equal(v.data.source.gtid, undefined);

  const big = get("0-1-4711/user.changed/9007199254740993");
  assert.ok(big.known && big.type === "dialsync.user.changed");
  assert.equal(big.subject, "9007199254740993", "subject keeps a user id above 2^53 exact");
  assert.deepEqual(big.data.columns, ['a"b<c>&d', "naïve"], "escaped names decode");

  const q = get("0-1-4711/queue.entered/42");
  assert.ok(q.known && q.type === "dialsync.queue.entered");
  assert.equal(queueKind(q), "entered");
  assert.equal(q.data.oldest_pending_at, "2024-05-01T10:00:00.123456789Z");
  assert.equal(q.data.open_claims, 2);
  assert.equal(q.data.pending_requirements, 3);

  const left = get("mysql-bin.000042:999/queue.left/43");
  assert.ok(left.known && left.type === "dialsync.queue.left");
  assert.equal(queueKind(left), "left");
  assert.equal(left.data.oldest_pending_at, null);
  assert.equal(queueKind(get("0-1-4711/queue.updated/42")), "updated");

  const rc = get("reconcile/2024-05-06T07:00:00.123Z");
  assert.ok(rc.known && rc.type === "dialsync.reconcile.completed");
  assert.equal(rc.subject, undefined);
  assert.equal(queueKind(rc), undefined);
  assert.deepEqual(
    [rc.data.reason, rc.data.users, rc.data.queued, rc.data.entered + rc.data.left + rc.data.updated],
    ["periodic", 50000, 1234, 6],
  );

  const dl = get("0-1-4711/deadletter/claims/3");
  assert.ok(dl.known && dl.type === "dialsync.deadletter");
  assert.deepEqual([dl.data.table, dl.data.operation, dl.data.seq, dl.data.user_ids], ["claims", "update", 3, [42, 43]]);
  const dl2 = get("odd_bin.000001:4/deadletter/user_addresses/0");
  assert.ok(dl2.known && dl2.type === "dialsync.deadletter");
  assert.equal(dl2.data.user_ids, undefined);
  assert.equal(dl2.data.source.txn, "odd bin.000001:4", "the id is sanitized, the txn is not");
});

// base is a valid user.changed notice to break in the tests below.
function base(): Record<string, unknown> {
  return {
    specversion: "1.0",
    id: "tx/user.changed/1",
    source: "dialsync/main",
    type: "dialsync.user.changed",
    subject: "1",
    time: "2024-05-06T07:08:09Z",
    datacontenttype: "application/json",
    dataschema: "urn:dialsync:notice:v1",
    data: { user_id: 1, tables: ["users"], operations: ["update"], columns: ["email"], source: { txn: "tx" } },
  };
}

test("unknown fields are kept, in the envelope and in data", () => {
  const e = base();
  e.traceparent = "00-abc";
  (e.data as Record<string, unknown>).reason = "new in v1.x";
  const n = decode(JSON.stringify(e)) as Notice & { traceparent?: string };
  assert.ok(n.known && n.type === "dialsync.user.changed");
  assert.equal(n.traceparent, "00-abc");
  assert.equal((n.data as unknown as Record<string, unknown>).reason, "new in v1.x");
});

test("unknown types come back with known: false, not as errors", () => {
  const e = { ...base(), type: "dialsync.claim.archived", data: { anything: [1, 2] } };
  const n = decode(JSON.stringify(e));
  assert.equal(n.known, false);
  assert.equal(n.type, "dialsync.claim.archived");
  assert.deepEqual(n.data, { anything: [1, 2] });
});

test("a data schema of another major version is refused", () => {
  for (const ds of ["urn:dialsync:notice:v2", "urn:other:v1", 7]) {
    assert.throws(() => decode(JSON.stringify({ ...base(), dataschema: ds })), UnsupportedVersionError, String(ds));
  }
  // Unknown types of another version are refused too: v2 may reuse names.
  assert.throws(() => decode(JSON.stringify({ ...base(), type: "x", dataschema: "urn:dialsync:notice:v2" })), UnsupportedVersionError);
  assert.equal(decode(JSON.stringify({ ...base(), type: "x", dataschema: "urn:dialsync:notice:v1.3" })).known, false);
});

test("broken envelopes and data are DecodeErrors that say what is wrong", () => {
  const cases: [string, string | Uint8Array, RegExp][] = [
    ["not JSON", "{", /decode/],
    ["not an object", "[1]", /not a JSON object/],
    ["specversion 0.3", JSON.stringify({ ...base(), specversion: "0.3" }), /specversion/],
    ["no id", JSON.stringify({ ...base(), id: "" }), /missing id/],
    ["no type", JSON.stringify({ ...base(), type: undefined }), /missing type/],
    ["user_id as string", JSON.stringify({ ...base(), data: { ...(base().data as object), user_id: "1" } }), /\/data\/user_id: want integer/],
    ["operation unknown", JSON.stringify({ ...base(), data: { ...(base().data as object), operations: ["upsert"] } }), /\/data\/operations\/0/],
    ["no source.txn", JSON.stringify({ ...base(), data: { ...(base().data as object), source: {} } }), /\/data\/source\/txn: missing/],
    ["id with a space", JSON.stringify({ ...base(), id: "a b" }), /\/id: does not match/],
    ["user notice without subject", JSON.stringify({ ...base(), subject: undefined }), /\/subject: missing/],
  ];
  for (const [name, input, re] of cases) {
    assert.throws(() => decode(input), (err: unknown) => err instanceof DecodeError && re.test(err.message), name);
  }
});

test("validate follows $ref, type unions and bounds", () => {
  const schema = {
    type: "object",
    required: ["a"],
    properties: { a: { $ref: "#/$defs/n" }, b: { type: ["string", "null"] } },
    $defs: { n: { type: "integer", minimum: 1, maximum: 3 } },
  };
  assert.deepEqual(validate(schema, { a: 2, b: null, extra: true }), []);
  assert.deepEqual(validate(schema, { a: 4, b: 1 }), ["/a: above maximum 3", "/b: want string or null, got number"]);
  assert.deepEqual(validate(schema, { a: 1.5 }), ["/a: want integer, got number"]);
  assert.deepEqual(validate(schema, {}), ["/a: missing"]);
});

test("IdWindow remembers the most recent ids, up to its size", () => {
  const w = new IdWindow(2);
  w.add("a");
  w.add("b");
  assert.ok(w.has("a")); // a is now the most recent, so b is evicted next
  w.add("c");
  assert.deepEqual([w.has("a"), w.has("b"), w.has("c"), w.size], [true, false, true, 2]);
  const off = new IdWindow(0);
  off.add("a");
  assert.equal(off.has("a"), false);
});

test("src/types.gen.ts is current with schemas/", async () => {
  // Fails with a message naming `npm run gen` when a schema changed without regenerating.
  await run(process.execPath, [fileURLToPath(new URL("scripts/gen-types.mjs", root)), "--check"]);
});

test("testdata/notices.jsonl is what the Go encoder produces today", async (t) => {
  const repo = fileURLToPath(new URL("../../", root));
  let out: string;
  try {
    ({ stdout: out } = await run("go", ["run", "./clients/typescript/scripts/genfixtures"], { cwd: repo, maxBuffer: 1 << 20 }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      t.skip("go is not installed");
      return;
    }
    throw err;
  }
  const committed = await readFile(new URL("testdata/notices.jsonl", root), "utf8");
  assert.equal(out, committed, "regenerate with `npm run fixtures`");
});
