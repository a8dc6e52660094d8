// Nexus Socket.IO events for socket.io-client: payloads, acks, and each namespace's event maps.
// Generated from the event catalogue (nexus/realtime/catalogue.py) by `python -m nexus.typescript`;
// do not edit by hand.
import type { Socket } from "socket.io-client";

/** Every refusal code (nexus/errors.py). */
export type ErrorCode = "VALIDATION_ERROR" | "BAD_REQUEST" | "UNAUTHORIZED" | "INVALID_CREDENTIALS" | "INVALID_TOKEN" | "TOKEN_EXPIRED" | "TOKEN_REVOKED" | "FORBIDDEN" | "USER_BANNED" | "NOT_FOUND" | "USER_NOT_FOUND" | "ROOM_NOT_FOUND" | "METHOD_NOT_ALLOWED" | "CONFLICT" | "NOT_IN_ROOM" | "LIMIT_REACHED" | "PAYLOAD_TOO_LARGE" | "UNSUPPORTED_MEDIA_TYPE" | "UNKNOWN_EVENT" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR";

/** A refusal: a stable code, a message safe to show, and optional details. */
export interface NexusError<C extends ErrorCode = ErrorCode> {
  code: C;
  message: string;
  details?: unknown;
  /** When to retry, in milliseconds (RATE_LIMITED, UNAVAILABLE). */
  retryAfterMs?: number;
}

/** A success ack: `success: true` and the event's fields. */
export type Done<T> = { success: true } & T;

/** A refusal ack, with the codes the event may be refused with. */
export interface Refused<C extends ErrorCode = ErrorCode> {
  success: false;
  error: NexusError<C>;
}

/** What every client event's ack callback receives. */
export type Ack<T, C extends ErrorCode = ErrorCode> = Done<T> | Refused<C>;

// -- shapes -------------------------------------------------------------------

export interface ActionRecorded {
  /** a decimal id */
  id: string;
  action: string;
  createdAt: string;
}

export interface Actor {
  id: string | null;
  username?: string;
  displayName?: string | null;
  name: string | null;
  guest: boolean;
}

export interface AdminMessage {
  type: "admin";
  message: string;
  timestamp: string;
  from: Sender;
  /** the broadcast's record (GET /api/admin/broadcasts) */
  broadcastId: string;
}

export interface Attachment {
  url: string;
  name?: string;
  size?: number;
  mimeType?: string;
  width?: number;
  height?: number;
}

export interface Authenticate {
  token: string;
}

export interface Authenticated {
  user: Identity;
  socketId: string;
}

export interface Broadcast {
  kind: "system" | "admin" | "department" | "room" | "user";
  message: string;
  title?: string;
  type?: "info" | "success" | "warning" | "error";
  department?: string;
  room?: string;
  userId?: number;
}

export interface BroadcastSent {
  kind: string;
  /** what was sent: the event's payload with `broadcastId`, or the notification */
  broadcast: { [key: string]: unknown };
}

export interface CatchUp {
  /** false: page the rest with get_history */
  complete: boolean;
  since: number;
  lastSeq: number;
  count: number;
  /** why it is incomplete (GAP_TOO_LARGE) */
  reason?: string;
}

export interface Connected {
  socketId: string;
  /** null for a guest */
  user: Identity | null;
  guest: boolean;
  /** unread messages by room name */
  unread: { [key: string]: number };
  /** unread direct messages by the other user's id */
  unreadDirect: { [key: string]: number };
  instanceId: string;
  serverTime: string;
  /** epoch milliseconds */
  timestamp: number;
}

export interface DepartmentMessage {
  type: "department";
  department: string;
  message: string;
  timestamp: string;
  from: Sender;
  /** the broadcast's record (GET /api/admin/broadcasts) */
  broadcastId: string;
}

export interface EventRefused {
  code: string;
  message: string;
  event: string;
  details?: unknown;
  retryAfterMs?: number;
}

export interface History {
  roomId?: string;
  with?: number;
  before?: number;
  after?: number;
  limit?: number;
  order?: "asc" | "desc";
}

export interface HistoryPage {
  roomId: string | null;
  with: string | null;
  messages: Message[];
  hasMore: boolean;
  lastSeq: number;
}

export interface Identity {
  /** a decimal id */
  id: string;
  /** a decimal id */
  userId: string;
  username: string;
  displayName: string | null;
  role: "user" | "moderator" | "admin" | "banned";
  department: string | null;
}

