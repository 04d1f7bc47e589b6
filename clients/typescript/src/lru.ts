/**
 * A bounded set of recently seen ids; the least recently seen is evicted
 * first. A Map iterates in insertion order, so re-inserting on a hit keeps the
 * most recent at the end and the oldest first.
 */
export class IdWindow {
  readonly #max: number;
  readonly #ids = new Map<string, true>();

  /** max <= 0 disables the window: it then contains nothing. */
  constructor(max: number) {
    this.#max = max;
  }

  get size(): number {
    return this.#ids.size;
  }

  has(id: string): boolean {
    if (!this.#ids.has(id)) return false;
    this.#ids.delete(id);
    this.#ids.set(id, true);
    return true;
  }

  add(id: string): void {
    if (this.#max <= 0) return;
    this.#ids.delete(id);
    this.#ids.set(id, true);
    if (this.#ids.size > this.#max) {
      const oldest = this.#ids.keys().next().value as string;
      this.#ids.delete(oldest);
    }
  }
}
