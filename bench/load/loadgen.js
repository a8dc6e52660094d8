// The benchmark's load generator: the official socket.io-client on the websocket transport only.
//
// Usage: node bench/load/loadgen.js SCENARIO --url URL[,URL2] [--option value ...]
// Scenarios (each bounded in time by --timeout-s; see bench/README.md):
//   connect   --clients N [--warm 10]                  connect, hold idle until released
//   fanout    --receivers R --duration-s D [--window 1] one sender, as fast as acks allow
//   rate      --receivers R --duration-s D --rate 5    one sender at a fixed rate
//   rtt       --clients C --duration-s D               ping with ack in a loop
//   history   --rooms name:lastSeq,... [--iterations 200] get_history pages (Nexus only)
//   chat      --clients 1000 --chat-rooms 20 --senders 200 --duration-s D [--room-prefix chat_]
//             the clients split into rooms of clients/chat-rooms (client c in room c div size,
//             named PREFIX00, PREFIX01, ...); the first senders/chat-rooms of each room send, each
//             waiting for its ack before its next send, the others receive
//   storm     --clients N [--storm-concurrency 500] [--control-interval-ms 20]
//             N idle clients and a control client; all N dropped at once and reopened, at most
//             storm-concurrency handshakes in flight; the control client (a child process running
//             the internal scenario `control`) pings throughout
// Common: --tokens FILE (JSON {"users": [{"id", "token"}]}; client i uses user i mod count),
//   --room bench, --connect-concurrency 200, --barriers 1 (after each phase line, wait for a
//   line on stdin: the driver samples the server's memory and CPU there), --timeout-s 120.
// Prints one JSON line per phase ({"phase": ...}) and, last, {"result": {...}} on stdout;
// progress on stderr. Latencies are in milliseconds; the send time travels in the message
// content as performance.timeOrigin + performance.now(), so generators on one machine agree.
"use strict";

const fs = require("node:fs");
const readline = require("node:readline");
const { performance } = require("node:perf_hooks");
const { io } = require("socket.io-client");

// -- options --------------------------------------------------------------------------------

function parseArgs(argv) {
  const options = { scenario: argv[0] };
  for (let i = 1; i < argv.length; i += 1) {
    const arg = argv[i];
    if (!arg.startsWith("--")) throw new Error(`unexpected argument ${arg}`);
    const key = arg.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const value = argv[i + 1];
    i += 1;
    options[key] = value !== undefined && value !== "" && !Number.isNaN(Number(value)) ? Number(value) : value;
  }
  return options;
}

const opts = {
  url: "http://127.0.0.1:5000",
  room: "bench",
  clients: 1000,
  receivers: 1000,
  warm: 10,
  durationS: 10,
  window: 1,
  rate: 5,
  iterations: 200,
  connectConcurrency: 200,
  connectTimeoutS: 30,
  drainIdleS: 3,
  drainMaxS: 20,
  contentBytes: 64,
  clientMsgId: 0,
  chatRooms: 20,
  senders: 200,
  roomPrefix: "chat_",
  stormConcurrency: 500,
  controlIntervalMs: 20,
  barriers: 0,
  timeoutS: 120,
  ...parseArgs(process.argv.slice(2)),
};
const urls = String(opts.url).split(",").filter(Boolean);
const users = opts.tokens ? JSON.parse(fs.readFileSync(opts.tokens, "utf8")).users : [];

const now = () => performance.timeOrigin + performance.now(); // epoch ms, sub-ms precision
const log = (text) => process.stderr.write(`[loadgen ${opts.scenario}] ${text}\n`);
const out = (object) => process.stdout.write(JSON.stringify(object) + "\n");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- latency histogram: log buckets of 1 % from 1 µs, exact count, min, max, mean -----------

const STEP = Math.log(1.01);

class Histogram {
  constructor() {
    this.buckets = new Float64Array(2400);
    this.count = 0;
    this.sum = 0;
    this.min = Infinity;
    this.max = -Infinity;
  }

  add(ms) {
    const us = Math.max(ms * 1000, 1);
    const index = Math.min(this.buckets.length - 1, Math.floor(Math.log(us) / STEP));
    this.buckets[index] += 1;
    this.count += 1;
    this.sum += ms;
    if (ms < this.min) this.min = ms;
    if (ms > this.max) this.max = ms;
  }

