// Drives a petrel WebSocket listener with the mqtt npm package under node.
//
// Usage: node ws_client.js URL [CAFILE]. For MQTT 3.1.1 and 5.0, subscribes, publishes at
// QoS 0, 1 and 2 and expects every message back; exits 0 when all arrive, 1 otherwise.
"use strict";
const fs = require("fs");
const mqtt = require("mqtt");

const url = process.argv[2];
const ca = process.argv[3] ? fs.readFileSync(process.argv[3]) : undefined;

function run(protocolVersion) {
  return new Promise((resolve, reject) => {
    const name = `node-${protocolVersion}`;
    const client = mqtt.connect(url, {
      clientId: name,
      protocolVersion,
      ca,
      reconnectPeriod: 0,
      connectTimeout: 10000,
    });
    const got = [];
    const timer = setTimeout(() => {
      client.end(true);
      reject(new Error(`${name}: got ${JSON.stringify(got)}`));
    }, 10000);
    client.on("error", (e) => {
      clearTimeout(timer);
      client.end(true);
      reject(e);
    });
    client.on("message", (topic, payload, packet) => {
      got.push([topic, payload.toString(), packet.qos]);
      if (got.length === 3) {
        clearTimeout(timer);
        got.sort();
        const want = [0, 1, 2].map((q) => [`${name}/${q}`, `m${q}`, q]);
        client.end(false, () => {
          if (JSON.stringify(got) === JSON.stringify(want)) resolve();
          else reject(new Error(`${name}: got ${JSON.stringify(got)}`));
        });
      }
    });
    client.on("connect", () => {
      client.subscribe(`${name}/#`, { qos: 2 }, (err) => {
        if (err) return reject(err);
        for (const qos of [0, 1, 2]) client.publish(`${name}/${qos}`, `m${qos}`, { qos });
      });
    });
  });
}

(async () => {
  try {
    await run(4);
    await run(5);
    console.log("ok");
  } catch (e) {
    console.error(String(e));
    process.exit(1);
  }
})();
