// Starts the dialsync subscriber once per server instance and turns notices
// into cache invalidations and pushes to agents' screens.
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { queueKind, subscribe, type Notice, type Subscription } from "@dialsync/client";

import { emitAgentEvent } from "./agent-events";
import { callContexts } from "./call-context-cache";

interface Running {
  nc: NatsConnection;
  sub: Subscription;
}

const g = globalThis as typeof globalThis & { __dialsync?: Promise<Running> };

/**
 * startDialsync connects and subscribes, once per process (register() may run
 * again after a dev reload; the promise on globalThis makes that a no-op).
 *
 * It uses an ordered (ephemeral) consumer, not a durable one: every instance
 * must see every notice to invalidate its own in-process cache, and a fresh
 * process starts with an empty cache, so it needs nothing from before it
 * started. Work that must happen once per notice across the fleet (e.g.
 * writing to a database) belongs in a durable consumer shared by name.
 */
export function startDialsync(): Promise<Running> {
  g.__dialsync ??= (async () => {
    const nc = await connect({
      servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222",
      name: `dialler-${process.pid}`,
      maxReconnectAttempts: -1, // keep trying: the ordered consumer resumes where it was
    });
    const sub = await subscribe(
      jetstream(nc),
      {
        stream: process.env.DIALSYNC_STREAM ?? "DIALSYNC",
        subject: `${process.env.DIALSYNC_SUBJECT_PREFIX ?? "dialsync"}.>`,
      },
      onNotice,
    );
    void sub.closed.then((err) => {
      if (err) console.error("dialsync: subscription ended; call contexts may go stale until restart", err);
    });
    const shutdown = async () => {
      await sub.stop();
      await nc.drain();
    };
    process.once("SIGTERM", () => void shutdown());
    return { nc, sub };
  })();
  return g.__dialsync;
}

function onNotice(n: Notice): void {
  if (!n.known) return; // a newer dialsync type: ignore, as the format requires
  switch (n.type) {
    case "dialsync.user.changed":
      // subject is the user id as an exact decimal string.
      callContexts.delete(n.subject);
      emitAgentEvent({ kind: "user", userId: n.subject, tables: n.data.tables });
      return;
    case "dialsync.queue.entered":
    case "dialsync.queue.left":
    case "dialsync.queue.updated":
      emitAgentEvent({
        kind: "queue",
        change: queueKind(n) ?? "updated",
        userId: n.subject,
        openClaims: n.data.open_claims,
        pendingRequirements: n.data.pending_requirements,
      });
      return;
    case "dialsync.reconcile.completed": {
      const corrections = n.data.entered + n.data.left + n.data.updated;
      if (corrections > 0) {
        // The queue was corrected wholesale: drop everything and let screens refetch.
        callContexts.clear();
        emitAgentEvent({ kind: "resync", reason: `reconcile ${n.data.reason} corrected ${corrections} rows` });
      }
      return;
    }
    case "dialsync.deadletter":
      // Operators act on these (dialsync's metrics alert); agents need nothing.
      return;
  }
}
