"""JWT access and refresh tokens: issue, resolve, revoke (flask-jwt-extended does the crypto)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import jwt as pyjwt
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from sqlalchemy import delete, select

from nexus.errors import NexusError
from nexus.extensions import db
from nexus.models import RevokedToken, User, utcnow


@dataclass(frozen=True)
class TokenIdentity:
    """A verified token and the live account behind it."""

    user: User
    jti: str
    token_type: str
    expires_at: float | None
    claims: dict[str, Any]


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
    if not isinstance(token, str) or not token.strip():
        raise NexusError("INVALID_TOKEN", "The token must be a non-empty string.")
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if len(token) > 4096:
        raise NexusError("INVALID_TOKEN")
    try:
        claims = decode_token(token)
    except pyjwt.ExpiredSignatureError:
        raise NexusError("TOKEN_EXPIRED") from None
    except Exception:  # any malformed, forged or wrongly-signed token
        raise NexusError("INVALID_TOKEN") from None
    if claims.get("type") != expected_type:
        raise NexusError("INVALID_TOKEN", f"An {expected_type} token is required.")
    return _identity(claims)


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


def _identity(claims: dict[str, Any]) -> TokenIdentity:
    if is_revoked(claims.get("jti", "")):
        raise NexusError("TOKEN_REVOKED")
    user_id = _user_id(claims.get("sub"))
    user = db.session.get(User, user_id) if user_id is not None else None
    if user is None:
        raise NexusError("INVALID_TOKEN", "The token's user no longer exists.")
    if user.is_banned:
        raise NexusError("USER_BANNED")
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
