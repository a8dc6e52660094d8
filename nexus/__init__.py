"""Nexus: a real-time backend on Flask-SocketIO and gevent.

This module stays import-light: gevent must monkey-patch before Flask, redis or psycopg
are imported, and every entry point (wsgi.py, `nexus`) patches first, then builds the app.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from nexus.config import Config


def create_app(config: "Config | Mapping[str, Any] | None" = None) -> "Flask":
    """Build the application: configuration, extensions, blueprints, namespaces, CLI."""
    from nexus.app import create_app as build

    return build(config)