export interface InstanceStats {
  instanceId: string;
  connections: number;
  totalConnections: number;
  byNamespace: { [key: string]: number };
  byTransport: { [key: string]: number };
  usersOnline: number;
  rooms: number;
  liveRooms: number;
  messagesPerSecond: number;
  errorsPerSecond: number;
  messagesTotal: number;
  /** seconds */
  uptime: number;
  /** bytes */
  memoryRss: number | null;
  timestamp: string;
}

export interface JoinRoom {
  room: string;
  since?: number | null;
  kind?: "public" | "private";
}

export interface MarkRead {
  roomId?: string;
  with?: number;
  seq: number;
}

export interface MarkedRead {
  /** for a room */
  roomId?: string;
  /** for a direct conversation */
  with?: string;
  lastReadSeq: number;
}

export interface Membership {
  roomId: string;
  room: string;
  user: Actor;
  memberCount: number;
}

export interface Message {
  /** a decimal id */
  id: string;
  /** gapless order within the room */
  seq: number;
  /** null for a direct message */
  roomId: string | null;
  /** the recipient's id, for a direct message */
  to: string | null;
  /** a decimal id */
  from: string;
  sender: MessageSender;
  type: "text" | "image" | "file";
  content: string;
  attachment: Attachment | null;
  clientMsgId: string | null;
  createdAt: string;
  timestamp: string;
  editedAt: string | null;
  deleted: boolean;
}

export interface MessageChanged {
  message: Message;
}

export interface MessageCreate {
  roomId?: string;
  to?: number;
  content: string;
  type?: "text" | "image" | "file";
  attachment?: Attachment;
  clientMsgId?: string;
}

export interface MessageEdit {
  messageId: number;
  content: string;
}

export interface MessageRef {
  messageId: number;
}

export interface MessageSender {
  /** a decimal id */
  id: string;
  name: string | null;
  username: string | null;
}

export interface MessageSent {
  message: Message;
  /** a decimal id */
  messageId: string;
  /** this clientMsgId was stored before */
  duplicate: boolean;
}

export interface MessagesMissed {
  roomId: string | null;
  afterSeq: number;
  beforeSeq: number;
  /** the two users, for a direct conversation */
  with?: (string | null)[];
}

export interface Notification {
  /** a decimal id */
  id: string;
  type: string;
  title: string;
  message: string;
  data: { [key: string]: unknown };
  timestamp: string;
  createdAt: string;
  read: boolean;
  readAt: string | null;
  from: Sender;
}

export interface NotificationRead {
  notification: Notification;
}

export interface NotificationRef {
  id: number;
}

export interface OnlineUser {
  /** a decimal id */
  userId: string;
  userInfo: UserInfo;
  status: "online" | "away" | "busy" | "offline";
  lastSeen: string | null;
  /** keep the highest per user */
  version: number;
}

export interface OnlineUsersAck {
  users: OnlineUser[];
}

export interface Ping {
  timestamp?: unknown;
}

export interface Pong {
  /** server time, epoch milliseconds */
  timestamp: number;
  serverTime: string;
  /** the `timestamp` the client sent, when it sent one */
  clientTimestamp?: unknown;
}

export interface ProfileChanges {
  displayName?: string | null;
  department?: string | null;
}

export interface ProfileUpdated {
  /** a decimal id */
  userId: string;
  data: ProfileChanges;
}

export interface PublicUser {
  /** a decimal id */
  id: string;
  username: string;
  displayName: string | null;
  role: "user" | "moderator" | "admin" | "banned";
  department: string | null;
  status: string;
  lastSeen: string | null;
}

export interface RateLimit {
  event: string;
  retryAfterMs: number;
  /** a sentence to show */
  message: string;
}

export interface RemovedFromRoom {
  roomId: string;
  room: string;
  reason: "removed" | "banned" | "role_changed";
  /** the room's last message before the removal */
  lastSeq?: number;
}

export interface Role {
  userId: number;
  role: "user" | "moderator" | "admin" | "banned";
}

export interface RoomInfo {
  /** a decimal id */
  id: string;
  roomId: string;
  name: string;
  kind: string;
  topic: string | null;
  ownerId: string | null;
  lastSeq: number;
  createdAt: string | null;
  members: RoomMember[];
  memberCount: number;
  liveMemberCount: number;
}

export interface RoomInfoAck {
  room: RoomInfo;
  roomId: string;
}

export interface RoomJoinedAck {
  roomId: string;
  room: string;
  kind: string;
  memberCount: number;
  lastSeq: number;
  /** present when `since` was given */
  catchUp?: CatchUp;
}

