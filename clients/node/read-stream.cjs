// Reads the escalation stream from Node.js with nothing but the repository's .proto files,
// to show the API is language-neutral. Usage:
//   node clients/node/read-stream.cjs HOST:PORT TOKEN COUNT
// Prints COUNT events (heartbeats left out) as JSON lines, then exits. Timestamps are
// printed as RFC 3339 strings, as in the protobuf JSON mapping (and the HTTP gateway).
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [target, token, count] = process.argv.slice(2);
const protos = path.join(__dirname, "..", "..", "protos");
const definition = protoLoader.loadSync(path.join(protos, "resolutionflow/v1/escalation.proto"), {
  includeDirs: [protos],
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
});
const v1 = grpc.loadPackageDefinition(definition).resolutionflow.v1;
const client = new v1.EscalationService(target, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${token}`);

// google.protobuf.Timestamp as the protobuf JSON mapping prints it: UTC, "Z", and 0, 3, 6
// or 9 fractional digits (e.g. 2026-11-29T21:43:33.120Z).
function rfc3339(ts) {
  const base = new Date(Number(ts.seconds || 0) * 1000).toISOString().slice(0, 19);
  const nanos = Number(ts.nanos || 0);
  if (nanos === 0) return `${base}Z`;
  const digits = nanos % 1e6 === 0 ? 3 : nanos % 1e3 === 0 ? 6 : 9;
  return `${base}.${String(nanos).padStart(9, "0").slice(0, digits)}Z`;
}

// The loaded type of a field: names are relative to our package unless fully qualified.
function typeOf(name) {
  return definition[`resolutionflow.v1.${name}`] || definition[name];
}

// Replaces every Timestamp field of a decoded message, found from the message's own type
// description (so there is no field list to keep up to date), by its RFC 3339 string.
function withTimestamps(value, type) {
  if (!type || !type.type || !type.type.field || value === null || typeof value !== "object") {
    return value;
  }
  for (const field of type.type.field) {
    if (!field.typeName || !(field.name in value)) continue;
    const timestamp = field.typeName.replace(/^\./, "") === "google.protobuf.Timestamp";
    const convert = (v) => (timestamp ? rfc3339(v) : withTimestamps(v, typeOf(field.typeName)));
    const v = value[field.name];
    value[field.name] = Array.isArray(v) ? v.map(convert) : convert(v);
  }
  return value;
}

let seen = 0;
const call = client.StreamEscalations({ afterSequence: "0" }, metadata);
call.on("data", (event) => {
  if (event.type === "EVENT_TYPE_HEARTBEAT") return;
  process.stdout.write(JSON.stringify(withTimestamps(event, typeOf("HandoffEvent"))) + "\n");
  seen += 1;
  if (seen >= Number(count)) {
    call.cancel();
    client.close();
  }
});
call.on("error", (error) => {
  if (error.code === grpc.status.CANCELLED && seen >= Number(count)) return;
  process.stderr.write(`stream failed: ${error.message}\n`);
  process.exitCode = 1;
});