  percentile(p) {
    if (this.count === 0) return null;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i += 1) {
      seen += this.buckets[i];
      if (seen >= rank) {
        const middle = Math.exp((i + 0.5) * STEP) / 1000;
        return Math.min(Math.max(middle, this.min), this.max);
      }
    }
    return this.max;
  }

  summary() {
    const round = (v) => (v === null ? null : Math.round(v * 1000) / 1000);
    return {
      count: this.count,
      p50: round(this.percentile(50)),
      p90: round(this.percentile(90)),
      p99: round(this.percentile(99)),
      max: this.count ? round(this.max) : null,
      mean: this.count ? round(this.sum / this.count) : null,
    };
  }
}

// -- the generator's own CPU ----------------------------------------------------------------

class CpuMeter {
  constructor() {
    this.start = process.cpuUsage();
    this.wall = now();
  }

  percent() {
    const used = process.cpuUsage(this.start);
    const wallMs = now() - this.wall;
    return wallMs > 0 ? Math.round(((used.user + used.system) / 1000 / wallMs) * 1000) / 10 : null;
  }
}

// -- result, watchdog and barriers ----------------------------------------------------------

const result = {
  scenario: opts.scenario,
  urls,
  transport: "websocket",
  errors: { connect: {}, ack: {}, disconnect: {}, notWebsocket: 0 },
};
const sockets = [];
let finished = false;

function finish(code) {
  if (finished) return;
  finished = true;
  for (const socket of sockets) socket.disconnect();
  out({ result });
  setTimeout(() => process.exit(code), 50);
}

const watchdog = setTimeout(() => {
  result.timedOut = true;
  log(`timed out after ${opts.timeoutS}s`);
  finish(3);
}, opts.timeoutS * 1000);
watchdog.unref();

const pendingLines = [];
const lineWaiters = [];
if (opts.barriers) {
  const input = readline.createInterface({ input: process.stdin });
  input.on("line", (line) => {
    const waiter = lineWaiters.shift();
    if (waiter) waiter(line);
    else pendingLines.push(line);
  });
  input.on("close", () => {
    if (!finished) {
      log("the driver went away");
      finish(4);
    }
  });
}

/** Announce a phase; with --barriers, wait until the driver has measured and answers. */
async function phase(name, data = {}) {
  out({ phase: name, ...data });
  if (!opts.barriers) return;
  await new Promise((resolve) => (pendingLines.length ? resolve(pendingLines.shift()) : lineWaiters.push(resolve)));
}

function count(table, key) {
  table[key] = (table[key] || 0) + 1;
}

// -- clients --------------------------------------------------------------------------------

let clientCounter = 0;

/** Connect one client to a server; resolves with the socket once `connected` arrived, or null.
 * Client number `index` (by default the next one) uses account index mod the number of accounts. */
function openClient(url, index = clientCounter) {
  clientCounter = Math.max(clientCounter, index + 1);
  const user = users.length ? users[index % users.length] : { id: index + 1, token: "node-bench" };
  return new Promise((resolve) => {
    const socket = io(url, {
      transports: ["websocket"],
      auth: { token: user.token, userId: user.id },
      forceNew: true,
      reconnection: false,
      timeout: opts.connectTimeoutS * 1000,
    });
    sockets.push(socket);
    let settled = false;
    // A server that accepts the connection but never sends `connected` (it failed to greet) must not
    // hold the run: after the connect timeout the client counts as failed.
    const greeting = setTimeout(() => {
      count(result.errors.connect, socket.connected ? "no_connected_event" : "timeout");
      socket.benchClosing = true;
      socket.disconnect();
      settle(null);
    }, opts.connectTimeoutS * 1000 + 1000);
    const settle = (value) => {
      clearTimeout(greeting);
      if (!settled) {
        settled = true;
        resolve(value);
      }
    };
    socket.once("connected", () => {
      const transport = socket.io.engine && socket.io.engine.transport.name;
      if (transport !== "websocket") {
        result.errors.notWebsocket += 1;
        settle(null);
        return;
      }
      socket.on("disconnect", (reason) => {
        if (!finished && !socket.benchClosing) count(result.errors.disconnect, reason);
      });
      settle(socket);
    });
    socket.on("connect_error", (error) => {
      count(result.errors.connect, (error.data && error.data.code) || error.message || "connect_error");
      settle(null);
    });
  });
}