export interface RoomLeftAck {
  roomId: string;
  room: string;
  memberCount: number;
}

export interface RoomMember {
  /** a decimal id */
  id: string;
  username: string;
  displayName: string | null;
  role: "user" | "moderator" | "admin" | "banned";
  department: string | null;
  status: string;
  lastSeen: string | null;
  memberRole: string;
  /** has a socket in the room now */
  inRoom: boolean;
}

export interface RoomRef {
  room: string;
  since?: number | null;
}

export interface Sender {
  id: string | null;
  name: string;
}

export interface ServerShutdown {
  reconnectAfterMs: number;
}

export interface SessionRevoked {
  reason: string;
}

export interface Stats {
  totals: StatsTotals;
  instances: InstanceStats[];
  /** epoch milliseconds */
  at: number;
}

export interface StatsAck {
  stats: Stats;
}

export interface StatsTotals {
  connections: number;
  totalConnections: number;
  usersOnline: number;
  messagesPerSecond: number;
  errorsPerSecond: number;
  rooms: number;
  instances: number;
}

export interface Status {
  status: "online" | "away" | "busy" | "offline";
}

export interface StatusChanged {
  /** a decimal id */
  userId: string;
  status: "online" | "away" | "busy" | "offline";
  lastSeen: string | null;
  version: number;
}

export interface SystemMessage {
  type: "system" | "room";
  /** the chat room, for type room */
  room?: string;
  message: string;
  timestamp: string;
  from: Sender;
  /** the broadcast's record (GET /api/admin/broadcasts) */
  broadcastId: string;
}

export interface Typing {
  roomId: string;
}

export interface TypingAck {
  roomId: string;
}

export interface TypingEvent {
  roomId: string;
  room: string;
  user: Actor;
  userId: string | null;
  isTyping: boolean;
}

export interface UserAction {
  action: string;
  data?: unknown;
}

export interface UserChanged {
  user: PublicUser;
}

export interface UserDisconnected {
  /** a decimal id */
  userId: string;
  /** sockets closed on this instance */
  disconnectedHere: number;
}

export interface UserInfo {
  /** a decimal id */
  id: string;
  username: string;
  displayName: string | null;
  role: "user" | "moderator" | "admin" | "banned";
  department: string | null;
  status: "online" | "away" | "busy" | "offline";
  lastSeen: string | null;
}

export interface UserOffline {
  /** a decimal id */
  userId: string;
  lastSeen?: string | null;
  version: number;
}

export interface UserOnline {
  /** a decimal id */
  userId: string;
  userInfo: UserInfo;
  version: number;
}

export interface UserRef {
  userId: number;
}

// -- what clients send, and their acks --------------------------------------------

/** `ping`'s payload. */
export type PingPayload = Ping;

/** `ping`'s ack: refused with UNAUTHORIZED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type PingResponse = Ack<Pong, "UNAUTHORIZED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `authenticate`'s payload. */
export type AuthenticatePayload = string | Authenticate;

/** `authenticate`'s ack: refused with INVALID_TOKEN, TOKEN_EXPIRED, TOKEN_REVOKED, USER_BANNED, FORBIDDEN, LIMIT_REACHED, UNAUTHORIZED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type AuthenticateResponse = Ack<Authenticated, "INVALID_TOKEN" | "TOKEN_EXPIRED" | "TOKEN_REVOKED" | "USER_BANNED" | "FORBIDDEN" | "LIMIT_REACHED" | "UNAUTHORIZED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `user_action`'s payload. */
export type UserActionPayload = UserAction;

/** `user_action`'s ack: refused with FORBIDDEN, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type UserActionResponse = Ack<ActionRecorded, "FORBIDDEN" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `notification_read`'s payload. */
export type NotificationReadPayload = number | NotificationRef | {
  notificationId: number;
};

/** `notification_read`'s ack: refused with FORBIDDEN, NOT_FOUND, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type NotificationReadResponse = Ack<NotificationRead, "FORBIDDEN" | "NOT_FOUND" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `join_room`'s payload. */
export type JoinRoomPayload = string | JoinRoom | {
  roomId: string;
  since?: number | null;
  kind?: "public" | "private";
};

/** `join_room`'s ack: refused with FORBIDDEN, ROOM_NOT_FOUND, LIMIT_REACHED, CONFLICT, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type JoinRoomResponse = Ack<RoomJoinedAck, "FORBIDDEN" | "ROOM_NOT_FOUND" | "LIMIT_REACHED" | "CONFLICT" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `leave_room`'s payload. */
export type LeaveRoomPayload = string | RoomRef | {
  roomId: string;
  since?: number | null;
};

