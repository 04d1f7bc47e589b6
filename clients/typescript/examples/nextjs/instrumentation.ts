// Next.js calls register() once when a server instance starts
// (https://nextjs.org/docs/app/guides/instrumentation), in each runtime it
// runs. The NATS client needs Node's sockets, so only the Node.js runtime
// starts the subscriber; the dynamic import keeps it out of the edge bundle.
export async function register(): Promise<void> {
  if (process.env.NEXT_RUNTIME !== "nodejs") return;
  const { startDialsync } = await import("./lib/dialsync");
  await startDialsync();
}