/** Connect `n` clients spread over the servers, at most `concurrency` opening at once; with `gaps`,
 * the result keeps a null where a client failed, so that position i is client number base + i. */
async function openClients(n, { first = 0, gaps = false, concurrency = opts.connectConcurrency, base = null } = {}) {
  const opened = new Array(n);
  const start = base === null ? clientCounter : base;
  clientCounter = Math.max(clientCounter, start + n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next;
      next += 1;
      opened[i] = await openClient(urls[(first + i) % urls.length], start + i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, concurrency) }, worker));
  return gaps ? opened.map((socket) => socket || null) : opened.filter(Boolean);
}

function emitWithAck(socket, event, payload) {
  return new Promise((resolve) => {
    if (payload === undefined) socket.emit(event, resolve);
    else socket.emit(event, payload, resolve);
  });
}

function ackFailed(response) {
  if (response && response.success) return false;
  count(result.errors.ack, (response && response.error && response.error.code) || "BAD_ACK");
  return true;
}

/** Every client joins its room (`roomOf(socket)`, by default the --room); returns how many did. */
async function joinAll(clients, roomOf = () => opts.room) {
  let next = 0;
  let joined = 0;
  const worker = async () => {
    while (next < clients.length) {
      const socket = clients[next];
      next += 1;
      if (!ackFailed(await emitWithAck(socket, "join_room", { roomId: roomOf(socket) }))) {
        socket.benchJoined = true;
        joined += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(clients.length, opts.connectConcurrency) }, worker));
  return joined;
}

async function closeAll() {
  for (const socket of sockets) {
    socket.benchClosing = true;
    socket.disconnect();
  }
  await sleep(100);
}

// -- scenarios ------------------------------------------------------------------------------

async function scenarioConnect() {
  const warm = await openClients(opts.warm);
  result.warmClients = warm.length;
  await phase("warm", { clients: warm.length });

  log(`connecting ${opts.clients} clients`);
  const cpu = new CpuMeter();
  const started = now();
  const held = await openClients(opts.clients);
  result.connectSeconds = round3((now() - started) / 1000);
  result.genCpuPercent = cpu.percent();
  result.requested = opts.clients;
  result.connected = held.length;
  log(`${held.length}/${opts.clients} connected in ${result.connectSeconds}s`);

  await phase("held", { clients: held.length });
  result.stillConnected = held.filter((socket) => socket.connected).length;
  // Everything this generator holds open at once: the warm-up clients and the held ones.
  result.concurrent = result.stillConnected + warm.filter((socket) => socket.connected).length;
  await closeAll();
}

/** Receivers in the room and one sender (also in the room, as in a chat) on the first server. */
async function fanoutSetup() {
  const receivers = await openClients(opts.receivers, { first: 0 });
  const [sender] = await openClients(1, { first: 0 });
  result.receivers = receivers.length;
  if (!sender || receivers.length === 0) throw new Error("could not connect the sender and receivers");
  const joined = await joinAll(receivers);
  const senderJoined = await joinAll([sender]);
  result.joined = joined;
  if (senderJoined !== 1) throw new Error("the sender could not join the room");
  log(`${receivers.length} receivers and a sender connected, ${joined} joined ${opts.room}`);

  const { runId, delivery, tally, onMessage } = deliveryCounter();
  for (const socket of receivers) socket.on("room_message", onMessage);
  return { receivers, sender, runId, delivery, tally };
}

/** A run id for the message contents, and a room_message listener that times this run's deliveries. */
function deliveryCounter() {
  const runId = Math.random().toString(36).slice(2, 8);
  const delivery = new Histogram();
  const tally = { received: 0, foreign: 0, firstSend: null, lastDelivery: null };
  const onMessage = (message) => {
    const parts = typeof message.content === "string" ? message.content.split(" ", 4) : [];
    if (parts[0] !== "bench" || parts[1] !== runId) {
      tally.foreign += 1;
      return;
    }
    const t = now();
    delivery.add(t - Number(parts[3]));
    tally.received += 1;
    tally.lastDelivery = t;
  };
  return { runId, delivery, tally, onMessage };
}