/** `leave_room`'s ack: refused with NOT_FOUND, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type LeaveRoomResponse = Ack<RoomLeftAck, "NOT_FOUND" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `room_info`'s payload. */
export type RoomInfoPayload = string | RoomRef | {
  roomId: string;
  since?: number | null;
};

/** `room_info`'s ack: refused with ROOM_NOT_FOUND, FORBIDDEN, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type RoomInfoResponse = Ack<RoomInfoAck, "ROOM_NOT_FOUND" | "FORBIDDEN" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `send_message`'s payload. */
export type SendMessagePayload = MessageCreate | {
  room?: string;
  to?: number;
  content: string;
  type?: "text" | "image" | "file";
  attachment?: Attachment;
  clientMsgId?: string;
};

/** `send_message`'s ack: refused with FORBIDDEN, ROOM_NOT_FOUND, USER_NOT_FOUND, NOT_IN_ROOM, CONFLICT, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type SendMessageResponse = Ack<MessageSent, "FORBIDDEN" | "ROOM_NOT_FOUND" | "USER_NOT_FOUND" | "NOT_IN_ROOM" | "CONFLICT" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `edit_message`'s payload. */
export type EditMessagePayload = MessageEdit;

/** `edit_message`'s ack: refused with NOT_FOUND, FORBIDDEN, CONFLICT, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type EditMessageResponse = Ack<MessageChanged, "NOT_FOUND" | "FORBIDDEN" | "CONFLICT" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `delete_message`'s payload. */
export type DeleteMessagePayload = number | MessageRef;

/** `delete_message`'s ack: refused with NOT_FOUND, FORBIDDEN, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type DeleteMessageResponse = Ack<MessageChanged, "NOT_FOUND" | "FORBIDDEN" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `get_history`'s payload. */
export type GetHistoryPayload = History | {
  room?: string;
  with?: number;
  before?: number;
  after?: number;
  limit?: number;
  order?: "asc" | "desc";
};

/** `get_history`'s ack: refused with ROOM_NOT_FOUND, FORBIDDEN, NOT_FOUND, USER_NOT_FOUND, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type GetHistoryResponse = Ack<HistoryPage, "ROOM_NOT_FOUND" | "FORBIDDEN" | "NOT_FOUND" | "USER_NOT_FOUND" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `mark_read`'s payload. */
export type MarkReadPayload = MarkRead | {
  room?: string;
  with?: number;
  seq: number;
};

/** `mark_read`'s ack: refused with ROOM_NOT_FOUND, FORBIDDEN, NOT_FOUND, USER_NOT_FOUND, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type MarkReadResponse = Ack<MarkedRead, "ROOM_NOT_FOUND" | "FORBIDDEN" | "NOT_FOUND" | "USER_NOT_FOUND" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `typing_start`'s payload. */
export type TypingStartPayload = string | Typing | {
  room: string;
};

/** `typing_start`'s ack: refused with NOT_IN_ROOM, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type TypingStartResponse = Ack<TypingAck, "NOT_IN_ROOM" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `typing_stop`'s payload. */
export type TypingStopPayload = string | Typing | {
  room: string;
};

/** `typing_stop`'s ack: refused with NOT_IN_ROOM, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type TypingStopResponse = Ack<TypingAck, "NOT_IN_ROOM" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `update_status`'s payload. */
export type UpdateStatusPayload = ("online" | "away" | "busy" | "offline") | Status;

/** `update_status`'s ack: refused with FORBIDDEN, USER_NOT_FOUND, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type UpdateStatusResponse = Ack<StatusChanged, "FORBIDDEN" | "USER_NOT_FOUND" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `get_online_users`'s ack: refused with UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type GetOnlineUsersResponse = Ack<OnlineUsersAck, "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `broadcast`'s payload. */
export type BroadcastPayload = Broadcast;

/** `broadcast`'s ack: refused with ROOM_NOT_FOUND, USER_NOT_FOUND, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type BroadcastResponse = Ack<BroadcastSent, "ROOM_NOT_FOUND" | "USER_NOT_FOUND" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `get_stats`'s ack: refused with UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type GetStatsResponse = Ack<StatsAck, "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `disconnect_user`'s payload. */
export type DisconnectUserPayload = number | UserRef;

