// A front end typed with @nexus/client-types: every event of every namespace, sent and received.
// Compiled by tests/test_typescript.py with `tsc --strict --noEmit`; never run.
import { io, type Socket } from "socket.io-client";
import type {
  AdminClientToServerEvents,
  AdminServerToClientEvents,
  ChatClientToServerEvents,
  ChatServerToClientEvents,
  ClientToServerEvents,
  ErrorCode,
  Message,
  NexusSocket,
  PresenceClientToServerEvents,
  PresenceServerToClientEvents,
  ServerToClientEvents,
} from "@nexus/client-types";

const url = "http://127.0.0.1:5000";
const token = "an access token";

const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url, {
  auth: { token, since: { general: 41 } },
});
const chat: NexusSocket<"/chat"> = io(`${url}/chat`, { auth: { token } });
const presence: Socket<PresenceServerToClientEvents, PresenceClientToServerEvents> = io(`${url}/presence`, {
  auth: { token },
});
const admin: Socket<AdminServerToClientEvents, AdminClientToServerEvents> = io(`${url}/admin`, { auth: { token } });

const seen: Message[] = [];
function refused(code: ErrorCode, message: string): void {
  console.warn(code, message);
}

// -- what clients send: every event of each namespace (the mapped types make the lists complete) --

const defaultSends: { [E in keyof ClientToServerEvents]: () => void } = {
  ping: () => {
    socket.emit("ping", (response) => {
      if (response.success) console.log(response.timestamp + 1, response.serverTime.length);
    });
    socket.emit("ping", { timestamp: Date.now() }, (response) => {
      if (response.success) console.log(response.clientTimestamp);
    });
    socket.emit("ping", { timestamp: Date.now() });  // answered by the `pong` event alone
  },
  authenticate: () => {
    socket.emit("authenticate", token, (response) => {
      if (response.success) console.log(response.user.username, response.socketId);
      else if (response.error.code === "TOKEN_EXPIRED") refused(response.error.code, response.error.message);
    });
    socket.emit("authenticate", { token }, () => undefined);
  },
  user_action: () => socket.emit("user_action", { action: "opened_settings", data: { tab: "profile" } }),
  notification_read: () => {
    socket.emit("notification_read", 12, (response) => {
      if (response.success) console.log(response.notification.read, response.notification.from.name);
    });
    socket.emit("notification_read", { notificationId: 12 }, () => undefined);
  },
  join_room: () => {
    socket.emit("join_room", "general", (response) => {
      if (!response.success) return refused(response.error.code, response.error.message);
      const lastSeq: number = response.lastSeq;
      if (response.catchUp && !response.catchUp.complete) console.log("page history from", lastSeq);
    });
    socket.emit("join_room", { room: "general", since: 41, kind: "private" }, () => undefined);
    socket.emit("join_room", { roomId: "general" }, () => undefined);
  },
  leave_room: () => socket.emit("leave_room", "general", (response) => {
    if (response.success) console.log(response.memberCount);
  }),
  room_info: () => socket.emit("room_info", { roomId: "general" }, (response) => {
    if (response.success) console.log(response.room.members.map((member) => member.inRoom));
  }),
  send_message: () => {
    socket.emit("send_message", { roomId: "general", content: "hi", type: "text", clientMsgId: "c-1" }, (response) => {
      if (response.success) seen.push(response.message);
      else if (response.error.code === "NOT_IN_ROOM") socket.emit("join_room", "general", () => undefined);
    });
    socket.emit("send_message", { to: 7, content: "psst" }, (response) => {
      if (response.success) console.log(response.messageId, response.duplicate);
    });
    socket.emit("send_message", {
      roomId: "general", content: "", type: "image", attachment: { url: "https://example.com/cat.png", width: 64 },
    }, () => undefined);
  },
  edit_message: () => socket.emit("edit_message", { messageId: 7, content: "hello" }, (response) => {
    if (response.success) console.log(response.message.editedAt);
  }),
  delete_message: () => socket.emit("delete_message", 7, (response) => {
    if (response.success) console.log(response.message.deleted);
  }),
  get_history: () => {
    socket.emit("get_history", { roomId: "general", before: 120, limit: 50, order: "desc" }, (response) => {
      if (response.success) seen.push(...response.messages);
    });
    socket.emit("get_history", { with: 7, after: 3 }, () => undefined);
  },
  mark_read: () => {
    socket.emit("mark_read", { roomId: "general", seq: 42 }, (response) => {
      if (response.success) console.log(response.lastReadSeq);
    });
    socket.emit("mark_read", { with: 7, seq: 3 });
  },
  typing_start: () => {
    socket.emit("typing_start", "general");  // without an ack: a refusal comes as an `error` event
    socket.emit("typing_start", "general", () => undefined);
  },
  typing_stop: () => socket.emit("typing_stop", { roomId: "general" }),
  update_status: () => socket.emit("update_status", "busy", (response) => {
    if (response.success) console.log(response.version, response.status);
  }),
  get_online_users: () => socket.emit("get_online_users", (response) => {
    if (response.success) console.log(response.users.map((user) => user.userInfo.username));
  }),
};