function messageContent(runId, i, sentAt) {
  const head = `bench ${runId} ${i} ${sentAt.toFixed(3)} `;
  return head + "x".repeat(Math.max(0, opts.contentBytes - head.length));
}

/** After sending: wait for the acks, then for the deliveries (bounded), and report. */
async function fanoutDrain(state, sending, expectedOf = (acked) => acked * state.receivers.length) {
  const { delivery, tally } = state;
  const ackDeadline = now() + opts.drainMaxS * 1000;
  while (sending.inflight > 0 && now() < ackDeadline) await sleep(5);
  const expected = expectedOf(sending.acked);
  let lastSeen = tally.received;
  let lastProgress = now();
  const deadline = now() + opts.drainMaxS * 1000;
  while (tally.received < expected && now() < deadline) {
    await sleep(10);
    if (tally.received !== lastSeen) {
      lastSeen = tally.received;
      lastProgress = now();
    } else if (now() - lastProgress > opts.drainIdleS * 1000) {
      break;
    }
  }
  const span = tally.lastDelivery && tally.firstSend ? (tally.lastDelivery - tally.firstSend) / 1000 : null;
  Object.assign(result, {
    sent: sending.sent,
    acked: sending.acked,
    ackPending: sending.inflight,
    deliveriesExpected: expected,
    deliveries: tally.received,
    lost: Math.max(0, expected - tally.received),
    foreignMessages: tally.foreign,
    sendSeconds: round3(sending.seconds),
    spanSeconds: span === null ? null : round3(span),
    deliveriesPerSecond: span ? Math.round(tally.received / span) : null,
    messagesPerSecond: sending.seconds ? round3(sending.acked / sending.seconds) : null,
    latencyMs: delivery.summary(),
    ackLatencyMs: sending.ackLatency.summary(),
  });
}

async function scenarioFanout() {
  const state = await fanoutSetup();
  await phase("measure_start", { receivers: state.receivers.length });
  const cpu = new CpuMeter();
  const sending = { sent: 0, acked: 0, inflight: 0, ackLatency: new Histogram(), seconds: 0 };
  const started = now();
  state.tally.firstSend = started;
  const end = started + opts.durationS * 1000;
  await new Promise((resolve) => {
    const pump = () => {
      while (sending.inflight < opts.window && now() < end) {
        sending.sent += 1;
        sending.inflight += 1;
        const sentAt = now();
        const payload = { roomId: opts.room, content: messageContent(state.runId, sending.sent, sentAt) };
        if (opts.clientMsgId) payload.clientMsgId = `${state.runId}-${sending.sent}`;
        state.sender.emit("send_message", payload, (response) => {
          sending.inflight -= 1;
          sending.ackLatency.add(now() - sentAt);
          if (!ackFailed(response)) sending.acked += 1;
          pump();
        });
      }
      if (sending.inflight === 0 && now() >= end) resolve();
    };
    pump();
    // A sender whose acks stop coming must not hang the run: the drain bound takes over.
    const stall = setInterval(() => {
      if (now() >= end) {
        clearInterval(stall);
        resolve();
      }
    }, 50);
  });
  sending.seconds = (now() - started) / 1000;
  await fanoutDrain(state, sending);
  result.genCpuPercent = cpu.percent();
  log(`${result.acked} messages, ${result.deliveries}/${result.deliveriesExpected} deliveries, ${result.deliveriesPerSecond}/s`);
  await phase("measure_end", { deliveries: result.deliveries });
  await closeAll();
}

