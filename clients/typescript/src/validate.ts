// A validator for the subset of JSON Schema (draft 2020-12) that
// schemas/*.schema.json use. scripts/gen-types.mjs refuses schemas with other
// type-shaping keywords; here unknown keywords (e.g. "format", which draft
// 2020-12 treats as an annotation by default) are ignored.

type Schema = { [keyword: string]: unknown };

/**
 * validate returns the ways value breaks schema, each prefixed with a JSON
 * pointer to the offending member; [] means valid. root resolves "#/$defs/…"
 * references. Members the schema does not name are accepted: the notice
 * format only ever adds fields within a major version.
 */
export function validate(schema: unknown, value: unknown, root: unknown = schema, path = ""): string[] {
  const s = schema as Schema;
  const at = path || "/";
  if (typeof s.$ref === "string") {
    const target = resolve(root, s.$ref);
    if (target === undefined) return [`${at}: unresolvable $ref ${s.$ref}`];
    return validate(target, value, root, path);
  }
  if ("const" in s && value !== s.const) return [`${at}: want ${JSON.stringify(s.const)}`];
  if (Array.isArray(s.enum) && !s.enum.includes(value)) return [`${at}: want one of ${JSON.stringify(s.enum)}`];
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
    if (!types.some((t) => hasType(value, t))) return [`${at}: want ${types.join(" or ")}, got ${typeName(value)}`];
  }

  const errs: string[] = [];
  if (typeof value === "number") {
    if (typeof s.minimum === "number" && value < s.minimum) errs.push(`${at}: below minimum ${s.minimum}`);
    if (typeof s.maximum === "number" && value > s.maximum) errs.push(`${at}: above maximum ${s.maximum}`);
  }
  if (typeof value === "string") {
    // minLength counts code points, not UTF-16 units.
    if (typeof s.minLength === "number" && [...value].length < s.minLength) errs.push(`${at}: shorter than ${s.minLength}`);
    if (typeof s.pattern === "string" && !new RegExp(s.pattern, "u").test(value)) errs.push(`${at}: does not match ${s.pattern}`);
  }
  if (Array.isArray(value) && s.items !== undefined) {
    value.forEach((v, i) => errs.push(...validate(s.items, v, root, `${path}/${i}`)));
  }
  if (isObject(value)) {
    for (const k of (s.required as string[] | undefined) ?? []) {
      if (!(k in value)) errs.push(`${path}/${k}: missing`);
    }
    const props = (s.properties ?? {}) as Record<string, unknown>;
    for (const [k, sub] of Object.entries(props)) {
      if (k in value) errs.push(...validate(sub, value[k], root, `${path}/${k}`));
    }
  }
  return errs;
}

function resolve(root: unknown, ref: string): unknown {
  if (!ref.startsWith("#/")) return undefined;
  let cur: unknown = root;
  for (const part of ref.slice(2).split("/")) {
    if (!isObject(cur)) return undefined;
    cur = cur[part.replaceAll("~1", "/").replaceAll("~0", "~")];
  }
  return cur;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function hasType(v: unknown, t: string): boolean {
  switch (t) {
    case "object":
      return isObject(v);
    case "array":
      return Array.isArray(v);
    case "string":
      return typeof v === "string";
    case "integer":
      return Number.isInteger(v);
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "boolean":
      return typeof v === "boolean";
    case "null":
      return v === null;
    default:
      return false;
  }
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}
