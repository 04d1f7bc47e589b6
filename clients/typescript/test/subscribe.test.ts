// subscribe against a real, private nats-server 2.9 with the DIALSYNC stream,
// fed byte-for-byte with notices from dialsync's Go encoder.
import assert from "node:assert/strict";
import { test } from "node:test";

import { subscribe, type DeliveryContext, type Notice, type SubscribeOptions } from "../src/index.js";
import { fixtures, MemLogger, sleep, startNATS, until, type Env, type Fixture } from "./helpers.js";

const fx = await fixtures();
const ids = (fs: Fixture[]) => fs.map((f) => f.id);

/** A handler that records what it receives. */
function recorder() {
  const got: { n: Notice; ctx: DeliveryContext }[] = [];
  return {
    got,
    ids: () => got.map((g) => g.n.id),
    handler: (n: Notice, ctx: DeliveryContext) => {
      got.push({ n, ctx });
    },
  };
}

async function publishAll(env: Env, fs: Fixture[]) {
  for (const f of fs) await env.publish(f);
}

test("ordered: notices published after subscribe arrive once, in order, decoded", async (t) => {
  const env = await startNATS(t);
  await env.publish(fx[0]!); // before: not delivered
  const r = recorder();
  const log = new MemLogger();
  const sub = await subscribe(env.js, { logger: log }, r.handler);
  t.after(() => sub.stop());

  const after = fx.slice(1);
  await publishAll(env, after);
  await until("every notice published after start", () => r.got.length >= after.length);
  await sleep(100); // nothing extra trickles in
  assert.deepEqual(r.ids(), ids(after));
  assert.ok(r.got.every((g) => g.n.known && !g.ctx.redelivered));
  assert.deepEqual(
    r.got.map((g) => g.ctx.seq),
    after.map((_, i) => i + 2),
    "stream sequence passed to the handler",
  );
  assert.equal(log.lines.filter((l) => l.level === "error").length, 0);
});

test("ordered: the subject filter selects one kind of notice", async (t) => {
  const env = await startNATS(t);
  const r = recorder();
  const sub = await subscribe(env.js, { subject: "dialsync.queue.>", logger: new MemLogger() }, r.handler);
  t.after(() => sub.stop());
  await publishAll(env, fx);
  const queue = fx.filter((f) => f.subject.startsWith("dialsync.queue."));
  await until("queue notices", () => r.got.length >= queue.length);
  await sleep(100);
  assert.deepEqual(r.ids(), ids(queue));
});

test("ordered: startTime replays notices stored since then, then follows new ones", async (t) => {
  const env = await startNATS(t);
  await publishAll(env, fx.slice(0, 2));
  await sleep(50);
  const from = new Date();
  await sleep(50);
  await publishAll(env, fx.slice(2, 4));

  const r = recorder();
  const sub = await subscribe(env.js, { startTime: from, logger: new MemLogger() }, r.handler);
  t.after(() => sub.stop());
  await until("replayed notices", () => r.got.length >= 2);
  await env.publish(fx[4]!);
  await until("the live notice", () => r.got.length >= 3);
  await sleep(100);
  assert.deepEqual(r.ids(), ids(fx.slice(2, 5)));
});

test("ordered: a handler error is logged and not redelivered", async (t) => {
  const env = await startNATS(t);
  const log = new MemLogger();
  let calls = 0;
  const seen: string[] = [];
  const sub = await subscribe(env.js, { logger: log }, (n) => {
    calls++;
    seen.push(n.id);
    if (n.id === fx[0]!.id) throw new Error("boom");
  });
  t.after(() => sub.stop());
  await publishAll(env, fx.slice(0, 2));
  await until("both notices", () => seen.length >= 2);
  await sleep(150);
  assert.deepEqual(seen, ids(fx.slice(0, 2)));
  assert.equal(calls, 2);
  assert.equal(log.count("error", "notice: handler failed"), 1);
});

