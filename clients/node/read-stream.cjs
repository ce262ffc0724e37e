// Reads the escalation stream from Node.js with nothing but the repository's .proto files,
// to show the API is language-neutral. Usage:
//   node clients/node/read-stream.cjs HOST:PORT TOKEN COUNT
// Prints COUNT events (heartbeats left out) as JSON lines, then exits.
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

let seen = 0;
const call = client.StreamEscalations({ afterSequence: "0" }, metadata);
call.on("data", (event) => {
  if (event.type === "EVENT_TYPE_HEARTBEAT") return;
  process.stdout.write(JSON.stringify(event) + "\n");
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
