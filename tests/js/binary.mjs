// Binary events and acks with the official socket.io-client, for tests/protocol/test_binary.py.
// Usage: node tests/js/binary.mjs '<json scenario>'; prints one JSON report on stdout.
// Scenario: {url, transports, timeoutMs}. One Manager (one Engine.IO connection) carries two
// namespaces: the test server's `/binary`, whose events take binary, and `/`, whose events refuse it.
// Binary values are reported as {binary: [bytes...]}.
import { Manager } from "socket.io-client";

const scenario = JSON.parse(process.argv[2]);
const report = { transport: null, echo: null, blob: null, answered: null, refused: null, ping: null };

const plain = (value) => {
  if (value instanceof ArrayBuffer) return { binary: Array.from(new Uint8Array(value)) };
  if (ArrayBuffer.isView(value)) {
    return { binary: Array.from(new Uint8Array(value.buffer, value.byteOffset, value.byteLength)) };
  }
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, plain(item)]));
  }
  return value;
};

const manager = new Manager(scenario.url, { reconnection: false, transports: scenario.transports });
let finished = false;
const finish = (code) => {
  if (finished) return;
  finished = true;
  report.transport = manager.engine ? manager.engine.transport.name : null;
  manager.engine?.close();
  // Exit once the report is written: stdout is a pipe, and exiting at once can cut it at 64 KiB.
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(code));
};
const watchdog = setTimeout(() => {
  report.timedOut = true;
  finish(2);
}, scenario.timeoutMs ?? 8000);

const connected = (socket) =>
  new Promise((resolve, reject) => {
    socket.on("connect", resolve);
    socket.on("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
  });
const call = (socket, event, ...args) => new Promise((resolve) => socket.emit(event, ...args, resolve));

async function run() {
  const binary = manager.socket("/binary");
  const root = manager.socket("/");
  await Promise.all([connected(binary), connected(root)]);

  // Client -> server: a binary event with an ack (answered with binary: a binary ack).
  report.echo = plain(await call(binary, "echo", new Uint8Array([1, 2, 3]),
    { nested: Buffer.from([4, 5]), text: "x" }, new Uint8Array(0).buffer));

  // Server -> client: a binary event with an ack, answered by the client with binary.
  const answered = new Promise((resolve) => binary.on("answered", resolve));
  binary.on("blob", (payload, ack) => {
    report.blob = plain(payload);
    ack(new Uint8Array([9, 8, 7]), { inner: new Uint8Array([6]) });
  });
  await call(binary, "ask");
  report.answered = plain(await answered);

  // Nexus's own events refuse binary content with an ack; the connection goes on.
  report.refused = plain(await call(root, "send_message", { roomId: "lobby", content: new Uint8Array([1]) }));
  report.ping = plain(await call(root, "ping"));
}

run().then(
  () => {
    clearTimeout(watchdog);
    finish(0);
  },
  (err) => {
    report.error = String(err);
    clearTimeout(watchdog);
    finish(1);
  },
);
