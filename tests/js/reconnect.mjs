// For tests/live/test_shutdown.py: the official client's view of a graceful shutdown.
// Usage: node tests/js/reconnect.mjs '<json {url, token, timeoutMs}>'
// Prints {"ready": true} once connected, then one JSON report when it has reconnected (or timed out).
import { io } from "socket.io-client";

const { url, token, timeoutMs = 20000 } = JSON.parse(process.argv[2]);
const report = { shutdownNotice: null, disconnectReason: null, reconnected: false, firstId: null, secondId: null };
const socket = io(url, { auth: { token }, transports: ["websocket"], reconnectionDelay: 200, reconnectionDelayMax: 500 });

let finished = false;
const finish = (code) => {
  if (finished) return;
  finished = true;
  socket.disconnect();
  // Exit once the report is written: stdout is a pipe, and exiting at once can cut it at 64 KiB.
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(code));
};
setTimeout(() => {
  report.timedOut = true;
  finish(2);
}, timeoutMs);

socket.on("server_shutdown", (data) => (report.shutdownNotice = data));
socket.on("disconnect", (reason) => (report.disconnectReason ??= reason));
socket.on("connect", () => {
  if (report.firstId === null) {
    report.firstId = socket.id;
    process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  } else {
    report.secondId = socket.id;
    report.reconnected = true;
    report.transport = socket.io.engine.transport.name;
    finish(0);
  }
});