/** `disconnect_user`'s ack: refused with USER_NOT_FOUND, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type DisconnectUserResponse = Ack<UserDisconnected, "USER_NOT_FOUND" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `set_role`'s payload. */
export type SetRolePayload = Role;

/** `set_role`'s ack: refused with USER_NOT_FOUND, FORBIDDEN, CONFLICT, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type SetRoleResponse = Ack<UserChanged, "USER_NOT_FOUND" | "FORBIDDEN" | "CONFLICT" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

/** `ban_user`'s payload. */
export type BanUserPayload = number | UserRef;

/** `ban_user`'s ack: refused with USER_NOT_FOUND, FORBIDDEN, CONFLICT, UNAUTHORIZED, TOKEN_EXPIRED, VALIDATION_ERROR, RATE_LIMITED, UNAVAILABLE, INTERNAL_ERROR. */
export type BanUserResponse = Ack<UserChanged, "USER_NOT_FOUND" | "FORBIDDEN" | "CONFLICT" | "UNAUTHORIZED" | "TOKEN_EXPIRED" | "VALIDATION_ERROR" | "RATE_LIMITED" | "UNAVAILABLE" | "INTERNAL_ERROR">;

// -- event maps, per namespace ---------------------------------------------------

/** What clients send on `/`: Everything front ends use: chat, presence, notifications, ping, authenticate. */
export interface DefaultClientToServerEvents {
  /** Answered by the ack and by a `pong` event (with `clientTimestamp` when a timestamp was sent). */
  ping: (...args: [] | [payload: PingPayload] | [ack: (response: PingResponse) => void] | [payload: PingPayload, ack: (response: PingResponse) => void]) => void;
  /** Turn a guest socket into the token's user (or renew an expiring token). */
  authenticate: (payload: AuthenticatePayload, ack: (response: AuthenticateResponse) => void) => void;
  /** Record what the user did in the front end, for audit; sent to no one. */
  user_action: (...args: [payload: UserActionPayload] | [payload: UserActionPayload, ack: (response: UserActionResponse) => void]) => void;
  /** Mark one of the user's notifications read. */
  notification_read: (payload: NotificationReadPayload, ack: (response: NotificationReadResponse) => void) => void;
  /** Join a chat room (made on first join: public, or the `kind` asked; an existing room of another kind is CONFLICT); with `since`, the messages after that seq come first as `room_message`; the others get `room_joined`. */
  join_room: (payload: JoinRoomPayload, ack: (response: JoinRoomResponse) => void) => void;
  /** Leave a chat room; the others get `room_left` when the user's last socket leaves. */
  leave_room: (payload: LeaveRoomPayload, ack: (response: LeaveRoomResponse) => void) => void;
  /** A room's members with their status, and its counts. */
  room_info: (payload: RoomInfoPayload, ack: (response: RoomInfoResponse) => void) => void;
  /** Store a message, then `room_message` to the room (the sending socket must have joined it: NOT_IN_ROOM otherwise), or `new_message` to the recipient (and the sender's other sockets); the same clientMsgId twice stores one message. */
  send_message: (payload: SendMessagePayload, ack: (response: SendMessageResponse) => void) => void;
  /** Change a message's text (its sender or an admin); `message_updated` where it went. */
  edit_message: (payload: EditMessagePayload, ack: (response: EditMessageResponse) => void) => void;
  /** Delete a message (its sender or an admin; a tombstone stays); `message_deleted`. */
  delete_message: (payload: DeleteMessagePayload, ack: (response: DeleteMessageResponse) => void) => void;
  /** A page of a room's or a direct conversation's messages by seq. */
  get_history: (payload: GetHistoryPayload, ack: (response: GetHistoryResponse) => void) => void;
  /** Move the read marker of a room ({roomId, seq}) or a direct conversation ({with, seq}). */
  mark_read: (...args: [payload: MarkReadPayload] | [payload: MarkReadPayload, ack: (response: MarkReadResponse) => void]) => void;
  /** `user_typing` (isTyping true) to the room's others; ends by itself after a while. */
  typing_start: (...args: [payload: TypingStartPayload] | [payload: TypingStartPayload, ack: (response: TypingStartResponse) => void]) => void;
  /** `user_typing` (isTyping false) to the room's others. */
  typing_stop: (...args: [payload: TypingStopPayload] | [payload: TypingStopPayload, ack: (response: TypingStopResponse) => void]) => void;
  /** Choose a status; `user_updated` to everyone (`offline` is invisible: others get `user_offline`). */
  update_status: (...args: [payload: UpdateStatusPayload] | [payload: UpdateStatusPayload, ack: (response: UpdateStatusResponse) => void]) => void;
  /** The online list, as the ack. */
  get_online_users: (ack: (response: GetOnlineUsersResponse) => void) => void;
}