async function scenarioRate() {
  const state = await fanoutSetup();
  await phase("measure_start", { receivers: state.receivers.length });
  const cpu = new CpuMeter();
  const sending = { sent: 0, acked: 0, inflight: 0, ackLatency: new Histogram(), seconds: 0 };
  const started = now();
  state.tally.firstSend = started;
  const total = Math.max(1, Math.round(opts.rate * opts.durationS));
  for (let i = 0; i < total; i += 1) {
    const due = started + (i * 1000) / opts.rate;
    const wait = due - now();
    if (wait > 0) await sleep(wait);
    sending.sent += 1;
    sending.inflight += 1;
    const sentAt = now();
    state.sender.emit(
      "send_message",
      { roomId: opts.room, content: messageContent(state.runId, sending.sent, sentAt) },
      (response) => {
        sending.inflight -= 1;
        sending.ackLatency.add(now() - sentAt);
        if (!ackFailed(response)) sending.acked += 1;
      },
    );
  }
  sending.seconds = (now() - started) / 1000;
  await fanoutDrain(state, sending);
  result.targetRate = opts.rate;
  result.genCpuPercent = cpu.percent();
  log(`${result.acked} messages at ${opts.rate}/s: p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms`);
  await phase("measure_end", { deliveries: result.deliveries });
  await closeAll();
}

async function scenarioRtt() {
  const clients = await openClients(opts.clients);
  result.clients = clients.length;
  if (clients.length === 0) throw new Error("no client connected");
  await phase("measure_start", { clients: clients.length });
  const cpu = new CpuMeter();
  const latency = new Histogram();
  const started = now();
  const end = started + opts.durationS * 1000;
  let roundTrips = 0;
  const loop = async (socket) => {
    while (now() < end && socket.connected) {
      const t = now();
      const response = await emitWithAck(socket, "ping");
      latency.add(now() - t);
      if (!ackFailed(response)) roundTrips += 1;
    }
  };
  await Promise.all(clients.map(loop));
  const seconds = (now() - started) / 1000;
  Object.assign(result, {
    roundTrips,
    seconds: round3(seconds),
    roundTripsPerSecond: Math.round(roundTrips / seconds),
    latencyMs: latency.summary(),
    genCpuPercent: cpu.percent(),
  });
  log(`${roundTrips} round trips, ${result.roundTripsPerSecond}/s, p99 ${result.latencyMs.p99} ms`);
  await phase("measure_end", { roundTrips });
  await closeAll();
}

async function scenarioHistory() {
  const [client] = await openClients(1);
  if (!client) throw new Error("the history client could not connect");
  const cases = String(opts.rooms)
    .split(",")
    .filter(Boolean)
    .map((item) => {
      const [room, lastSeq] = item.split(":");
      return { room, lastSeq: Number(lastSeq) };
    });
  await phase("measure_start", {});
  const cpu = new CpuMeter();
  result.rooms = {};
  for (const { room, lastSeq } of cases) {
    const pages = {
      latest: { roomId: room, limit: 50 },
      middle: { roomId: room, limit: 50, before: Math.max(2, Math.floor(lastSeq / 2)) },
    };
    result.rooms[room] = { storedMessages: lastSeq };
    for (const [name, query] of Object.entries(pages)) {
      const latency = new Histogram();
      let short = 0;
      const deadline = now() + opts.durationS * 1000;
      for (let i = 0; i < opts.iterations && now() < deadline; i += 1) {
        const t = now();
        const response = await emitWithAck(client, "get_history", query);
        latency.add(now() - t);
        if (!ackFailed(response) && (response.messages || []).length !== Math.min(50, lastSeq)) short += 1;
      }
      result.rooms[room][name] = { ...latency.summary(), shortPages: short };
      log(`${room} ${name}: p50 ${round3(latency.percentile(50))} ms, p99 ${round3(latency.percentile(99))} ms`);
    }
  }
  result.genCpuPercent = cpu.percent();
  await phase("measure_end", {});
  await closeAll();
}

/** Persisted chat: rooms of clients/chat-rooms members, a few senders in each, each sender waiting for
 * its ack (sent by Nexus after the commit) before the next send; every member receives. */
