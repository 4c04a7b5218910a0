"""The background sealer: links each process's committed audit records into the chain."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from app.audit.trail import AuditTrail
from app.storage.db import transaction

log = logging.getLogger("rix.audit")


class Sealer:
    """Seals pending AuditEvents every `interval` seconds in a daemon thread.

    Every process runs one; they queue on the chain head's lock, so running several is safe
    and records left by a process that died are sealed by the others.
    """

    def __init__(self, sessions: sessionmaker[Session], trail: AuditTrail, interval: float):
        self.sessions = sessions
        self.trail = trail
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sealing in the background (idempotent)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rix-audit-sealer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop, sealing what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.seal_once()

    def seal_once(self) -> int:
        """Seal now; returns how many records were linked (errors are logged, not raised)."""
        try:
            with transaction(self.sessions) as session:
                if not self.trail.pending(session):
                    return 0  # idle: no write lock taken
            with transaction(self.sessions, write=True) as session:
                return self.trail.seal(session)
        except Exception:
            log.exception("sealing the audit chain failed; the next pass retries")
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.seal_once()
