"""JWT access and refresh tokens: issue, resolve, revoke (flask-jwt-extended does the crypto).

A socket's token is resolved with one statement (the account's fields and whether the token is
revoked) and the answer is kept by this instance for IDENTITY_TTL_S (`IdentityCache`), so the
sockets of a user connecting again, or a browser's tabs, cost no database read. What would make a
kept answer wrong is forgotten before it is acted on: a revocation (logout) or a change of the
account (ban, role, profile) drops the entries it concerns here and, through the control channel
(nexus.realtime.control), on every other instance, which acknowledge it before the change is
answered; the short lifetime bounds what a lost order could leave.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from threading import Lock
from typing import Any, Callable, NoReturn

import jwt as pyjwt
from flask import current_app, has_app_context
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from sqlalchemy import delete, select

from nexus.errors import NexusError
from nexus.extensions import db, per_app
from nexus.models import RevokedToken, User, utcnow
from nexus.services import reads

#: How long this instance keeps a socket token's verified account.
IDENTITY_TTL_S = 5.0
#: Tokens kept at most (the oldest are dropped first).
IDENTITY_CACHE_MAX = 20_000
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True)
class TokenIdentity:
    """A verified token and the live account behind it."""

    user: User
    jti: str
    token_type: str
    expires_at: float | None
    claims: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Account:
    """What a socket keeps of its account (read with its token, in one statement)."""

    id: int
    username: str
    display_name: str
    role: str
    department: str | None

    @property
    def is_banned(self) -> bool:
        return self.role == "banned"


@dataclass(frozen=True, slots=True)
class SocketIdentity:
    """A verified access token of a socket and its account."""

    account: Account
    jti: str
    expires_at: float | None


class IdentityCache:
    """Socket tokens this instance verified recently, by the token's text, for `ttl_s` each.

    `forget` drops the entries of a token id or of a user, and raises `epoch`: an answer read from
    the database before a `forget` may predate the change that caused it, so `put` keeps it only
    if no `forget` happened since its read began.
    """

    def __init__(self, ttl_s: float = IDENTITY_TTL_S, max_entries: int = IDENTITY_CACHE_MAX,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.epoch = 0
        self._lock = Lock()
        # In insertion order, which is also the order they expire in.
        self._entries: dict[str, tuple[float, SocketIdentity]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> SocketIdentity | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if self.clock() >= entry[0]:
            with self._lock:
                if self._entries.get(token) is entry:
                    del self._entries[token]
            return None
        return entry[1]

    def put(self, token: str, identity: SocketIdentity, epoch: int) -> None:
        """Keep a verified token, unless something was forgotten since `epoch` was read."""
        with self._lock:
            if epoch != self.epoch:
                return
            entries = self._entries
            entries.pop(token, None)
            now = self.clock()
            # The expired ones go first (they lead the order), then the oldest over the bound.
            while entries and (len(entries) >= self.max_entries or entries[next(iter(entries))][0] <= now):
                del entries[next(iter(entries))]
            entries[token] = (now + self.ttl_s, identity)

    def forget(self, *, user_id: int | None = None, jti: str | None = None) -> int:
        """Drop the tokens of a user (`user_id`) or one token (`jti`); how many were kept."""
        with self._lock:
            self.epoch += 1
            gone = [
                token for token, (_, identity) in self._entries.items()
                if (user_id is not None and identity.account.id == user_id) or (jti is not None and identity.jti == jti)
            ]
            for token in gone:
                del self._entries[token]
        return len(gone)

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._entries.clear()


def identity_cache(app: Any = None) -> IdentityCache:
    """This instance's IdentityCache (one per app, made on first use)."""
    return per_app("nexus.identities", IdentityCache, app)


def issue_tokens(user: User, *, ttl_s: int) -> dict[str, Any]:
    """An access and a refresh token for an account, in the login response's shape."""
    claims = _claims(user)
    return {
        "accessToken": create_access_token(identity=str(user.id), additional_claims=claims),
        "refreshToken": create_refresh_token(identity=str(user.id), additional_claims=claims),
        "tokenType": "Bearer",
        "expiresIn": ttl_s,
    }


def issue_access_token(user: User) -> str:
    """A fresh access token (refresh, CLI)."""
    return create_access_token(identity=str(user.id), additional_claims=_claims(user))


def resolve_token(token: Any, *, expected_type: str = "access") -> TokenIdentity:
    """Verify a token and load its account; raises NexusError with the reason it is refused."""
    return _identity(_verified_claims(_token_text(token), expected_type))


def resolve_socket_token(token: Any) -> SocketIdentity:
    """Verify a socket's access token and read its account, or take both from this instance's
    IdentityCache; raises NexusError with the reason it is refused (none is kept)."""
    text = _token_text(token)
    cache = identity_cache()
    kept = cache.get(text)
    if kept is not None:
        if kept.expires_at is not None and time.time() >= kept.expires_at:
            raise NexusError("TOKEN_EXPIRED")
        return kept
    epoch = cache.epoch
    claims = _verified_claims(text, "access")
    identity = SocketIdentity(account=_account(claims), jti=claims["jti"], expires_at=claims.get("exp"))
    cache.put(text, identity, epoch)
    return identity


