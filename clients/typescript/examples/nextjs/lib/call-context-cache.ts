// An in-process LRU of users' call contexts (what an agent's screen shows
// about the person being called), in front of the dialler's Redis/PostgreSQL.
// dialsync deletes the shared Redis keys itself; this per-instance copy is
// what user.changed notices must invalidate.

export interface CallContext {
  userId: string;
  name: string;
  openClaims: number;
  loadedAt: Date;
}

class LRU<V> {
  readonly #max: number;
  readonly #items = new Map<string, V>(); // insertion order: oldest first

  constructor(max: number) {
    this.#max = max;
  }

  get(key: string): V | undefined {
    const v = this.#items.get(key);
    if (v !== undefined) {
      this.#items.delete(key);
      this.#items.set(key, v);
    }
    return v;
  }

  set(key: string, v: V): void {
    this.#items.delete(key);
    this.#items.set(key, v);
    if (this.#items.size > this.#max) {
      this.#items.delete(this.#items.keys().next().value as string);
    }
  }

  delete(key: string): boolean {
    return this.#items.delete(key);
  }

  clear(): void {
    this.#items.clear();
  }
}

// One cache per server process. Kept on globalThis because Next.js dev mode
// re-evaluates modules on reload, which would otherwise split the cache the
// subscriber invalidates from the one route handlers read.
const g = globalThis as typeof globalThis & { __callContexts?: LRU<CallContext> };
export const callContexts: LRU<CallContext> = (g.__callContexts ??= new LRU<CallContext>(5_000));

/**
 * getCallContext reads through the cache. Keys are the user id as a decimal
 * string (the notice subject), exact even above 2^53.
 */
export async function getCallContext(userId: string, load: (userId: string) => Promise<CallContext>): Promise<CallContext> {
  const hit = callContexts.get(userId);
  if (hit) return hit;
  const ctx = await load(userId);
  callContexts.set(userId, ctx);
  return ctx;
}
