// The Node socket.io 4.8 reference server of the benchmark: the few events the load generator
// uses, answered the way Nexus answers them, with none of Nexus's work (no auth check, no rate
// limit, no validation, no database unless --pg). Every figure in the benchmark's table is a ratio to it.
//
// Usage: node bench/node/server.js [--port P] [--redis redis://127.0.0.1:6379/0 --redis-key K]
//                                   [--pg postgresql://postgres@127.0.0.1:5432/DB --pg-pool 10]
// PORT in the environment works too. With --redis, instances share rooms through
// @socket.io/redis-adapter (the equivalent of Nexus on a Redis message queue). With --pg, each
// send_message is stored in PostgreSQL (the `pg` package, a Pool) before the room hears of it and
// the sender gets its ack: in one transaction the room's last_seq goes up by one (the message's
// gapless per-room seq) and the message row is inserted, as Nexus stores a message; the tables are
// created on start if missing.
// Prints one line "ready port=P pid=N ..." on stdout once it listens; GET /health answers 200.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

function option(name, fallback) {
  const index = process.argv.indexOf(name);
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}

const port = Number(option("--port", process.env.PORT || "5100"));
const redisUrl = option("--redis", null);
const redisKey = option("--redis-key", "socket.io-bench");
const pgUrl = option("--pg", null);
const pgPoolSize = Number(option("--pg-pool", "10"));
let pool = null;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS rooms (
  id serial PRIMARY KEY,
  name text NOT NULL UNIQUE,
  last_seq bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
  id bigserial PRIMARY KEY,
  room_id integer NOT NULL REFERENCES rooms (id),
  seq bigint NOT NULL,
  sender text NOT NULL,
  content text NOT NULL,
  client_msg_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (room_id, seq)
)`;

/** Store one message: next seq of its room and the row, in one transaction; resolves after COMMIT. */
async function storeMessage(roomId, from, content, clientMsgId) {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const room = await client.query(
      "INSERT INTO rooms (name, last_seq) VALUES ($1, 1) " +
        "ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq + 1 RETURNING id, last_seq",
      [roomId],
    );
    const { id: roomKey, last_seq: seq } = room.rows[0];
    const row = await client.query(
      "INSERT INTO messages (room_id, seq, sender, content, client_msg_id) VALUES ($1, $2, $3, $4, $5) " +
        "RETURNING id, created_at",
      [roomKey, seq, from, content, clientMsgId],
    );
    await client.query("COMMIT");
    return { id: String(row.rows[0].id), seq: Number(seq), createdAt: row.rows[0].created_at.toISOString() };
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

const httpServer = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404);
  res.end();
});

const io = new Server(httpServer, {
  transports: ["polling", "websocket"],
  perMessageDeflate: false, // Nexus never compresses
  httpCompression: false,
  pingInterval: 25000,
  pingTimeout: 60000,
  maxHttpBufferSize: 1e6,
  cors: { origin: true },
});

let nextMessageId = 0;
const roomSeq = new Map();

function userOf(socket) {
  // No verification: the reference server does no auth work. The generator numbers its clients.
  const auth = socket.handshake.auth || {};
  return auth.userId != null ? String(auth.userId) : socket.id;
}

io.on("connection", (socket) => {
  const from = userOf(socket);
  socket.emit("connected", { socketId: socket.id, user: { id: from }, guest: false, timestamp: Date.now() });

  socket.on("join_room", (payload, ack) => {
    const roomId = typeof payload === "string" ? payload : payload && (payload.roomId || payload.room);
    if (typeof roomId !== "string" || !roomId) {
      if (typeof ack === "function") ack({ success: false, error: { code: "VALIDATION_ERROR", message: "roomId" } });
      return;
    }
    socket.join(roomId);
    if (typeof ack === "function") ack({ success: true, roomId, room: roomId });
  });

  socket.on("send_message", async (payload, ack) => {
    const roomId = payload && (payload.roomId || payload.room);
    if (typeof roomId !== "string" || typeof payload.content !== "string") {
      if (typeof ack === "function") ack({ success: false, error: { code: "VALIDATION_ERROR", message: "roomId, content" } });
      return;
    }
    let stored;
    if (pool) {
      try {
        stored = await storeMessage(roomId, from, payload.content, payload.clientMsgId || null);
      } catch (error) {
        process.stderr.write(`ERROR storing a message: ${error.message}\n`);
        if (typeof ack === "function") ack({ success: false, error: { code: "INTERNAL_ERROR", message: "not stored" } });
        return;
      }
    } else {
      const seq = (roomSeq.get(roomId) || 0) + 1;
      roomSeq.set(roomId, seq);
      stored = { id: String(++nextMessageId), seq, createdAt: new Date().toISOString() };
    }
    const { id, seq, createdAt } = stored;
    // The same fields as Nexus's room_message, so both servers move the same bytes.
    const message = {
      id,
      seq,
      roomId,
      to: null,
      from,
      sender: { id: from, name: from, username: from },
      type: "text",
      content: payload.content,
      attachment: null,
      clientMsgId: payload.clientMsgId || null,
      createdAt,
      timestamp: createdAt,
      editedAt: null,
      deleted: false,
    };
    io.to(roomId).emit("room_message", message); // the sender too, as Nexus does
    if (typeof ack === "function") ack({ success: true, messageId: id, message, duplicate: false });
  });

  socket.on("ping", (ack) => {
    if (typeof ack === "function") ack({ success: true, timestamp: Date.now() });
  });
});

async function main() {
  if (redisUrl) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub, { key: redisKey }));
  }
  if (pgUrl) {
    const { Pool } = require("pg");
    pool = new Pool({ connectionString: pgUrl, max: pgPoolSize });
    await pool.query(SCHEMA);
  }
  httpServer.listen(port, "127.0.0.1", () => {
    const adapter = redisUrl ? `redis key=${redisKey}` : "memory";
    const store = pgUrl ? `postgresql pool=${pgPoolSize}` : "none";
    process.stdout.write(
      `ready port=${port} pid=${process.pid} socket.io=${require("socket.io/package.json").version} adapter=${adapter} store=${store}\n`,
    );
  });
}

const stop = () => {
  io.close();
  if (pool) pool.end().catch(() => {});
  setTimeout(() => process.exit(0), 200).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

main().catch((error) => {
  process.stderr.write(`bench server failed: ${error.stack || error}\n`);
  process.exit(1);
});