def forget_identities(*, user_id: int | None = None, jti: str | None = None) -> None:
    """A token was revoked or an account changed (committed): the verified tokens that concern them
    are forgotten here and on every other instance before this returns (see the module docstring)."""
    if not has_app_context():
        return
    control = current_app.extensions.get("nexus.control")
    if control is not None:
        control.forget_identities(user_id=user_id, jti=jti)
    else:
        identity_cache().forget(user_id=user_id, jti=jti)


def identity_from_claims(claims: dict[str, Any]) -> TokenIdentity:
    """The account behind claims flask-jwt-extended already verified (REST requests)."""
    return _identity(claims)


def is_revoked(jti: str) -> bool:
    """True if a token id was revoked (the blocklist lives in the database, shared by instances)."""
    return db.session.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti)) is not None


def revoke(claims: dict[str, Any]) -> None:
    """Add a verified token to the blocklist until it would have expired."""
    jti = claims["jti"]
    if is_revoked(jti):
        return
    exp = claims.get("exp")
    expires_at = datetime.fromtimestamp(exp, timezone.utc) if exp else utcnow()
    db.session.add(
        RevokedToken(
            jti=jti,
            user_id=_user_id(claims.get("sub")),
            token_type=claims.get("type", "access"),
            expires_at=expires_at,
        )
    )
    db.session.commit()
    forget_identities(jti=jti)


def revoke_encoded(token: str, *, user_id: int, expected_type: str) -> None:
    """Revoke a token the client handed in, if it is valid and belongs to that user."""
    identity = resolve_token(token, expected_type=expected_type)
    if identity.user.id != user_id:
        raise NexusError("FORBIDDEN", "That token belongs to another user.")
    revoke(identity.claims)


def purge_expired_revocations() -> int:
    """Forget revocations of tokens that have expired anyway; returns how many."""
    result = db.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
    db.session.commit()
    return result.rowcount or 0


def _token_text(token: Any) -> str:
    if not isinstance(token, str) or not token.strip():
        raise NexusError("INVALID_TOKEN", "The token must be a non-empty string.")
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if len(token) > MAX_TOKEN_LENGTH:
        raise NexusError("INVALID_TOKEN")
    return token


def _verified_claims(token: str, expected_type: str) -> dict[str, Any]:
    try:
        claims = decode_token(token)
    except pyjwt.ExpiredSignatureError:
        raise NexusError("TOKEN_EXPIRED") from None
    except Exception:  # any malformed, forged or wrongly-signed token
        raise NexusError("INVALID_TOKEN") from None
    if claims.get("type") != expected_type:
        raise NexusError("INVALID_TOKEN", f"An {expected_type} token is required.")
    return claims


def _revoked(jti: str) -> Any:
    return select(RevokedToken.jti).where(RevokedToken.jti == jti).exists()


def _refuse(revoked: bool, user: User | Account) -> None:
    """The refusals in the order clients are told them: revoked, then banned."""
    if revoked:
        raise NexusError("TOKEN_REVOKED")
    if user.is_banned:
        raise NexusError("USER_BANNED")


def _no_account(revoked: bool) -> NoReturn:
    if revoked:
        raise NexusError("TOKEN_REVOKED")
    raise NexusError("INVALID_TOKEN", "The token's user no longer exists.")


def _account(claims: dict[str, Any]) -> Account:
    """The account of verified socket claims, and whether the token is revoked, in one statement
    (a second one only when the account does not exist)."""
    jti, user_id = claims.get("jti", ""), _user_id(claims.get("sub"))
    with reads.autocommit() as connection:
        row = None
        if user_id is not None:
            row = connection.execute(
                select(User.id, User.username, User.display_name, User.role, User.department, _revoked(jti))
                .where(User.id == user_id)
            ).first()
        if row is None:
            _no_account(bool(connection.scalar(select(_revoked(jti)))))
    account = Account(id=row[0], username=row[1], display_name=row[2], role=row[3], department=row[4])
    _refuse(bool(row[5]), account)
    return account


def _identity(claims: dict[str, Any]) -> TokenIdentity:
    jti, user_id = claims.get("jti", ""), _user_id(claims.get("sub"))
    row = None
    if user_id is not None:
        row = db.session.execute(select(User, _revoked(jti)).where(User.id == user_id)).first()
    if row is None:
        _no_account(bool(db.session.scalar(select(_revoked(jti)))))
    user, revoked = row
    _refuse(bool(revoked), user)
    return TokenIdentity(
        user=user,
        jti=claims["jti"],
        token_type=claims.get("type", "access"),
        expires_at=claims.get("exp"),
        claims=claims,
    )


def _claims(user: User) -> dict[str, Any]:
    # userId for clients that decode the token themselves and read decoded.userId; role is informative only:
    # authorization always uses the role stored in the database.
    return {"userId": str(user.id), "username": user.username, "role": user.role}


def _user_id(subject: Any) -> int | None:
    try:
        return int(subject)
    except (TypeError, ValueError):
        return None
