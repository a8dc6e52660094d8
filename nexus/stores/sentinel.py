"""Redis behind Sentinel: one `redis+sentinel://` URL (nexus.config.SentinelAddress) turned into
what each client library wants, so that the shared stores, the rate limits, the message queue
and the Celery worker all follow the primary that the Sentinels name, through a failover.

Every client asks the Sentinels for the primary when it opens a connection; a connection that
breaks (the primary died) is opened again on the primary the Sentinels name by then. Nothing
here talks to Redis at import or construction time.
"""
from __future__ import annotations

from typing import Any

from nexus.config import SentinelAddress, is_sentinel_url

#: Asking one Sentinel who the primary is: a dead Sentinel must not hold up the next one for long.
SENTINEL_TIMEOUT_S = 1.0


def sentinel_options(address: SentinelAddress) -> dict[str, Any]:
    """Connection options of the Sentinels themselves (their own password, short timeouts)."""
    return {
        "username": None,
        "password": address.sentinel_password,
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
    }


def _blocking_pool_class() -> type:
    from redis import BlockingConnectionPool
    from redis.sentinel import SentinelConnectionPool

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        """A pool that asks the Sentinels for the primary, and makes callers wait their turn
        (up to `timeout`) beyond `max_connections`, as nexus.stores.redis.connect does."""

    return BlockingSentinelPool


def connect(
    url: str, *, pool_size: int, pool_wait_s: float, socket_connect_timeout: float, socket_timeout: float,
    health_check_interval: int, decode_responses: bool = True,
) -> Any:
    """A redis-py client of the primary that the Sentinels of `url` name, following failovers."""
    from redis.sentinel import Sentinel

    address = SentinelAddress.parse(url)
    sentinel = Sentinel(list(address.sentinels), sentinel_kwargs=sentinel_options(address))
    return sentinel.master_for(
        address.master,
        connection_pool_class=_blocking_pool_class(),
        max_connections=pool_size,
        timeout=pool_wait_s,
        db=address.db,
        username=address.username,
        password=address.password,
        socket_connect_timeout=socket_connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=health_check_interval,
        decode_responses=decode_responses,
    )


def limits_storage(url: str) -> tuple[str, dict[str, Any]]:
    """The `limits` storage URI and options (flask-limiter's RATELIMIT_STORAGE_URI/OPTIONS too)
    for a shared-state URL: a Sentinel URL becomes limits' own `redis+sentinel://` form, with
    every counter on the primary (a replica may lag behind the counts just written)."""
    if not is_sentinel_url(url):
        return url, {}
    address = SentinelAddress.parse(url)
    hosts = ",".join(_host_port(host, port) for host, port in address.sentinels)
    options: dict[str, Any] = {
        "use_replicas": False,
        "db": address.db,
        "socket_timeout": 2.0,
        "socket_connect_timeout": 2.0,
        # limits hands the URI's credentials to the Sentinels too unless told otherwise.
        "sentinel_kwargs": sentinel_options(address),
    }
    if address.username:
        options["username"] = address.username
    if address.password:
        options["password"] = address.password
    return f"redis+sentinel://{hosts}/{address.master}", options


def kombu_broker(url: str) -> tuple[str, dict[str, Any]]:
    """kombu's `sentinel://host:port;sentinel://host:port` URL and the transport options that
    name the primary (`master_name`) and reach the Sentinels; other URLs pass unchanged."""
    if not is_sentinel_url(url):
        return url, {}
    address = SentinelAddress.parse(url)
    auth = ""
    if address.username or address.password:
        from urllib.parse import quote

        auth = f"{quote(address.username or '', safe='')}:{quote(address.password or '', safe='')}@"
    chunks = [f"sentinel://{auth}{_host_port(host, port)}/{address.db}" for host, port in address.sentinels]
    return ";".join(chunks), {"master_name": address.master, "sentinel_kwargs": sentinel_options(address)}


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
