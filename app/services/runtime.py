"""The process runtime: settings, database, registry and search parser, built by create_app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.fhir.registry import Registry, build_registry
from app.fhir.search import SearchParser
from app.services.resources import ResourceService
from app.storage.db import make_engine, session_factory, transaction
from app.storage.repository import Repository


@dataclass
class Runtime:
    """Everything a request needs that outlives it. Holds no patient state: the database does."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    registry: Registry
    parser: SearchParser

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """Connect to the configured database and load the resource registry."""
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        registry = build_registry()
        parser = SearchParser(
            registry,
            default_count=settings.default_page_size,
            max_count=settings.max_page_size,
            max_include=settings.max_include,
        )
        return cls(settings, engine, session_factory(engine), registry, parser)

    @contextmanager
    def resources(self, base_url: str | None, *, write: bool = False) -> Iterator[ResourceService]:
        """A ResourceService inside one database transaction (committed when the block ends)."""
        with transaction(self.sessions, write=write) as session:
            yield ResourceService(
                Repository(session, self.registry, base_url), self.registry, self.parser
            )