test("the same event id under another Nats-Msg-Id is handled once", async (t) => {
  for (const durable of ["", "dedupe"]) {
    await t.test(durable ? "durable" : "ordered", async (t) => {
      const env = await startNATS(t);
      const r = recorder();
      const sub = await subscribe(env.js, { durable, logger: new MemLogger() }, r.handler);
      t.after(() => sub.stop());

      // dialsync re-publishing after the duplicate window, as far as the stream can tell.
      await env.publish(fx[0]!);
      await env.publish(fx[0]!, `${fx[0]!.id}#again`);
      await env.publish(fx[1]!);
      const si = await env.jsm.streams.info("DIALSYNC");
      assert.equal(si.state.messages, 3, "the stream stored the repeat");

      await until("the next notice", () => r.got.length >= 2);
      await sleep(150);
      assert.deepEqual(r.ids(), ids(fx.slice(0, 2)));
      if (durable) {
        // The repeat was acked, not left to time out.
        const ci = await env.jsm.consumers.info("DIALSYNC", durable);
        assert.equal(ci.num_ack_pending, 0);
        assert.equal(ci.num_pending, 0);
        assert.equal(ci.delivered.stream_seq, 3);
      }
    });
  }
});

test("durable: resumes after a restart without redelivering acked notices", async (t) => {
  const env = await startNATS(t);
  const opts: SubscribeOptions = { durable: "svc", logger: new MemLogger() };

  const first = recorder();
  const sub1 = await subscribe(env.js, opts, first.handler);
  await publishAll(env, fx.slice(0, 3));
  await until("first run's notices", () => first.got.length >= 3);
  await sub1.stop();
  assert.equal(await sub1.closed, undefined, "a stopped subscription closes cleanly");

  // Published while no instance runs; the old pull request must not swallow them.
  await publishAll(env, fx.slice(3, 5));

  // A new connection, as after a process restart.
  const js2 = await env.connect();
  const second = recorder();
  const started = Date.now();
  const sub2 = await subscribe(js2, opts, second.handler);
  t.after(() => sub2.stop());
  assert.equal(sub2.consumer, "svc");
  await until("notices published while stopped", () => second.got.length >= 2, 5_000);
  assert.ok(Date.now() - started < 5_000, "delivered promptly, not after the 30 s ack wait");
  await sleep(200);
  assert.deepEqual(first.ids(), ids(fx.slice(0, 3)));
  assert.deepEqual(second.ids(), ids(fx.slice(3, 5)), "nothing acked comes back");
});

test("durable: a handler error redelivers the notice after retryDelayMs", async (t) => {
  const env = await startNATS(t);
  const log = new MemLogger();
  const r = recorder();
  let failedAt = 0;
  const sub = await subscribe(env.js, { durable: "retry", retryDelayMs: 200, logger: log }, (n, ctx) => {
    r.handler(n, ctx);
    if (n.id === fx[1]!.id && !ctx.redelivered) {
      failedAt = Date.now();
      throw new Error("database down");
    }
  });
  t.after(() => sub.stop());
  await publishAll(env, fx.slice(0, 3));
  await until("the redelivery", () => r.got.length >= 4);
  const redelivery = r.got[3]!;
  assert.deepEqual(r.ids(), [...ids(fx.slice(0, 3)), fx[1]!.id], "the failed notice comes back after the others");
  assert.equal(redelivery.ctx.redelivered, true);
  assert.ok(Date.now() - failedAt >= 180, "not before the retry delay");
  assert.equal(log.count("error", "notice: handler failed"), 1);

  await sleep(300);
  assert.equal(r.got.length, 4, "handled once it succeeded");
  const ci = await env.jsm.consumers.info("DIALSYNC", "retry");
  assert.equal(ci.num_ack_pending, 0);
});

test("durable: an undecodable message is terminated, not redelivered", async (t) => {
  const env = await startNATS(t);
  const log = new MemLogger();
  const r = recorder();
  const sub = await subscribe(env.js, { durable: "junk", retryDelayMs: 50, ackWaitMs: 500, logger: log }, r.handler);
  t.after(() => sub.stop());
  await env.js.publish("dialsync.user.1", "not json", { msgID: "junk-1" });
  await env.publish(fx[0]!);
  await until("the good notice", () => r.got.length >= 1);
  await sleep(800); // longer than the ack wait: a lost term would show as a redelivery
  assert.deepEqual(r.ids(), [fx[0]!.id]);
  assert.equal(log.count("error", "notice: skipping undecodable message"), 1);
  const ci = await env.jsm.consumers.info("DIALSYNC", "junk");
  assert.equal(ci.num_ack_pending, 0);
  assert.equal(ci.num_redelivered, 0);
});