const chatSends: { [E in keyof ChatClientToServerEvents]: () => void } = {
  join_room: () => chat.emit("join_room", { room: "general" }, () => undefined),
  leave_room: () => chat.emit("leave_room", { room: "general" }, () => undefined),
  room_info: () => chat.emit("room_info", "general", () => undefined),
  send_message: () => chat.emit("send_message", { room: "general", content: "hi" }, () => undefined),
  edit_message: () => chat.emit("edit_message", { messageId: 7, content: "hi!" }, () => undefined),
  delete_message: () => chat.emit("delete_message", { messageId: 7 }, () => undefined),
  get_history: () => chat.emit("get_history", { room: "general" }, () => undefined),
  mark_read: () => chat.emit("mark_read", { room: "general", seq: 1 }, () => undefined),
  typing_start: () => chat.emit("typing_start", { room: "general" }, () => undefined),
  typing_stop: () => chat.emit("typing_stop", "general", () => undefined),
};

const presenceSends: { [E in keyof PresenceClientToServerEvents]: () => void } = {
  update_status: () => {
    presence.emit("update_status", "online");  // as the documented front ends send it
    presence.emit("update_status", { status: "away" }, () => undefined);
  },
  get_online_users: () => presence.emit("get_online_users", () => undefined),
};

const adminSends: { [E in keyof AdminClientToServerEvents]: () => void } = {
  broadcast: () => admin.emit("broadcast", { kind: "department", department: "sales", message: "Targets" }, (response) => {
    if (response.success) console.log(response.kind, response.broadcast);
  }),
  get_stats: () => admin.emit("get_stats", (response) => {
    if (response.success) console.log(response.stats.totals.connections, response.stats.instances.length);
  }),
  disconnect_user: () => admin.emit("disconnect_user", { userId: 3 }, () => undefined),
  set_role: () => admin.emit("set_role", { userId: 3, role: "moderator" }, (response) => {
    if (response.success) console.log(response.user.role);
  }),
  ban_user: () => admin.emit("ban_user", 3, () => undefined),
};

// -- what the server sends: a handler for every event of each namespace --------------------------

const defaultHandlers: ServerToClientEvents = {
  connected: (welcome) => console.log(welcome.socketId, welcome.user?.username ?? "guest", welcome.unread["general"]),
  error: (error) => console.warn(error.event, error.code, error.retryAfterMs),
  rate_limit_exceeded: (notice) => console.warn(notice.event, notice.retryAfterMs, notice.message),
  pong: (pong) => console.log(pong.timestamp),
  server_shutdown: (notice) => console.log(notice.reconnectAfterMs),
  online_users: (users) => console.log(users.map((user) => [user.userId, user.status, user.version])),
  room_joined: (joined) => console.log(joined.room, joined.user.name, joined.memberCount),
  room_left: (left) => console.log(left.roomId, left.user.guest),
  removed_from_room: (removed) => console.log(removed.reason, removed.lastSeq),
  room_message: (message) => seen.push(message),
  new_message: (message) => console.log(message.to, message.from, message.sender.username),
  messages_missed: (gap) => socket.emit("get_history", { roomId: gap.roomId ?? undefined, after: gap.afterSeq },
    () => undefined),
  message_updated: (message) => console.log(message.content),
  message_deleted: (message) => console.log(message.deleted),
  user_typing: (typing) => console.log(typing.roomId, typing.user.name, typing.isTyping),
  user_online: (online) => console.log(online.userInfo.displayName, online.version),
  user_offline: (offline) => console.log(offline.userId, offline.lastSeen, offline.version),
  user_updated: (updated) => console.log(updated.status),
  user_update: (update) => console.log(update.userId, update.data.displayName),
  notification: (notification) => console.log(notification.title, notification.data, notification.from.id),
  system_message: (message) => console.log(message.type, message.room, message.message, message.broadcastId),
  admin_message: (message) => console.log(message.from.name),
  department_message: (message) => console.log(message.department),
  session_revoked: (revoked) => console.log(revoked.reason),
};