async function scenarioChat() {
  const rooms = Math.max(1, opts.chatRooms);
  const size = Math.floor(opts.clients / rooms);
  const sendersPerRoom = Math.max(1, Math.min(size, Math.floor(opts.senders / rooms)));
  if (size < 1) throw new Error(`${opts.clients} clients cannot fill ${rooms} rooms`);
  const roomName = (r) => `${opts.roomPrefix}${String(r).padStart(2, "0")}`;
  const all = await openClients(rooms * size, { gaps: true, base: 0 });
  const members = [];
  const senders = [];
  all.forEach((socket, c) => {
    if (!socket) return;
    socket.benchRoom = roomName(Math.floor(c / size));
    members.push(socket);
    if (c % size < sendersPerRoom) senders.push(socket);
  });
  result.clients = members.length;
  if (members.length === 0) throw new Error("no client connected");
  const joined = await joinAll(members, (socket) => socket.benchRoom);
  result.joined = joined;
  const perRoom = new Map();
  for (const socket of members) {
    if (socket.benchJoined) perRoom.set(socket.benchRoom, (perRoom.get(socket.benchRoom) || 0) + 1);
  }
  log(`${members.length} clients in ${rooms} rooms of ${size} (${joined} joined), ${senders.length} senders`);

  const state = { ...deliveryCounter(), receivers: members };
  for (const socket of members) socket.on("room_message", state.onMessage);
  await phase("measure_start", { clients: members.length, senders: senders.length });
  const cpu = new CpuMeter();
  const sending = { sent: 0, acked: 0, inflight: 0, ackLatency: new Histogram(), seconds: 0 };
  const ackedPerRoom = new Map();
  const started = now();
  state.tally.firstSend = started;
  const end = started + opts.durationS * 1000;
  const loop = async (socket) => {
    while (now() < end && socket.connected) {
      sending.sent += 1;
      sending.inflight += 1;
      const sentAt = now();
      const content = messageContent(state.runId, sending.sent, sentAt);
      const response = await emitWithAck(socket, "send_message", { roomId: socket.benchRoom, content });
      sending.inflight -= 1;
      sending.ackLatency.add(now() - sentAt);
      if (!ackFailed(response)) {
        sending.acked += 1;
        ackedPerRoom.set(socket.benchRoom, (ackedPerRoom.get(socket.benchRoom) || 0) + 1);
      }
    }
  };
  // Each sender's loop stops at the deadline; one whose ack never comes is left to the drain bound.
  await Promise.race([Promise.all(senders.map(loop)), sleep(opts.durationS * 1000 + opts.drainMaxS * 1000)]);
  sending.seconds = (now() - started) / 1000;
  const expectedOf = () => [...ackedPerRoom].reduce((sum, [room, acked]) => sum + acked * (perRoom.get(room) || 0), 0);
  await fanoutDrain(state, sending, expectedOf);
  result.rooms = rooms;
  result.roomSize = size;
  result.senders = senders.length;
  result.genCpuPercent = cpu.percent();
  log(`${result.acked} messages acked, ${result.messagesPerSecond}/s, ack p99 ${result.ackLatencyMs.p99} ms, ` +
      `${result.deliveries}/${result.deliveriesExpected} deliveries`);
  await phase("measure_end", { acked: result.acked });
  await closeAll();
}

/** Reconnect storm: N idle clients dropped at once (their transports closed, as by a network blip or a
 * restart) and reopened at once, at most storm-concurrency handshakes in flight. A control client in a
 * process of its own (so that this one's busy event loop does not delay its acks) stays connected and
 * sends a ping with ack every control-interval-ms throughout. */
async function scenarioStorm() {
  const control = await startControl();
  const clients = await openClients(opts.clients, { gaps: true, base: 1 }); // as scenario a: connectConcurrency
  const held = clients.filter(Boolean);
  result.requested = opts.clients;
  result.connectedBefore = held.length;
  log(`${held.length}/${opts.clients} clients and the control client connected`);
  await phase("held", { clients: held.length + 1 });

  await phase("measure_start", { clients: held.length });
  const cpu = new CpuMeter();
  await control.start();
  await sleep(200); // the control client's baseline before the storm

  const reconnect = new Histogram();
  const dropped = now();
  for (const socket of held) {
    socket.benchClosing = true;
    socket.io.engine.close(); // the transport goes away; no Socket.IO DISCONNECT packet is sent
  }
  const indexes = [];
  clients.forEach((socket, i) => socket && indexes.push(1 + i));
  let next = 0;
  let back = 0;
  let lastBack = null;
  const worker = async () => {
    while (next < indexes.length) {
      const index = indexes[next];
      next += 1;
      const socket = await openClient(urls[0], index);
      if (socket) {
        back += 1;
        lastBack = now();
        reconnect.add(lastBack - dropped);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(indexes.length, opts.stormConcurrency) }, worker));
  result.genCpuPercent = cpu.percent();
  await sleep(500); // the control client's tail after the storm
  const pings = await control.stop();
  Object.assign(result, {
    reconnected: back,
    reconnectSeconds: lastBack === null ? null : round3((lastBack - dropped) / 1000),
    reconnectMs: reconnect.summary(),
    controlPings: pings.sent,
    controlUnanswered: pings.unanswered,
    controlStayedConnected: pings.stayedConnected,
    controlPingMs: pings.latencyMs,
  });
  log(`${back}/${indexes.length} back in ${result.reconnectSeconds}s; control ping p99 ` +
      `${pings.latencyMs.p99} ms, max ${pings.latencyMs.max} ms, ${pings.unanswered} unanswered`);
  await phase("measure_end", { reconnected: back });
  await closeAll();
}