test("durable: stopping during a slow handler returns its notice at once", async (t) => {
  const env = await startNATS(t);
  const opts: SubscribeOptions = { durable: "slow", logger: new MemLogger() };
  let entered = false;
  const sub1 = await subscribe(env.js, opts, async (_n, ctx) => {
    entered = true;
    // A slow call that honours the signal, as a fetch() with signal would.
    await new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(new Error("aborted"))));
  });
  await publishAll(env, fx.slice(0, 3));
  await until("the handler to start", () => entered);
  await sub1.stop();

  const r = recorder();
  const sub2 = await subscribe(await env.connect(), opts, r.handler);
  t.after(() => sub2.stop());
  // All three come back well before the 30 s ack wait: the one in the handler
  // was nak'ed, the prefetched ones returned.
  await until("the returned notices", () => r.got.length >= 3, 5_000).catch(async (err: Error) => {
    const ci = await env.jsm.consumers.info("DIALSYNC", "slow");
    throw new Error(`${err.message}; got ${JSON.stringify(r.got.map((g) => g.ctx.seq))}, consumer ${JSON.stringify({ ack_pending: ci.num_ack_pending, pending: ci.num_pending, redelivered: ci.num_redelivered, delivered: ci.delivered, waiting: ci.num_waiting })}`);
  });
  await sleep(200);
  assert.deepEqual(r.ids(), ids(fx.slice(0, 3)), "each once, in order");
  assert.ok(r.got.every((g) => g.ctx.redelivered));
});

test("stop() and AbortSignal end the subscription cleanly", async (t) => {
  const env = await startNATS(t);
  const r = recorder();
  const sub = await subscribe(env.js, { logger: new MemLogger() }, r.handler);
  await env.publish(fx[0]!);
  await until("a notice", () => r.got.length >= 1);
  await Promise.all([sub.stop(), sub.stop()]); // idempotent
  assert.equal(await sub.closed, undefined);
  await env.publish(fx[1]!);
  await sleep(150);
  assert.deepEqual(r.ids(), [fx[0]!.id], "nothing is handled after stop");
  assert.equal((await env.jsm.streams.info("DIALSYNC")).state.consumer_count, 0, "the ordered consumer is deleted");

  const ac = new AbortController();
  const sub2 = await subscribe(env.js, { durable: "aborted", signal: ac.signal, logger: new MemLogger() }, r.handler);
  ac.abort();
  assert.equal(await sub2.closed, undefined);

  const pre = new AbortController();
  pre.abort();
  await assert.rejects(subscribe(env.js, { signal: pre.signal }, r.handler), { name: "AbortError" });
});

test("closed reports an error when the connection goes away", async (t) => {
  const env = await startNATS(t);
  const js = await env.connect();
  const sub = await subscribe(js, { durable: "gone", logger: new MemLogger() }, () => {});
  const nc = (js as unknown as { nc: { close(): Promise<void> } }).nc;
  await nc.close();
  const err = await sub.closed;
  assert.ok(err instanceof Error, `closed resolved with ${String(err)}`);
});

test("subscribe rejects when the stream does not exist", async (t) => {
  const env = await startNATS(t);
  await assert.rejects(subscribe(env.js, { stream: "NOPE" }, () => {}), /notice: subscribe to dialsync\.> on NOPE/);
  // A durable that exists with another filter is refused rather than silently reused.
  const sub = await subscribe(env.js, { durable: "d", subject: "dialsync.user.>", logger: new MemLogger() }, () => {});
  await sub.stop();
  await assert.rejects(subscribe(env.js, { durable: "d", subject: "dialsync.queue.>" }, () => {}), /exists with filter dialsync\.user\.>/);
});
