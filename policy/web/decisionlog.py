"""The decision log: one JSON line per decision, encoded in the request thread and written by
a background thread in batches; the stream handler that keeps lines whole."""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import sys
import threading
from collections.abc import Iterable, Sequence

from policy.evaluate import Violation
from policy.k8s.admission import Finding

LOGGER = "policy.web"
LOG_INTERVAL = 0.1
"""Seconds between writes of the decision log (lines wait at most this long)."""
LOG_BATCH = 1000
"""Lines waiting that wake the decision log writer before its interval is up."""
FRAGMENT_ENTRIES = 4096
"""Encoded findings the decision log remembers (cleared when full) ..."""
FRAGMENT_BYTES = 4 * 1024 * 1024
"""... or when their text passes this many bytes."""
_LOG_JSON = json.JSONEncoder(default=str)
"""Encodes log lines (one encoder, not one built per `json.dumps(..., default=str)` call)."""


# --- logging -------------------------------------------------------------------------------


def _log(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    logger.log(level, json.dumps({"event": event, **fields}, default=str, sort_keys=False))


class DecisionLog:
    """Decision log lines, written in batches by one writer thread.

    A request only appends its event to a buffer: no lock on the log handler, no JSON
    encoding, and no thread wake-up in the request path. The writer wakes every
    `interval` seconds (or as soon as `batch` lines are waiting), encodes what is buffered
    and hands the lines to the logger in order. Profiling the warm webhook showed request
    threads queueing on `Handler.acquire` when they logged themselves, and a writer woken
    for every line cost a context switch (and a GIL hand-off) per review.

    `flush()` waits until every line given so far has been handed to the logger (tests, and
    worker shutdown through `atexit`). The thread starts on first use in each process, so a
    fork (gunicorn's preload) gets its own.
    """

    def __init__(
        self, logger: logging.Logger, *, interval: float = LOG_INTERVAL, batch: int = LOG_BATCH
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.batch = batch
        self._pending: collections.deque[tuple[int, str, dict[str, object]] | threading.Event]
        self._pending = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pid = 0
        # JSON of findings by (image, where, decision); only the writer thread uses it
        self._fragments: dict[tuple[str, str, int], tuple[object, str]] = {}
        self._fragment_bytes = 0
        atexit.register(self.flush)

    def log(self, level: int, event: str, **fields: object) -> None:
        self.log_fields(level, event, fields)

    def log_fields(self, level: int, event: str, fields: dict[str, object]) -> None:
        """`log` with the fields as a dict (the line keeps it: do not change it after)."""
        if not self.logger.isEnabledFor(level):
            return
        if self._pid != os.getpid():
            self._start()
        self._pending.append((level, event, fields))
        if len(self._pending) >= self.batch:
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> None:
        if self._pid != os.getpid():
            return  # nothing was logged through this process's thread
        done = threading.Event()
        self._pending.append(done)
        self._wake.set()
        done.wait(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._pending.clear()  # lines of the parent process are its own to write
                threading.Thread(target=self._run, name="decision-log", daemon=True).start()
                self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._write()

    def _write(self) -> None:
        pending = self._pending
        lines: list[tuple[int, str]] = []
        while pending:
            item = pending.popleft()
            if isinstance(item, threading.Event):
                self._emit(lines)
                lines = []
                item.set()
                continue
            level, event, fields = item
            try:
                lines.append((level, self._line(event, fields)))
            except Exception:  # not encodable (a bug): say so, and keep the writer alive
                logging.getLogger(LOGGER).exception("cannot write a decision log line")
        self._emit(lines)

    def _line(self, event: str, fields: dict[str, object]) -> str:
        """The JSON line; findings under `images` are encoded once per decision object (the
        service hands out the same decision while nothing changed) and spliced in: saves ~13%
        of a warm review (1b; the writer thread is counted)."""
        images = fields.get("images")  # findings, or image texts when nothing was judged
        if not isinstance(images, tuple):
            return _LOG_JSON.encode({"event": event, **fields})
        document: dict[str, object] = {"event": event}
        document.update((k, v) for k, v in fields.items() if k != "images")
        document["images"] = None  # the last key: its `null}` is replaced by the findings
        text = _LOG_JSON.encode(document)
        parts = ",".join(self._finding_json(f) for f in images)
        return f"{text[: -len('null}')]}[{parts}]}}"

    def _finding_json(self, finding: Finding) -> str:
        if finding.decision is None:  # an invalid reference: nothing to reuse
            return _LOG_JSON.encode(_finding_log(finding))
        key = (finding.image, finding.where, id(finding.decision))
        known = self._fragments.get(key)
        if known is not None and known[0] is finding.decision:
            return known[1]
        text = _LOG_JSON.encode(_finding_log(finding))
        size = 2 * (len(text) + len(finding.image) + len(finding.where))  # text and key
        if len(self._fragments) >= FRAGMENT_ENTRIES or self._fragment_bytes + size > FRAGMENT_BYTES:
            self._fragments.clear()
            self._fragment_bytes = 0
        self._fragments[key] = (finding.decision, text)
        self._fragment_bytes += size  # holding the decision keeps its id
        return text

    def _emit(self, lines: Sequence[tuple[int, str]]) -> None:
        if not lines:
            return
        logger = self.logger
        plain = _plain_handler(logger)
        if plain is not None:
            # Only our own "%(message)s" handler would see them: one write for the batch.
            plain.write_lines(line for level, line in lines if logger.isEnabledFor(level))
            return
        for level, line in lines:
            # `handle` with a record made here: what `Logger.log` does, minus its frame walk to
            # find the caller (which would name this thread's loop anyway).
            try:
                logger.handle(
                    logger.makeRecord(logger.name, level, "(decision log)", 0, line, (), None)
                )
            except Exception:  # a broken handler must not kill the writer
                logging.getLogger(LOGGER).exception("cannot write a decision log line")


class _LinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `create_app` installs when nothing configured logging: each message on a
    line of its own, as is. `write_lines` writes a whole batch in one call."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def write_lines(self, lines: Iterable[str]) -> None:
        text = "".join(line + self.terminator for line in lines)
        if not text:
            return
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            try:
                self.stream.write(text)
                self.flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": text}))


def _plain_handler(logger: logging.Logger) -> _LinesHandler | None:
    """`logger`'s one handler when it is our own lines handler and no other handler or filter
    (on the logger or an ancestor it propagates to) would see a record; else None."""
    if logger.filters or len(logger.handlers) != 1:
        return None
    handler = logger.handlers[0]
    if not isinstance(handler, _LinesHandler) or handler.filters:
        return None
    parent = logger.parent if logger.propagate else None
    while parent is not None:
        if parent.handlers:
            return None
        parent = parent.parent if parent.propagate else None
    return handler


def _ensure_handler(logger: logging.Logger) -> None:
    """Make decision lines visible when nothing configured logging (bare gunicorn)."""
    if not logger.hasHandlers():
        logger.addHandler(_LinesHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def _violation_log(v: Violation) -> dict[str, object]:
    """A violation in the decision log: with its detail (the upstream's words, the address
    tried), which the answer to the API server never carries."""
    line: dict[str, object] = {
        "rule": v.rule,
        "check": v.check,
        "action": v.action,
        "message": v.message,
    }
    if v.detail:
        line["detail"] = v.detail
    return line


def _finding_log(f: Finding) -> dict[str, object]:
    d = f.decision
    return {
        "image": f.image,
        "where": f.where,
        "reference": str(d.reference) if d is not None else None,
        "digest": (d.facts.digest or d.reference.digest) if d is not None else None,
        "allowed": f.allowed,
        "violations": (
            [_violation_log(v) for v in d.violations]
            if d is not None
            else [{"rule": "(reference)", "action": "deny", "message": f.invalid}]
        ),
    }