/** Fork the control client (this file, scenario `control`, same options); start() and stop() it over IPC. */
async function startControl() {
  const { fork } = require("node:child_process");
  const args = ["control", "--url", urls[0], "--control-interval-ms", String(opts.controlIntervalMs),
    "--timeout-s", String(opts.timeoutS), "--connect-timeout-s", String(opts.connectTimeoutS)];
  if (opts.tokens) args.push("--tokens", String(opts.tokens));
  const child = fork(__filename, args, { stdio: ["ignore", "ignore", "inherit", "ipc"] });
  const replies = [];
  const waiters = [];
  child.on("message", (message) => (waiters.length ? waiters.shift()(message) : replies.push(message)));
  child.on("exit", (code) => {
    while (waiters.length) waiters.shift()({ failure: `the control client exited with ${code}` });
  });
  const reply = () => new Promise((resolve) => (replies.length ? resolve(replies.shift()) : waiters.push(resolve)));
  const checked = async () => {
    const message = await reply();
    if (message.failure) throw new Error(message.failure);
    return message;
  };
  await checked(); // connected
  return {
    start: async () => {
      child.send({ command: "start" });
      await checked();
    },
    stop: async () => {
      child.send({ command: "stop" });
      const summary = await checked();
      child.disconnect();
      return summary;
    },
  };
}

/** The control client's side: connect (account 0), then ping every control-interval-ms between the
 * parent's start and stop; reply with the round trips' summary. */
async function scenarioControl() {
  const [control] = await openClients(1, { base: 0 });
  if (!control) {
    process.send({ failure: "the control client could not connect" });
    return;
  }
  let dropped = false;
  control.on("disconnect", () => {
    if (!finished) dropped = true;
  });
  const pings = new Histogram();
  let sent = 0;
  let ticker = null;
  const done = new Promise((resolve) => {
    process.on("message", (message) => {
      if (message.command === "start") {
        ticker = setInterval(() => {
          if (!control.connected) return;
          sent += 1;
          const t = now();
          control.emit("ping", (response) => {
            pings.add(now() - t);
            ackFailed(response);
          });
        }, opts.controlIntervalMs);
        process.send({ started: true });
      } else if (message.command === "stop") {
        clearInterval(ticker);
        resolve();
      }
    });
  });
  process.send({ connected: true });
  await done;
  const deadline = now() + opts.drainMaxS * 1000;
  while (pings.count < sent && now() < deadline) await sleep(5);
  process.send({
    sent,
    unanswered: sent - pings.count,
    stayedConnected: control.connected && !dropped,
    ackErrors: result.errors.ack,
    latencyMs: pings.summary(),
  });
}

function round3(value) {
  return Math.round(value * 1000) / 1000;
}

const scenarios = {
  connect: scenarioConnect,
  fanout: scenarioFanout,
  rate: scenarioRate,
  rtt: scenarioRtt,
  history: scenarioHistory,
  chat: scenarioChat,
  storm: scenarioStorm,
  control: scenarioControl,
};

async function main() {
  const run = scenarios[opts.scenario];
  if (!run) throw new Error(`unknown scenario ${opts.scenario}; one of ${Object.keys(scenarios).join(", ")}`);
  result.options = { ...opts, tokens: undefined };
  await run();
  finish(0);
}

main().catch((error) => {
  result.failure = String(error && error.message ? error.message : error);
  log(`failed: ${result.failure}`);
  finish(1);
});
