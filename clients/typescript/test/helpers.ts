// Test helpers: a private nats-server per test, the Go-encoded fixtures, and
// small waiting utilities.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";

import { jetstream, jetstreamManager, StorageType, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";

import type { Logger } from "../src/index.js";

/** One fixture line: a notice exactly as dialsync's Go encoder produced it. */
export interface Fixture {
  subject: string;
  id: string;
  data: string;
}

export const root = new URL("../../", import.meta.url); // the package directory (tests run from dist/test)

export async function fixtures(): Promise<Fixture[]> {
  const text = await readFile(new URL("testdata/notices.jsonl", root), "utf8");
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Fixture);
}

export interface Env {
  url: string;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  /** publish data on subject with Nats-Msg-Id msgID (default the fixture id). */
  publish(f: Fixture, msgID?: string): Promise<void>;
  /** a second connection to the same server (for restart tests). */
  connect(): Promise<JetStreamClient>;
}

const natsServer = process.env.NATS_SERVER ?? "/usr/sbin/nats-server";

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

/**
 * startNATS runs a private nats-server with JetStream in a temporary store
 * directory, creates the DIALSYNC stream on dialsync.> with the default
 * two-minute duplicate window (as dialsync's manage_stream does), and
 * registers cleanup on t.
 */
export async function startNATS(t: TestContext): Promise<Env> {
  const dir = await mkdtemp(join(tmpdir(), "dialsync-ts-"));
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const proc: ChildProcess = spawn(natsServer, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  proc.stderr?.on("data", (b: Buffer) => {
    stderr = (stderr + b.toString()).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const conns: NatsConnection[] = [];
  t.after(async () => {
    await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
    proc.kill("SIGTERM");
    await exited;
    await rm(dir, { recursive: true, force: true });
  });

  const open = async () => {
    const nc = await connect({ servers: url, reconnect: false });
    conns.push(nc);
    return nc;
  };
  let nc: NatsConnection | undefined;
  for (const deadline = Date.now() + 10_000; !nc; ) {
    if (proc.exitCode !== null) throw new Error(`nats-server exited: ${stderr}`);
    try {
      nc = await open();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`nats-server did not start: ${(err as Error).message}\n${stderr}`);
      await sleep(20);
    }
  }
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({
    name: "DIALSYNC",
    subjects: ["dialsync.>"],
    duplicate_window: 2 * 60 * 1e9, // nanoseconds
    storage: StorageType.File,
  });
  const js = jetstream(nc);
  return {
    url,
    nc,
    js,
    jsm,
    publish: async (f, msgID = f.id) => {
      await js.publish(f.subject, f.data, { msgID });
    },
    connect: async () => jetstream(await open()),
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** until polls cond every 10 ms and fails after timeoutMs, naming what it waited for. */
export async function until(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A logger that records what it is told, for assertions, instead of printing. */
export class MemLogger implements Logger {
  readonly lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  error(msg: string, fields?: Record<string, unknown>) {
    this.lines.push({ level: "error", msg, ...(fields ? { fields } : {}) });
  }
  warn(msg: string, fields?: Record<string, unknown>) {
    this.lines.push({ level: "warn", msg, ...(fields ? { fields } : {}) });
  }
  debug(msg: string, fields?: Record<string, unknown>) {
    this.lines.push({ level: "debug", msg, ...(fields ? { fields } : {}) });
  }
  count(level: string, msg: string): number {
    return this.lines.filter((l) => l.level === level && l.msg === msg).length;
  }
}
