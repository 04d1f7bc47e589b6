// @dialsync/client: typed dialsync notices and a JetStream subscriber for
// dialler services written in TypeScript. The format is described in
// docs/notices.md and schemas/*.schema.json of the dialsync repository.
export * from "./types.gen.js";
export { decode, isKnownType, queueKind, DecodeError, UnsupportedVersionError, DATA_SCHEMA, SCHEMA_MAJOR } from "./decode.js";
export type { Notice, UnknownNotice } from "./decode.js";
export { subscribe } from "./subscribe.js";
export type { DeliveryContext, Handler, Logger, SubscribeOptions, Subscription } from "./subscribe.js";
export { IdWindow } from "./lru.js";
