#!/usr/bin/env node
// gen-types.mjs writes src/types.gen.ts from the JSON Schemas in ../../schemas
// (the contract dialsync publishes against; notice/schema_test.go checks the Go
// encoder against the same files). The output holds:
//   - one TypeScript interface per data type (UserChanged, QueueChanged,
//     ReconcileCompleted, DeadLetter) and SourcePosition,
//   - one envelope interface per notice type, and their union KnownNotice,
//   - the schemas themselves (without prose), which decode() validates against.
//
//   node scripts/gen-types.mjs          rewrite src/types.gen.ts
//   node scripts/gen-types.mjs --check  exit 1 if the committed file is stale
//
// It understands the subset of JSON Schema the schemas use (type, const, enum,
// required, properties, items, $ref to #/$defs); anything else it meets is an
// error, so a schema change it cannot express fails loudly instead of
// producing a wrong type.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const schemaDir = join(here, "..", "..", "..", "schemas");
const outFile = join(here, "..", "src", "types.gen.ts");

// CloudEvents type -> [data interface, envelope interface]. The three queue
// notices share one data shape; the generator checks that they really do.
const names = {
  "dialsync.user.changed": ["UserChanged", "UserChangedNotice"],
  "dialsync.queue.entered": ["QueueChanged", "QueueEnteredNotice"],
  "dialsync.queue.left": ["QueueChanged", "QueueLeftNotice"],
  "dialsync.queue.updated": ["QueueChanged", "QueueUpdatedNotice"],
  "dialsync.reconcile.completed": ["ReconcileCompleted", "ReconcileCompletedNotice"],
  "dialsync.deadletter": ["DeadLetter", "DeadLetterNotice"],
};
const refNames = { "#/$defs/source": "SourcePosition" };

// Keywords that only document or constrain values (checked at run time by
// src/validate.ts), so they do not change the TypeScript type.
const valueOnly = new Set(["description", "title", "format", "minimum", "maximum", "minLength", "pattern"]);

function fail(msg) {
  throw new Error(`gen-types: ${msg}`);
}

function doc(node, indent) {
  return node.description ? `${indent}/** ${node.description.replaceAll("*/", "* /")} */\n` : "";
}

function tsType(node, where) {
  for (const k of Object.keys(node)) {
    if (!valueOnly.has(k) && !["type", "const", "enum", "required", "properties", "items", "$ref"].includes(k)) {
      fail(`${where}: unsupported keyword ${k}`);
    }
  }
  if (node.$ref) {
    return refNames[node.$ref] ?? fail(`${where}: unknown $ref ${node.$ref}`);
  }
  if ("const" in node) return JSON.stringify(node.const);
  if (node.enum) return node.enum.map((v) => JSON.stringify(v)).join(" | ");
  const types = Array.isArray(node.type) ? node.type : [node.type];
  return types
    .map((t) => {
      switch (t) {
        case "string":
          return "string";
        case "integer":
        case "number":
          return "number";
        case "boolean":
          return "boolean";
        case "null":
          return "null";
        case "array": {
          const item = node.items ? tsType(node.items, `${where}.items`) : "unknown";
          return item.includes(" ") ? `(${item})[]` : `${item}[]`;
        }
        case "object":
          return node.properties ? objectBody(node, where, "") : "Record<string, unknown>";
        default:
          return fail(`${where}: unsupported type ${t}`);
      }
    })
    .join(" | ");
}

function objectBody(node, where, indent) {
  const req = new Set(node.required ?? []);
  let s = "{\n";
  for (const [k, v] of Object.entries(node.properties)) {
    s += doc(v, indent + "  ");
    s += `${indent}  ${k}${req.has(k) ? "" : "?"}: ${tsType(v, `${where}.${k}`)};\n`;
  }
  return s + indent + "}";
}

// strip drops the prose, keeping what validation needs.
function strip(node) {
  if (Array.isArray(node)) return node.map(strip);
  if (node === null || typeof node !== "object") return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (["description", "title", "$schema", "$id"].includes(k)) continue;
    out[k] = k === "properties" || k === "$defs" ? Object.fromEntries(Object.entries(v).map(([n, s]) => [n, strip(s)])) : strip(v);
  }
  return out;
}

