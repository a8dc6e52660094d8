// Drives Nexus with the official socket.io-client for tests/live/test_js_client.py.
// Usage: node tests/js/client.mjs '<json scenario>'; prints one JSON report on stdout.
// Scenario: {url, options (passed to io()), steps: [...], timeoutMs}
//   {emit, args, ack: true}   emit an event (with an ack callback when ack is true)
//   {waitFor: "event", count}  wait until that event has arrived (count times, default 1)
//   {waitUpgrade: true}        wait until the transport is websocket
//   {sleep: ms}
import { io } from "socket.io-client";

const scenario = JSON.parse(process.argv[2]);
const limit = scenario.timeoutMs ?? 8000;
const report = { connected: false, socketId: null, connectError: null, transport: null, events: [], acks: [] };

let finished = false;
const finish = (code) => {
  if (finished) return;
  finished = true;
  report.transport = socket.io.engine ? socket.io.engine.transport.name : null;
  socket.disconnect();
  // Exit once the report is written: stdout is a pipe, and exiting at once can cut it at 64 KiB.
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(code));
};
const watchdog = setTimeout(() => {
  report.timedOut = true;
  finish(2);
}, limit);

const socket = io(scenario.url, { reconnection: false, timeout: limit, ...scenario.options });
socket.onAny((event, ...args) => report.events.push([event, ...args]));
socket.io.on("open", () => {
  const engine = socket.io.engine;
  report.openTransport = engine.transport.name;
  engine.on("upgrade", (transport) => (report.upgradedTo = transport.name));
});

const until = (test) =>
  new Promise((resolve) => {
    const check = () => (test() ? resolve() : setTimeout(check, 10));
    check();
  });

async function run() {
  for (const step of scenario.steps ?? []) {
    if (step.emit) {
      const args = step.args ?? [];
      if (step.ack) {
        report.acks.push(await new Promise((resolve) => socket.emit(step.emit, ...args, resolve)));
      } else {
        socket.emit(step.emit, ...args);
      }
    } else if (step.waitFor) {
      const count = step.count ?? 1;
      await until(() => report.events.filter(([name]) => name === step.waitFor).length >= count);
    } else if (step.waitUpgrade) {
      await until(() => socket.io.engine.transport.name === "websocket");
    } else if (step.sleep) {
      await new Promise((resolve) => setTimeout(resolve, step.sleep));
    }
  }
}

socket.on("connect_error", (err) => {
  report.connectError = { message: err.message, data: err.data ?? null };
  clearTimeout(watchdog);
  finish(0);
});

socket.on("connect", async () => {
  report.connected = true;
  report.socketId = socket.id;
  await until(() => report.events.some(([name]) => name === "connected"));
  await run();
  clearTimeout(watchdog);
  finish(0);
});
