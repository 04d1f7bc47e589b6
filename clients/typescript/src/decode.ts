import { noticeSchemas, type KnownNotice, type NoticeBase, type NoticeType } from "./types.gen.js";
import { validate } from "./validate.js";

/**
 * A notice of a type this package does not know (dialsync added a type after
 * this package was built). Consumers must ignore what they do not understand;
 * the type and data are passed through as they came.
 */
export interface UnknownNotice extends NoticeBase {
  known: false;
}

/**
 * A decoded notice. Narrow on `known` first, then on `type`:
 *
 *   if (!n.known) return;            // newer type: ignore
 *   switch (n.type) { case "dialsync.user.changed": n.data.user_id … }
 */
export type Notice = KnownNotice | UnknownNotice;

/** The data schema major version this package reads. */
export const SCHEMA_MAJOR = 1;
export const DATA_SCHEMA = "urn:dialsync:notice:v1";

/** decode failed: not JSON, not a CloudEvents 1.x envelope, or a known type whose shape breaks its schema. */
export class DecodeError extends Error {
  override name = "DecodeError";
}

/**
 * The notice names a data schema major version this package does not know: a
 * breaking change in the format. Upgrade the subscriber instead of misreading
 * the data (dialsync publishes both versions, on different subjects, during a
 * transition).
 */
export class UnsupportedVersionError extends DecodeError {
  override name = "UnsupportedVersionError";
  constructor(readonly dataschema: string) {
    super(`notice: unsupported data schema ${JSON.stringify(dataschema)} (this package reads v${SCHEMA_MAJOR})`);
  }
}

const known = new Set<string>(Object.keys(noticeSchemas));
const schemaRe = /^urn:dialsync:notice:v(\d+)(?:\.\d+)*$/;
const utf8 = new TextDecoder(); // not fatal: like Go's encoding/json, invalid UTF-8 becomes U+FFFD

/** isKnownType reports whether this package has types for a notice type. */
export function isKnownType(type: string): type is NoticeType {
  return known.has(type);
}

/**
 * decode parses one notice as dialsync publishes it (CloudEvents 1.0,
 * structured JSON). It checks the envelope (specversion 1.x, id, type, data
 * schema major version 1) and, for the types it knows, validates the whole
 * event against schemas/<type>.schema.json. Fields it does not know are kept
 * on the returned object; types it does not know come back with
 * `known: false` rather than as an error.
 *
 * Integers are JavaScript numbers: user ids above 2^53 lose precision. For
 * user and queue notices `subject` carries the user id as an exact decimal
 * string.
 *
 * @throws DecodeError, or its subclass UnsupportedVersionError
 */
export function decode(data: Uint8Array | string): Notice {
  let v: unknown;
  try {
    v = JSON.parse(typeof data === "string" ? data : utf8.decode(data));
  } catch (err) {
    throw new DecodeError(`notice: decode: ${(err as Error).message}`, { cause: err });
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new DecodeError("notice: decode: not a JSON object");
  }
  const e = v as Record<string, unknown>;
  if (typeof e.specversion !== "string" || !e.specversion.startsWith("1.")) {
    throw new DecodeError(`notice: decode: specversion ${JSON.stringify(e.specversion)} is not CloudEvents 1.x`);
  }
  if (typeof e.id !== "string" || e.id === "") throw new DecodeError("notice: decode: missing id");
  if (typeof e.type !== "string" || e.type === "") throw new DecodeError("notice: decode: missing type");
  // The version is checked before the type: a new major version may reuse a
  // type name with another meaning.
  if (e.dataschema !== undefined) {
    const m = typeof e.dataschema === "string" ? schemaRe.exec(e.dataschema) : null;
    if (!m || Number(m[1]) !== SCHEMA_MAJOR) throw new UnsupportedVersionError(String(e.dataschema));
  }
  if (!isKnownType(e.type)) {
    return { ...e, known: false } as UnknownNotice;
  }
  const errs = validate(noticeSchemas[e.type], e);
  if (errs.length > 0) {
    const more = errs.length > 3 ? ` (and ${errs.length - 3} more)` : "";
    throw new DecodeError(`notice: decode ${e.type} ${e.id}: ${errs.slice(0, 3).join("; ")}${more}`);
  }
  return { ...e, known: true } as KnownNotice;
}

/** queueKind returns "entered", "left" or "updated" for a queue notice, else undefined. */
export function queueKind(n: Notice): "entered" | "left" | "updated" | undefined {
  if (!n.known) return undefined;
  switch (n.type) {
    case "dialsync.queue.entered":
      return "entered";
    case "dialsync.queue.left":
      return "left";
    case "dialsync.queue.updated":
      return "updated";
    default:
      return undefined;
  }
}
