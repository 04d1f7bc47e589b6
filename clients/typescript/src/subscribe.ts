import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";

import { decode, type Notice } from "./decode.js";
import { IdWindow } from "./lru.js";

/** Where subscribe reports decode and handler errors. `console` fits. */
export interface Logger {
  error(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
}

/** Options of subscribe. Every field is optional; the defaults match the Go helper (notice.SubscribeOptions). */
export interface SubscribeOptions {
  /** JetStream stream to read. Default "DIALSYNC". */
  stream?: string;
  /**
   * Subject filter. Default "dialsync.>". One subject only: NATS 2.9 servers
   * have no multi-subject consumer filters.
   */
  subject?: string;
  /**
   * Name of a durable consumer with explicit acks: it resumes where it
   * stopped after a restart, and a notice whose handler throws is redelivered
   * after retryDelayMs. Instances using the same name share the work.
   * Unset: an ephemeral ordered consumer, so every instance sees every notice
   * from now (or from startTime) in stream order.
   */
  durable?: string;
  /**
   * Deliver notices stored at or after this time (replay). Unset: only
   * notices published after subscribe resolves. For a durable it applies only
   * when the consumer is first created.
   */
  startTime?: Date;
  /** How many recent notice ids are remembered to skip repeats (bounded LRU). Default 10000; <= 0 disables. */
  dedupeWindow?: number;
  /** Durable only: delay before a notice whose handler threw is redelivered. Default 1000 ms. */
  retryDelayMs?: number;
  /** Durable only, on creation: how long the server waits for an ack before redelivering. Default 30000 ms. */
  ackWaitMs?: number;
  /** How many messages the client pulls ahead. Default 100. */
  maxMessages?: number;
  /** Aborting it stops the subscription, like stop(). */
  signal?: AbortSignal;
  /** Default: console. */
  logger?: Logger;
}

/** What the handler learns besides the notice. */
export interface DeliveryContext {
  /** Aborted when the subscription is stopping: long handlers should give up. */
  signal: AbortSignal;
  /** Stream sequence of the message. */
  seq: number;
  /** The server delivered it before (a handler failure or an ack timeout). */
  redelivered: boolean;
}

/**
 * Called once per notice, one at a time, in stream order. Notices of types
 * this package does not know arrive with `known: false`: ignore them. A
 * thrown error (or rejected promise) makes a durable consumer redeliver the
 * notice later; an ordered consumer logs it and moves on.
 */
export type Handler = (notice: Notice, ctx: DeliveryContext) => void | Promise<void>;

/** A running subscription. */
export interface Subscription {
  /** The consumer's name on the server (the durable name, or the ordered consumer's generated one). */
  readonly consumer: string;
  /**
   * Stops delivery and waits until the subscription is closed. The handler
   * call in progress (if any) sees its signal aborted and is awaited. A
   * durable returns prefetched, unhandled notices to the server at once so
   * the next instance gets them without waiting for the ack timeout.
   */
  stop(): Promise<void>;
  /**
   * Resolves once the subscription has ended: with undefined after stop() or
   * an abort, with an Error when it ended by itself (connection closed,
   * consumer or stream deleted). Never rejects.
   */
  readonly closed: Promise<Error | undefined>;
}

/**
 * returnDelayMs is the delay of the naks that hand notices back on stop:
 * tiny, but not a plain -NAK. Against nats-server 2.9.10 plain naks for
 * several outstanding notices at once lost one of them (until the ack wait)
 * in our tests; delayed naks, which the server handles through its ack
 * timer, came back complete and in order.
 */
const returnDelayMs = 1;

const defaults = {
  stream: "DIALSYNC",
  subject: "dialsync.>",
  dedupeWindow: 10_000,
  retryDelayMs: 1_000,
  ackWaitMs: 30_000,
  maxMessages: 100,
};

/**
 * subscribe hands every notice of a dialsync stream to handler, one at a
 * time, until stopped. It resolves once the consumer exists (so notices
 * published afterwards are seen) and rejects when the stream or consumer
 * cannot be set up.
 *
 * Delivery is at least once; notices repeated with the same id are skipped
 * (and acked). Messages that are not valid notices are logged and, for a
 * durable, terminated (never redelivered).
 */
export async function subscribe(js: JetStreamClient, options: SubscribeOptions, handler: Handler): Promise<Subscription> {
  const stream = options.stream || defaults.stream;
  const subject = options.subject || defaults.subject;
  const durable = options.durable || "";
  const retryDelayMs = positive(options.retryDelayMs, defaults.retryDelayMs);
  const log: Logger = options.logger ?? console;
  options.signal?.throwIfAborted();

  let jsm: JetStreamManager;
  let consumer: Consumer;
  try {
    jsm = await js.jetstreamManager();
    await jsm.streams.info(stream);
    consumer = durable
      ? await durableConsumer(js, jsm, stream, subject, durable, options)
      : await js.consumers.get(stream, {
          filter_subjects: subject, // a string, so the client sends filter_subject (2.9-compatible)
          ...(options.startTime
            ? { opt_start_time: options.startTime.toISOString() }
            : { deliver_policy: DeliverPolicy.New }),
        });
  } catch (err) {
    throw new Error(`notice: subscribe to ${subject} on ${stream}: ${(err as Error).message}`, { cause: err });
  }
  const name = (await consumer.info(true)).name;

  const messages: ConsumerMessages = await consumer.consume({
    max_messages: positive(options.maxMessages, defaults.maxMessages),
    // A deleted durable or stream is the end, as in the Go helper; the
    // ordered consumer recreates itself (that is its job).
    abort_on_missing_resource: durable !== "",
  });

  const toReturn: JsMsg[] = []; // durable: notices to hand back on stop
  const seen = new IdWindow(options.dedupeWindow ?? defaults.dedupeWindow);
  const stopping = new AbortController();
  const fields = (m: JsMsg, extra: Record<string, unknown> = {}) => ({ stream, consumer: name, seq: m.seq, ...extra });

  // settle acks, naks and terms; a failure only means the server redelivers
  // after the ack wait, which dedupe or the handler absorbs.
  const settle = (m: JsMsg, what: string, f: () => void) => {
    if (!durable) return;
    try {
      f();
    } catch (err) {
      log.warn(`notice: ${what} failed`, fields(m, { err }));
    }
  };

  const handle = async (m: JsMsg) => {
    let n: Notice;
    try {
      n = decode(m.data);
    } catch (err) {
      log.error("notice: skipping undecodable message", fields(m, { msg_subject: m.subject, err }));
      // No reason text: nats-server 2.9 does not parse "+TERM <reason>" (a
      // 2.10 addition) and would redeliver the message after the ack wait.
      settle(m, "term", () => m.term());
      return;
    }
    if (seen.has(n.id)) {
      settle(m, "ack", () => m.ack());
      return;
    }
    try {
      await handler(n, { signal: stopping.signal, seq: m.seq, redelivered: m.redelivered });
    } catch (err) {
      if (stopping.signal.aborted && durable) {
        // Shutting down: handed back in stop(), for whoever runs next.
        toReturn.push(m);
        return;
      }
      log.error("notice: handler failed", fields(m, { id: n.id, type: n.type, err }));
      if (durable) {
        settle(m, "nak", () => m.nak(retryDelayMs));
        return;
      }
    }
    seen.add(n.id);
    settle(m, "ack", () => m.ack());
  };

  const loop = (async (): Promise<Error | undefined> => {
    try {
      for await (const m of messages) {
        if (stopping.signal.aborted) {
          // Prefetched but not handled: handed back in stop().
          if (durable) toReturn.push(m);
          continue;
        }
        await handle(m);
      }
    } catch (err) {
      if (!stopping.signal.aborted) return asError(err);
    }
    if (stopping.signal.aborted) return undefined;
    const why = await messages.closed();
    return why instanceof Error ? why : new Error(`notice: subscription to ${subject} on ${stream} ended (connection closed?)`);
  })();

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      stopping.abort();
      if (durable) await drainPull(messages, log);
      await messages.close();
      await loop;
      if (!durable) {
        // The server would drop the ephemeral consumer after its inactivity
        // threshold (5 min); deleting it now keeps dev reloads and restarts
        // from piling them up.
        await consumer.delete().catch((err: unknown) => log.debug("notice: delete ordered consumer", { err }));
      } else if (toReturn.length > 0) {
        // Hand back what was prefetched or interrupted, so the next instance
        // gets it at once rather than after the ack wait. First a consumer
        // info request: nats-server 2.9 drops pull requests whose inbox lost
        // interest when it reports num_waiting, and our drained request
        // must be gone before the naks. Otherwise the server tries the
        // redelivery on that dead request and, in 2.9.10, loses the notice
        // from its redelivery queue (it comes back only after the ack wait)
        // and re-sends the last one as new: seen in the test "stopping
        // during a slow handler".
        await jsm.consumers.info(stream, durable).catch((err: unknown) => log.debug("notice: consumer info on stop", { err }));
        for (const m of toReturn) settle(m, "nak", () => m.nak(returnDelayMs));
        log.debug("notice: returned unhandled notices on stop", { stream, consumer: name, count: toReturn.length });
        // The naks are published without replies. A request on the same
        // connection is answered only after the server has processed
        // everything sent before it, so when this returns the naks are in.
        // (The Go helper flushes for the same reason: notice/subscribe.go.)
        await jsm.getAccountInfo().catch((err: unknown) => log.debug("notice: flush on stop", { err }));
      }
    })();
    return stopped;
  };

  const onAbort = () => void stop();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort(); // aborted while we were setting up
  const closed = loop.then(async (err) => {
    options.signal?.removeEventListener("abort", onAbort);
    if (err === undefined) await stopped; // resolve only once stop() has finished
    return err;
  });
  return { consumer: name, stop, closed };
}