/** What the server sends on `/`. */
export interface DefaultServerToClientEvents {
  /** The welcome, right after the CONNECT packet. To: the socket concerned. */
  connected: (payload: Connected) => void;
  /** An event sent without an ack was refused (or the welcome failed: event `connect`). To: the socket concerned. */
  error: (payload: EventRefused) => void;
  /** Over the rate limit: events are refused until the window passes (once per window). To: the socket concerned. */
  rate_limit_exceeded: (payload: RateLimit) => void;
  /** The answer to `ping`. To: the socket concerned. */
  pong: (payload: Pong) => void;
  /** This instance is stopping; the connection drops and the client reconnects. To: every socket of the instance. */
  server_shutdown: (payload: ServerShutdown) => void;
  /** Who is online, on connecting. To: the socket concerned. */
  online_users: (payload: OnlineUser[]) => void;
  /** A user's first socket joined a room you are in. To: the chat room (its members' sockets that joined it). */
  room_joined: (payload: Membership) => void;
  /** A user's last socket left a room you are in. To: the chat room (its members' sockets that joined it). */
  room_left: (payload: Membership) => void;
  /** This socket was taken out of a room it may no longer read. To: the socket concerned. */
  removed_from_room: (payload: RemovedFromRoom) => void;
  /** A new message in a room you are in (and catch-up replays), in seq order. To: the chat room (its members' sockets that joined it). */
  room_message: (payload: Message) => void;
  /** A direct message, to the recipient and the sender's other sockets. To: user_<id>. */
  new_message: (payload: Message) => void;
  /** Messages that could not be sent in order; fetch them with get_history. To: the socket concerned. */
  messages_missed: (payload: MessagesMissed) => void;
  /** A message was edited. To: the chat room (its members' sockets that joined it); user_<id>. */
  message_updated: (payload: Message) => void;
  /** A message was deleted (its tombstone). To: the chat room (its members' sockets that joined it); user_<id>. */
  message_deleted: (payload: Message) => void;
  /** Someone started or stopped typing in a room you are in. To: the chat room (its members' sockets that joined it). */
  user_typing: (payload: TypingEvent) => void;
  /** A user's first socket connected (or they became visible). To: all_users. */
  user_online: (payload: UserOnline) => void;
  /** A user's last socket disconnected (or they became invisible). To: all_users. */
  user_offline: (payload: UserOffline) => void;
  /** A user's status changed. To: all_users. */
  user_updated: (payload: StatusChanged) => void;
  /** A user changed their profile. To: all_users. */
  user_update: (payload: ProfileUpdated) => void;
  /** A notification to you (stored; unread ones again after `connected`). To: user_<id>. */
  notification: (payload: Notification) => void;
  /** A broadcast to everyone (or, type room, to a chat room's members). To: all_users; the chat room (its members' sockets that joined it). */
  system_message: (payload: SystemMessage) => void;
  /** A broadcast to the administrators. To: admins. */
  admin_message: (payload: AdminMessage) => void;
  /** A broadcast to a department. To: department_<name>. */
  department_message: (payload: DepartmentMessage) => void;
  /** This socket is being closed (logout, ban, an administrator). To: the socket concerned. */
  session_revoked: (payload: SessionRevoked) => void;
}

