"""The store interfaces the services use; memory.py and redis.py implement them."""
from __future__ import annotations

from typing import Protocol


class Tally(Protocol):
    """Who is present in a scope ("presence", "room:general"), counting each member once
    however many sockets it has, on however many instances."""

    def add(self, scope: str, member: str) -> bool:
        """One more socket of a member; True if it is the member's first anywhere."""

    def remove(self, scope: str, member: str) -> bool:
        """One socket fewer; True if it was the member's last anywhere."""

    def enter(self, scope: str, member: str) -> int:
        """`add` for a versioned scope (presence): 0, or the member's new version if this is its
        first socket anywhere (counted and versioned in one atomic step)."""

    def leave(self, scope: str, member: str) -> int:
        """`remove` for a versioned scope: 0, or the member's new version if this was its last socket."""

    def bump(self, scope: str, member: str) -> int:
        """Raise a member's version after another change others see (status, away); the new version."""

    def version(self, scope: str, member: str) -> int:
        """A member's current version (0 if it never had one)."""

    def versions(self, scope: str, members: list[str]) -> list[int]:
        """The current versions of several members, in order (as `version`, for announcing them)."""

    def state(self, scope: str, member: str) -> tuple[bool, int]:
        """Whether the member is present on a live instance, and its version, read together."""

    def versioned_members(self, scope: str) -> dict[str, int]:
        """The members present on every live instance, each with its version, read together."""

    def restate(self, scope: str, members: list[str]) -> list[tuple[bool, int]]:
        """For each member, in order: whether it is present on a live instance, and a new version
        raised in the same atomic step. What a repair announces: its version was never handed out
        before, so no client can hold another state under it."""

    def members(self, scope: str) -> set[str]:
        """The members present in a scope, on every live instance."""

    def reap(self) -> list[tuple[str, str]]:
        """Forget what dead instances held; the (scope, member) pairs now absent everywhere (the
        versions of versioned ones are raised in the same step)."""

    def heartbeat(self) -> list[tuple[str, str]]:
        """Tell the others this instance is alive; if its entries had been reaped meanwhile (a long
        stall), put them back and return the (scope, member) pairs that are present again."""

    def close(self) -> None:
        """Withdraw this instance's entries (clean shutdown)."""


class PresenceStore(Protocol):
    """Per-user presence details shared by every instance."""

    def chosen_status(self, user_id: int) -> str | None:
        """The status the user chose (online, busy, offline), if it is still remembered."""

    def choose_status(self, user_id: int, status: str) -> None:
        """Remember the user's chosen status while they are connected."""

    def remember_status(self, user_id: int, seconds: int) -> None:
        """The user went offline: keep their chosen status for `seconds` more."""

    def touch(self, user_id: int, at: float) -> None:
        """Record activity (epoch seconds)."""

    def last_activity(self, user_id: int) -> float | None:
        """The last recorded activity (epoch seconds)."""

    def idle_since(self, cutoff: float, limit: int) -> list[int]:
        """Users whose last recorded activity is before `cutoff`."""

    def forget_activity(self, user_id: int) -> None:
        """The user is offline: stop tracking their activity."""

    def set_away(self, user_id: int) -> bool:
        """Mark the user away after inactivity (and drop them from the idle index until their next
        activity); True if this call made the change."""

    def clear_away(self, user_id: int) -> bool:
        """Activity again; True if the user had been marked away."""

    def is_away(self, user_id: int) -> bool:
        """True while the user is marked away after inactivity."""

    def statuses(self, user_ids: list[int]) -> dict[int, tuple[str | None, bool]]:
        """Chosen status and away flag of each user, in one read."""


class StatsBoard(Protocol):
    """The latest stats of every live instance."""

    def publish(self, instance_id: str, stats: dict) -> None:
        """Post this instance's stats (they count as live for STATS_TTL_S)."""

    def all(self) -> list[dict]:
        """The stats of every instance that posted within STATS_TTL_S."""


STATS_TTL_S = 15
