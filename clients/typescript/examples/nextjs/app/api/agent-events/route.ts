// GET /api/agent-events?users=42,43 : a Server-Sent Events stream of changes
// for the agent's screen. Optional `users` limits user and queue events to
// the users the agent has open; resync events always pass.
import type { NextRequest } from "next/server";

import { onAgentEvent, type AgentEvent } from "../../../lib/agent-events";

// Streams need the Node.js runtime (the subscriber lives there) and must
// never be cached or prerendered.
export const runtime = "nodejs";
export const dynamic = "force-dynamic";

export async function GET(req: NextRequest): Promise<Response> {
  const only = req.nextUrl.searchParams.get("users");
  const users = only ? new Set(only.split(",").filter(Boolean)) : undefined;
  const wanted = (ev: AgentEvent) => ev.kind === "resync" || !users || users.has(ev.userId);

  const enc = new TextEncoder();
  let cleanup = () => {};
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const write = (chunk: string) => {
        try {
          controller.enqueue(enc.encode(chunk));
        } catch {
          cleanup(); // the stream is already closed
        }
      };
      const off = onAgentEvent((ev) => {
        if (wanted(ev)) write(`event: ${ev.kind}\ndata: ${JSON.stringify(ev)}\n\n`);
      });
      // A comment line every 15 s keeps proxies from closing an idle stream.
      const ping = setInterval(() => write(": ping\n\n"), 15_000);
      cleanup = () => {
        clearInterval(ping);
        off();
      };
      req.signal.addEventListener("abort", () => {
        cleanup();
        try {
          controller.close();
        } catch {
          // already closed
        }
      });
      write("retry: 2000\n\n"); // the browser's EventSource reconnects after 2 s
    },
    cancel() {
      cleanup();
    },
  });

  return new Response(body, {
    headers: {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache, no-transform",
      Connection: "keep-alive",
      "X-Accel-Buffering": "no", // nginx: do not buffer the stream
    },
  });
}