/** What clients send on `/chat`: The chat events alone. */
export interface ChatClientToServerEvents {
  /** Join a chat room (made on first join: public, or the `kind` asked; an existing room of another kind is CONFLICT); with `since`, the messages after that seq come first as `room_message`; the others get `room_joined`. */
  join_room: (payload: JoinRoomPayload, ack: (response: JoinRoomResponse) => void) => void;
  /** Leave a chat room; the others get `room_left` when the user's last socket leaves. */
  leave_room: (payload: LeaveRoomPayload, ack: (response: LeaveRoomResponse) => void) => void;
  /** A room's members with their status, and its counts. */
  room_info: (payload: RoomInfoPayload, ack: (response: RoomInfoResponse) => void) => void;
  /** Store a message, then `room_message` to the room (the sending socket must have joined it: NOT_IN_ROOM otherwise), or `new_message` to the recipient (and the sender's other sockets); the same clientMsgId twice stores one message. */
  send_message: (payload: SendMessagePayload, ack: (response: SendMessageResponse) => void) => void;
  /** Change a message's text (its sender or an admin); `message_updated` where it went. */
  edit_message: (payload: EditMessagePayload, ack: (response: EditMessageResponse) => void) => void;
  /** Delete a message (its sender or an admin; a tombstone stays); `message_deleted`. */
  delete_message: (payload: DeleteMessagePayload, ack: (response: DeleteMessageResponse) => void) => void;
  /** A page of a room's or a direct conversation's messages by seq. */
  get_history: (payload: GetHistoryPayload, ack: (response: GetHistoryResponse) => void) => void;
  /** Move the read marker of a room ({roomId, seq}) or a direct conversation ({with, seq}). */
  mark_read: (...args: [payload: MarkReadPayload] | [payload: MarkReadPayload, ack: (response: MarkReadResponse) => void]) => void;
  /** `user_typing` (isTyping true) to the room's others; ends by itself after a while. */
  typing_start: (...args: [payload: TypingStartPayload] | [payload: TypingStartPayload, ack: (response: TypingStartResponse) => void]) => void;
  /** `user_typing` (isTyping false) to the room's others. */
  typing_stop: (...args: [payload: TypingStopPayload] | [payload: TypingStopPayload, ack: (response: TypingStopResponse) => void]) => void;
}

/** What the server sends on `/chat`. */
export interface ChatServerToClientEvents {
  /** An event sent without an ack was refused (or the welcome failed: event `connect`). To: the socket concerned. */
  error: (payload: EventRefused) => void;
  /** Over the rate limit: events are refused until the window passes (once per window). To: the socket concerned. */
  rate_limit_exceeded: (payload: RateLimit) => void;
  /** This instance is stopping; the connection drops and the client reconnects. To: every socket of the instance. */
  server_shutdown: (payload: ServerShutdown) => void;
  /** A user's first socket joined a room you are in. To: the chat room (its members' sockets that joined it). */
  room_joined: (payload: Membership) => void;
  /** A user's last socket left a room you are in. To: the chat room (its members' sockets that joined it). */
  room_left: (payload: Membership) => void;
  /** This socket was taken out of a room it may no longer read. To: the socket concerned. */
  removed_from_room: (payload: RemovedFromRoom) => void;
  /** A new message in a room you are in (and catch-up replays), in seq order. To: the chat room (its members' sockets that joined it). */
  room_message: (payload: Message) => void;
  /** A direct message, to the recipient and the sender's other sockets. To: user_<id>. */
  new_message: (payload: Message) => void;
  /** Messages that could not be sent in order; fetch them with get_history. To: the socket concerned. */
  messages_missed: (payload: MessagesMissed) => void;
  /** A message was edited. To: the chat room (its members' sockets that joined it); user_<id>. */
  message_updated: (payload: Message) => void;
  /** A message was deleted (its tombstone). To: the chat room (its members' sockets that joined it); user_<id>. */
  message_deleted: (payload: Message) => void;
  /** Someone started or stopped typing in a room you are in. To: the chat room (its members' sockets that joined it). */
  user_typing: (payload: TypingEvent) => void;
  /** A notification to you (stored; unread ones again after `connected`). To: user_<id>. */
  notification: (payload: Notification) => void;
  /** A broadcast to everyone (or, type room, to a chat room's members). To: all_users; the chat room (its members' sockets that joined it). */
  system_message: (payload: SystemMessage) => void;
  /** A broadcast to a department. To: department_<name>. */
  department_message: (payload: DepartmentMessage) => void;
  /** This socket is being closed (logout, ban, an administrator). To: the socket concerned. */
  session_revoked: (payload: SessionRevoked) => void;
}

/** What clients send on `/presence`: Status and the online list alone. */
export interface PresenceClientToServerEvents {
  /** Choose a status; `user_updated` to everyone (`offline` is invisible: others get `user_offline`). */
  update_status: (...args: [payload: UpdateStatusPayload] | [payload: UpdateStatusPayload, ack: (response: UpdateStatusResponse) => void]) => void;
  /** The online list, as the ack. */
  get_online_users: (ack: (response: GetOnlineUsersResponse) => void) => void;
}

