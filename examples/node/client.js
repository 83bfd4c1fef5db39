#!/usr/bin/env node
// A Node.js client of the backup server, straight from protos/ (no generated code):
// lists the policies, starts one and prints what each computer made of the command.
//
//   node client.js [--server HOST:PORT] POLICY
//
// Exit code as backupctl's: 0 when every targeted computer received the start,
// 3 when some did not, 1 on any error (one line: the gRPC code and message).

"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");

function usage() {
  console.error("usage: node client.js [--server HOST:PORT] POLICY");
  process.exit(1);
}

function parseArgs(argv) {
  const args = { server: process.env.BACKUP_SERVER || "127.0.0.1:50051", policy: "" };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--server") {
      args.server = argv[++i];
    } else if (!args.policy && !argv[i].startsWith("-")) {
      args.policy = argv[i];
    } else {
      usage();
    }
  }
  if (!args.policy || !args.server) usage();
  return args;
}

function policyService(server) {
  const definition = protoLoader.loadSync("backup/v1/policy_service.proto", {
    includeDirs: [PROTOS],
    keepCase: false, // lowerCamelCase, as the proto JSON form
    enums: String,
    longs: String,
    defaults: true,
  });
  const { backup } = grpc.loadPackageDefinition(definition);
  return new backup.v1.PolicyService(server, grpc.credentials.createInsecure());
}

// The callback API as a promise; `seconds` bounds the call (none: as long as it runs).
function call(client, method, request, seconds) {
  const options = seconds ? { deadline: Date.now() + seconds * 1000 } : {};
  return new Promise((resolve, reject) => {
    client[method](request, options, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

function seconds(duration) {
  if (!duration) return "";
  return `${(Number(duration.seconds) + duration.nanos / 1e9).toFixed(3)} s`;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const client = policyService(args.server);
  try {
    const { policies } = await call(client, "ListPolicies", { pageSize: 1000 }, 30);
    console.log(`${policies.length} policies:`);
    for (const policy of policies) {
      const groups = policy.protectionGroupIds.join(", ") || "-";
      console.log(`  ${policy.id}\t${policy.name}\t${policy.computers.length} computers\tgroups: ${groups}`);
    }

    // StartPolicy answers once every computer has its delivery: no deadline of ours.
    const session = await call(client, "StartPolicy", { policyId: args.policy });
    console.log(`session ${session.id}: ${session.state}`);
    for (const result of session.computerResults) {
      const { name, address } = result.computer;
      console.log(`  ${name}\t${address}\t${result.delivery}\t${seconds(result.latency)}\t${result.detail}`);
    }
    const stats = session.statistics;
    console.log(
      `total ${stats.total}, received ${stats.received}, not received ${stats.notReceived}, ` +
        `skipped ${stats.skipped}, rejected ${stats.rejected}, cancelled ${stats.cancelled}`,
    );
    const missed = stats.notReceived + stats.rejected + stats.cancelled + stats.pending;
    process.exitCode = missed === 0 ? 0 : 3;
  } catch (error) {
    console.error(`client.js: ${grpc.status[error.code]}: ${error.details}`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

main();
