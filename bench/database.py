"""A fresh PostgreSQL database for each benchmark run, so no run measures an
earlier run's rows and a new machine needs nothing created by hand."""

from urllib.parse import urlsplit, urlunsplit

import psycopg


def recreate_database(url: str) -> None:
    """Drop and create the database named in `url` (a postgres:// URL)."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
