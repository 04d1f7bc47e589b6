// A process-local fan-out from the dialsync subscriber to the agents' open
// Server-Sent Events streams (app/api/agent-events/route.ts).

export type AgentEvent =
  | { kind: "user"; userId: string; tables: string[] }
  | { kind: "queue"; change: "entered" | "left" | "updated"; userId: string; openClaims: number; pendingRequirements: number }
  | { kind: "resync"; reason: string };

type Listener = (ev: AgentEvent) => void;

const g = globalThis as typeof globalThis & { __agentListeners?: Set<Listener> };
const listeners: Set<Listener> = (g.__agentListeners ??= new Set<Listener>());

/** onAgentEvent registers a listener and returns the function that removes it. */
export function onAgentEvent(l: Listener): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

export function emitAgentEvent(ev: AgentEvent): void {
  for (const l of listeners) {
    try {
      l(ev);
    } catch (err) {
      // One broken stream must not stop the others.
      console.error("agent-events: listener failed", err);
    }
  }
}