/** What the server sends on `/presence`. */
export interface PresenceServerToClientEvents {
  /** An event sent without an ack was refused (or the welcome failed: event `connect`). To: the socket concerned. */
  error: (payload: EventRefused) => void;
  /** Over the rate limit: events are refused until the window passes (once per window). To: the socket concerned. */
  rate_limit_exceeded: (payload: RateLimit) => void;
  /** This instance is stopping; the connection drops and the client reconnects. To: every socket of the instance. */
  server_shutdown: (payload: ServerShutdown) => void;
  /** Who is online, on connecting. To: the socket concerned. */
  online_users: (payload: OnlineUser[]) => void;
  /** A user's first socket connected (or they became visible). To: all_users. */
  user_online: (payload: UserOnline) => void;
  /** A user's last socket disconnected (or they became invisible). To: all_users. */
  user_offline: (payload: UserOffline) => void;
  /** A user's status changed. To: all_users. */
  user_updated: (payload: StatusChanged) => void;
  /** A user changed their profile. To: all_users. */
  user_update: (payload: ProfileUpdated) => void;
  /** A notification to you (stored; unread ones again after `connected`). To: user_<id>. */
  notification: (payload: Notification) => void;
  /** A broadcast to everyone (or, type room, to a chat room's members). To: all_users; the chat room (its members' sockets that joined it). */
  system_message: (payload: SystemMessage) => void;
  /** This socket is being closed (logout, ban, an administrator). To: the socket concerned. */
  session_revoked: (payload: SessionRevoked) => void;
}

/** What clients send on `/admin`: Administrators only: broadcasts, live stats, moderation. */
export interface AdminClientToServerEvents {
  /** A recorded broadcast: `system_message` to everyone, `admin_message` to the admins, `department_message` to a department, `system_message` (type room) to a chat room, or a `notification` to one user. */
  broadcast: (payload: BroadcastPayload, ack: (response: BroadcastResponse) => void) => void;
  /** Every live instance's figures and their totals. */
  get_stats: (ack: (response: GetStatsResponse) => void) => void;
  /** Close every socket of a user, on every instance (`session_revoked` first). */
  disconnect_user: (payload: DisconnectUserPayload, ack: (response: DisconnectUserResponse) => void) => void;
  /** Change a user's role (a demotion takes them out of the private rooms they are not a member of, on every instance, before it commits). */
  set_role: (payload: SetRolePayload, ack: (response: SetRoleResponse) => void) => void;
  /** Ban a user: their tokens stop working and every socket of theirs is closed. */
  ban_user: (payload: BanUserPayload, ack: (response: BanUserResponse) => void) => void;
}

/** What the server sends on `/admin`. */
export interface AdminServerToClientEvents {
  /** An event sent without an ack was refused (or the welcome failed: event `connect`). To: the socket concerned. */
  error: (payload: EventRefused) => void;
  /** Over the rate limit: events are refused until the window passes (once per window). To: the socket concerned. */
  rate_limit_exceeded: (payload: RateLimit) => void;
  /** This instance is stopping; the connection drops and the client reconnects. To: every socket of the instance. */
  server_shutdown: (payload: ServerShutdown) => void;
  /** A notification to you (stored; unread ones again after `connected`). To: user_<id>. */
  notification: (payload: Notification) => void;
  /** A broadcast to everyone (or, type room, to a chat room's members). To: all_users; the chat room (its members' sockets that joined it). */
  system_message: (payload: SystemMessage) => void;
  /** A broadcast to the administrators. To: admins. */
  admin_message: (payload: AdminMessage) => void;
  /** This socket is being closed (logout, ban, an administrator). To: the socket concerned. */
  session_revoked: (payload: SessionRevoked) => void;
  /** The cluster's figures, on connecting and every 3 s. To: admin_stats (every admin socket). */
  stats: (payload: Stats) => void;
}

/** The default namespace `/`, which front ends use: `Socket<ServerToClientEvents, ClientToServerEvents>`. */
export type ClientToServerEvents = DefaultClientToServerEvents;
export type ServerToClientEvents = DefaultServerToClientEvents;

/** Each namespace's event maps, by its name. */
export interface NamespaceEvents {
  "/": { clientToServer: DefaultClientToServerEvents; serverToClient: DefaultServerToClientEvents };
  "/chat": { clientToServer: ChatClientToServerEvents; serverToClient: ChatServerToClientEvents };
  "/presence": { clientToServer: PresenceClientToServerEvents; serverToClient: PresenceServerToClientEvents };
  "/admin": { clientToServer: AdminClientToServerEvents; serverToClient: AdminServerToClientEvents };
}

/** A socket.io-client socket of a namespace: `const chat: NexusSocket<"/chat"> = io(url + "/chat")`. */
export type NexusSocket<N extends keyof NamespaceEvents = "/"> = Socket<NamespaceEvents[N]["serverToClient"], NamespaceEvents[N]["clientToServer"]>;
