"""One `redis+sentinel://` URL, as each client library gets it: redis-py, limits, kombu, Celery."""
from __future__ import annotations

from nexus.config import Config
from nexus.stores.sentinel import kombu_broker, limits_storage

URL = "redis+sentinel://:pw@s1:26379,s2:26380/cache/2?sentinel_password=spw"
SENTINELS = {"username": None, "password": "spw", "socket_timeout": 1.0, "socket_connect_timeout": 1.0}


def test_plain_urls_pass_unchanged():
    assert limits_storage("redis://r:6379/0") == ("redis://r:6379/0", {})
    assert kombu_broker("amqp://guest:guest@mq//") == ("amqp://guest:guest@mq//", {})


def test_limits_gets_its_own_sentinel_uri_and_the_primary_only():
    uri, options = limits_storage(URL)
    assert uri == "redis+sentinel://s1:26379,s2:26380/cache"
    assert options["use_replicas"] is False  # a replica may not have the counts just written
    assert options["db"] == 2 and options["password"] == "pw"
    assert options["sentinel_kwargs"] == SENTINELS  # not the primary's password


def test_limits_builds_a_sentinel_storage_without_connecting():
    from limits.storage import RedisSentinelStorage, storage_from_string

    uri, options = limits_storage(URL)
    storage = storage_from_string(uri, key_prefix="t:rl", **options)
    assert isinstance(storage, RedisSentinelStorage)
    assert storage.service_name == "cache"
    assert storage.sentinel.sentinel_kwargs["password"] == "spw"
    assert storage.sentinel.connection_kwargs["password"] == "pw"


def test_kombu_gets_its_sentinel_form_and_the_master_name():
    url, options = kombu_broker(URL)
    assert url == "sentinel://:pw@s1:26379/2;sentinel://:pw@s2:26380/2"
    assert options == {"master_name": "cache", "sentinel_kwargs": SENTINELS}


def test_the_queue_connections_follow_the_sentinels():
    from nexus.realtime.queue import QueueEmitter

    manager = QueueEmitter(URL, channel="t")
    try:
        for connection in (manager.publisher_connection, manager._publisher_connection()):
            assert connection.transport_cls == "sentinel"
            assert connection.transport_options["master_name"] == "cache"
            assert connection.transport_options["sentinel_kwargs"] == SENTINELS
            assert connection.alt == ["sentinel://:pw@s1:26379/2", "sentinel://:pw@s2:26380/2"]
    finally:
        manager.close(timeout=0)


def test_the_celery_worker_uses_the_sentinels_for_broker_and_results(tmp_path):
    from nexus.worker import celery_settings

    config = Config.from_env({"NEXUS_INSTANCE_PATH": str(tmp_path), "MESSAGE_QUEUE_URL": URL})
    settings = celery_settings(config)
    assert settings["broker_url"] == settings["result_backend"] == kombu_broker(URL)[0]
    assert settings["broker_transport_options"] == settings["result_backend_transport_options"] == {
        "master_name": "cache", "sentinel_kwargs": SENTINELS}
    plain = celery_settings(config.with_overrides(message_queue_url="redis://r:6379/0"))
    assert "broker_transport_options" not in plain and plain["result_backend"] == "redis://r:6379/0"


def test_the_shared_stores_connect_through_the_sentinels():
    from redis.sentinel import SentinelConnectionPool

    from nexus.stores.redis import POOL_SIZE, connect

    client = connect(URL)  # nothing is contacted until a command is sent
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "cache"
    assert pool.max_connections == POOL_SIZE and pool.timeout > 0  # bounded and blocking, as without Sentinel
    assert pool.connection_kwargs["password"] == "pw" and pool.connection_kwargs["db"] == 2
    assert [c.connection_pool.connection_kwargs["password"] for c in pool.sentinel_manager.sentinels] == ["spw"] * 2


def test_ipv6_sentinels_keep_their_brackets():
    url = "redis+sentinel://[::1]:26379,[fd00::2]/m"
    assert limits_storage(url)[0] == "redis+sentinel://[::1]:26379,[fd00::2]:26379/m"
    assert kombu_broker(url)[0] == "sentinel://[::1]:26379/0;sentinel://[fd00::2]:26379/0"
