// Two users of the official socket.io-client talk through Nexus serving TLS itself, for
// tests/live/test_tls.py. Node's client reads and writes its TLS socket from one event loop
// (python-engineio's threaded client races its reader and writer on one SSL socket and drops
// wss:// connections now and then, whatever the server does).
// Usage: node tests/js/tls.mjs '{"url", "tokens": {"sender", "receiver"}, "contents": [...], "timeoutMs"}'
// Prints one JSON report on stdout.
import { io } from "socket.io-client";

const scenario = JSON.parse(process.argv[2]);
const limit = scenario.timeoutMs ?? 15000;
const report = { transports: {}, pings: [], pongs: 0, joined: [], sent: [], received: [], history: null, error: null };

const open = (token) =>
  new Promise((resolve, reject) => {
    const socket = io(scenario.url, {
      transports: ["websocket"], auth: { token }, reconnection: false, forceNew: true,
      timeout: limit, rejectUnauthorized: false,
    });
    socket.on("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
    socket.on("connected", () => resolve(socket));
  });
const call = (socket, event, payload) => socket.timeout(limit).emitWithAck(event, payload);
const until = (test) =>
  new Promise((resolve) => {
    const check = () => (test() ? resolve() : setTimeout(check, 10));
    check();
  });

async function main() {
  const sender = await open(scenario.tokens.sender);
  const receiver = await open(scenario.tokens.receiver);
  sender.on("pong", () => report.pongs++);
  receiver.on("room_message", (message) => report.received.push(message.content));
  for (let i = 0; i < 20; i++) report.pings.push(await call(sender, "ping", { timestamp: i }));
  report.joined.push(await call(sender, "join_room", { roomId: "general" }));
  report.joined.push(await call(receiver, "join_room", { roomId: "general" }));
  for (const content of scenario.contents) report.sent.push(await call(sender, "send_message", { roomId: "general", content }));
  await until(() => report.received.length >= scenario.contents.length);
  const history = await call(receiver, "get_history", { roomId: "general", limit: 50 });
  report.history = { success: history.success, contents: (history.messages ?? []).map((m) => m.content) };
  report.transports = { sender: sender.io.engine.transport.name, receiver: receiver.io.engine.transport.name };
  sender.disconnect();
  receiver.disconnect();
}

// Exits once the report is written: stdout is a pipe, and exiting at once would cut it at 64 KiB.
let finished = false;
const finish = (code) => {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(code));
};
const watchdog = setTimeout(() => {
  report.error = "timed out";
  finish(2);
}, limit * 2);
main()
  .catch((err) => (report.error = String(err)))
  .finally(() => {
    clearTimeout(watchdog);
    finish(0);
  });
