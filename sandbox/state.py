"""SQLite state of the sandbox: each vendor module registers its tables and its seed data."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from config.clock import Clock, system_clock

SeedFunction = Callable[[sqlite3.Connection, datetime], None]


@dataclass(frozen=True)
class VendorSchema:
    vendor: str
    ddl: str
    seed: SeedFunction | None = None


@dataclass
class SandboxState:
    """One SQLite database (a file or `:memory:`) holding every emulated vendor's records."""

    path: str
    schemas: list[VendorSchema] = field(default_factory=list)
    # Seeds are relative to this clock's now: a pinned clock seeds a pinned calendar.
    clock: Clock = system_clock
    conn: sqlite3.Connection = field(init=False)

    def __post_init__(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # The sandbox serves every request on one event-loop thread; sqlite calls are short.
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(
            "PRAGMA journal_mode=WAL" if self.path != ":memory:" else "PRAGMA foreign_keys=ON"
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS sandbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )

    def install(self, schemas: list[VendorSchema]) -> None:
        """Create every table; seed only a database that has never been seeded."""
        self.schemas = schemas
        for schema in schemas:
            self.conn.executescript(schema.ddl)
        seeded = self.conn.execute("SELECT 1 FROM sandbox_meta WHERE key='seeded_at'").fetchone()
        if seeded is None:
            self._seed()

    def reset(self) -> None:
        """Drop every record and seed again."""
        with self.transaction():
            for table in self.tables():
                self.conn.execute(f'DELETE FROM "{table}"')
        self._seed()

    def _seed(self) -> None:
        now = self.clock()
        with self.transaction():
            for schema in self.schemas:
                if schema.seed is not None:
                    schema.seed(self.conn, now)
            self.conn.execute(
                "INSERT OR REPLACE INTO sandbox_meta VALUES ('seeded_at', ?)", (now.isoformat(),)
            )

    def tables(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        return [row["name"] for row in rows]

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        return {
            table: [dict(row) for row in self.conn.execute(f'SELECT * FROM "{table}"')]
            for table in self.tables()
            if table != "sandbox_meta"
        }

    def transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    def close(self) -> None:
        self.conn.close()


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