/**
 * durableConsumer binds to the durable if it exists, else creates it. Binding
 * first (rather than create-or-update) keeps a restart with another startTime
 * from failing: the server refuses to change a deliver policy.
 */
async function durableConsumer(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  durable: string,
  options: SubscribeOptions,
): Promise<Consumer> {
  let exists = true;
  try {
    const ci = await jsm.consumers.info(stream, durable);
    if (ci.config.filter_subject !== subject) {
      throw new Error(`durable ${durable} exists with filter ${ci.config.filter_subject ?? "(none)"}, not ${subject}`);
    }
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
    exists = false;
  }
  if (!exists) {
    await jsm.consumers.add(stream, {
      durable_name: durable,
      filter_subject: subject,
      ack_policy: AckPolicy.Explicit,
      ack_wait: positive(options.ackWaitMs, defaults.ackWaitMs) * 1_000_000, // nanoseconds
      max_deliver: -1,
      ...(options.startTime
        ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: options.startTime.toISOString() }
        : { deliver_policy: DeliverPolicy.New }),
    });
  }
  return js.consumers.get(stream, durable);
}

/**
 * drainPull unsubscribes the durable's pull inbox the way a core drain does:
 * UNSUB, then a flush round trip during which messages the server sent
 * before it saw the UNSUB are still queued to the iterator (and handed back
 * by the loop). Closing outright drops such in-flight messages; the server
 * would count them delivered and redeliver them only after the ack wait
 * (seen as a flaky "stopping during a slow handler" test under load). The
 * Go helper drains for the same reason (notice/subscribe.go).
 *
 * ConsumerMessages does not expose drain; its implementation
 * (PullConsumerMessagesImpl, @nats-io/jetstream lib/consumer.d.ts) has the
 * subscription as a public field. Without it this falls back to close().
 */
async function drainPull(messages: ConsumerMessages, log: Logger): Promise<void> {
  const sub = (messages as Partial<{ sub: { drain(): Promise<void>; isClosed(): boolean } }>).sub;
  if (!sub || typeof sub.drain !== "function" || sub.isClosed()) return;
  await sub.drain().catch((err: unknown) => log.debug("notice: drain on stop", { err }));
}

function positive(v: number | undefined, def: number): number {
  return v !== undefined && v > 0 ? v : def;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