const chatHandlers: ChatServerToClientEvents = {
  error: defaultHandlers.error,
  rate_limit_exceeded: defaultHandlers.rate_limit_exceeded,
  server_shutdown: defaultHandlers.server_shutdown,
  room_joined: defaultHandlers.room_joined,
  room_left: defaultHandlers.room_left,
  removed_from_room: defaultHandlers.removed_from_room,
  room_message: defaultHandlers.room_message,
  new_message: defaultHandlers.new_message,
  messages_missed: (gap) => chat.emit("get_history", { with: Number(gap.with?.[0]), after: gap.afterSeq }, () => undefined),
  message_updated: defaultHandlers.message_updated,
  message_deleted: defaultHandlers.message_deleted,
  user_typing: defaultHandlers.user_typing,
  notification: defaultHandlers.notification,
  system_message: defaultHandlers.system_message,
  department_message: defaultHandlers.department_message,
  session_revoked: defaultHandlers.session_revoked,
};

const presenceHandlers: PresenceServerToClientEvents = {
  error: defaultHandlers.error,
  rate_limit_exceeded: defaultHandlers.rate_limit_exceeded,
  server_shutdown: defaultHandlers.server_shutdown,
  online_users: defaultHandlers.online_users,
  user_online: defaultHandlers.user_online,
  user_offline: defaultHandlers.user_offline,
  user_updated: defaultHandlers.user_updated,
  user_update: defaultHandlers.user_update,
  notification: defaultHandlers.notification,
  system_message: defaultHandlers.system_message,
  session_revoked: defaultHandlers.session_revoked,
};

const adminHandlers: AdminServerToClientEvents = {
  error: defaultHandlers.error,
  rate_limit_exceeded: defaultHandlers.rate_limit_exceeded,
  server_shutdown: defaultHandlers.server_shutdown,
  notification: defaultHandlers.notification,
  system_message: defaultHandlers.system_message,
  admin_message: defaultHandlers.admin_message,
  session_revoked: defaultHandlers.session_revoked,
  stats: (stats) => console.log(stats.at, stats.totals.usersOnline, stats.instances[0]?.byNamespace["/chat"]),
};

function listen<Events extends object>(target: { on(event: string, handler: (...args: never[]) => void): unknown },
                                       handlers: Events): void {
  for (const [event, handler] of Object.entries(handlers)) target.on(event, handler);
}

listen(socket, defaultHandlers);
listen(chat, chatHandlers);
listen(presence, presenceHandlers);
listen(admin, adminHandlers);
socket.on("room_message", (message) => console.log(message.seq, message.roomId));
for (const send of [defaultSends, chatSends, presenceSends, adminSends]) Object.values(send).forEach((fn) => fn());

// -- acks as promises, and with a timeout ---------------------------------------------------------

async function history(): Promise<Message[]> {
  const page = await socket.emitWithAck("get_history", { roomId: "general" });
  return page.success ? page.messages : [];
}

socket.timeout(5000).emit("join_room", "general", (err, response) => {
  if (err) return console.warn("no answer in time");
  if (response.success) console.log(response.memberCount);
});
socket.timeout(5000).emit("update_status", "away", (err, response) => {  // an ack that may be left out
  if (!err && response.success) console.log(response.status);
});

// -- what the types refuse -------------------------------------------------------------------------

// @ts-expect-error a room name is a string
socket.emit("join_room", 42, () => undefined);
// @ts-expect-error there is no such status
socket.emit("update_status", "asleep", () => undefined);
// @ts-expect-error there is no such status, with or without an ack
socket.emit("update_status", "asleep");
// @ts-expect-error joining is answered by its ack: it is not left out
socket.emit("join_room", "general");
// @ts-expect-error a message needs content
socket.emit("send_message", { roomId: "general" }, () => undefined);
// @ts-expect-error not an event of /chat
chat.emit("update_status", "busy", () => undefined);
// @ts-expect-error `/admin` only
socket.emit("get_stats", () => undefined);
socket.on("room_message", (message) => {
  // @ts-expect-error seq is a number
  const seq: string = message.seq;
  return seq;
});
socket.emit("join_room", "general", (response) => {
  // @ts-expect-error a refusal has no roomId: check success first
  return response.roomId;
});

export { history };