export function generate() {
  const files = readdirSync(schemaDir).filter((f) => f.endsWith(".schema.json")).sort();
  const dataDecls = new Map(); // interface name -> declaration
  const envelopes = [];
  const schemas = [];
  let sourceDecl;
  for (const f of files) {
    const schema = JSON.parse(readFileSync(join(schemaDir, f), "utf8"));
    const type = schema.properties?.type?.const ?? fail(`${f}: no properties.type.const`);
    const [dataName, envName] = names[type] ?? fail(`${f}: type ${type} has no TypeScript name (add it to names)`);
    const data = schema.$defs?.data ?? fail(`${f}: no $defs.data`);

    const decl = `export interface ${dataName} ${objectBody(data, `${f}#data`, "")}\n`;
    if (dataDecls.has(dataName) && dataDecls.get(dataName) !== decl) {
      fail(`${f}: ${dataName} differs between schemas that share it`);
    }
    dataDecls.set(dataName, decl);

    // Descriptions of the source object differ slightly (reconcile allows an
    // empty txn); the TypeScript shape must not.
    const src = `export interface SourcePosition ${objectBody({ ...schema.$defs.source, description: undefined }, `${f}#source`, "")}\n`;
    const srcShape = src.replace(/ *\/\*\*.*\*\/\n/g, "");
    if (sourceDecl && sourceDecl.shape !== srcShape) fail(`${f}: SourcePosition differs between schemas`);
    sourceDecl ??= { text: src, shape: srcShape };

    const subjectRequired = schema.required.includes("subject");
    envelopes.push(
      `/** ${schema.description} */\nexport interface ${envName} extends NoticeBase {\n` +
        `  known: true;\n  type: ${JSON.stringify(type)};\n` +
        (subjectRequired ? `  /** the user id, decimal (exact even above 2^53) */\n  subject: string;\n` : "") +
        `  data: ${dataName};\n}\n`,
    );
    schemas.push([type, envName, strip(schema)]);
  }

  let out = "// Code generated by scripts/gen-types.mjs from schemas/*.schema.json. DO NOT EDIT.\n\n";
  out += "/** Where in the source binlog a notice comes from. */\n" + sourceDecl.text + "\n";
  for (const d of dataDecls.values()) out += d + "\n";
  out +=
    "/** The CloudEvents 1.0 envelope fields every notice has. Unknown extra fields are kept on the object. */\n" +
    "export interface NoticeBase {\n" +
    "  /** \"1.0\" */\n  specversion: string;\n" +
    "  /** deterministic; also the Nats-Msg-Id. Dedupe on it. */\n  id: string;\n" +
    "  /** \"dialsync/<pipeline>\" */\n  source: string;\n  type: string;\n  subject?: string;\n" +
    "  /** source commit time, RFC 3339 UTC */\n  time: string;\n" +
    "  /** \"application/json\" */\n  datacontenttype: string;\n" +
    "  /** \"urn:dialsync:notice:v1\" */\n  dataschema: string;\n  data: unknown;\n" +
    "  /** true for the types this package knows, false for newer types (see UnknownNotice) */\n  known: boolean;\n}\n\n";
  out += envelopes.join("\n") + "\n";
  out += `/** Every notice type this version of the package knows. */\nexport type KnownNotice =\n${schemas.map(([, n]) => `  | ${n}`).join("\n")};\n\n`;
  out += `export type NoticeType = KnownNotice["type"];\n\n`;
  out += `/** The JSON Schemas (prose stripped) that decode() validates known notices against. */\n`;
  out += `export const noticeSchemas: Readonly<Record<NoticeType, unknown>> = {\n`;
  for (const [type, , s] of schemas) out += `  ${JSON.stringify(type)}: ${JSON.stringify(s)},\n`;
  out += "};\n";
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = generate();
  if (process.argv.includes("--check")) {
    let cur = "";
    try {
      cur = readFileSync(outFile, "utf8");
    } catch {
      // missing counts as stale
    }
    if (cur !== out) {
      console.error("src/types.gen.ts is stale: run `npm run gen` (node scripts/gen-types.mjs)");
      process.exit(1);
    }
  } else {
    writeFileSync(outFile, out);
  }
}
