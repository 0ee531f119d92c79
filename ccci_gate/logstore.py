"""Build logs at rest: one file per build in the gatekeeper's log directory.

Vocabulary:

- a **running** log is ``<build-id>.log``, plain text appended to while its build runs
  (the dispatcher writes the chunks workers stream: :meth:`LogStore.append`);
- a **finished** log is ``<build-id>.log.gz``: when its build ends the plain file is
  compressed once (:meth:`LogStore.finish`; a gzip any reader reads, with an index that
  lets a range start near its offset: ``seekgz.py``), atomically — written to a temporary file,
  renamed into place, then the plain file removed. Until that removal both files hold
  the same text, and a reader that had the plain file open keeps reading it (the file
  lives on until it closes it);
- an **expired** log was removed by retention (``retention.py``); the store remembers
  when (``Store.log_expired``).

The invariant readers rely on: when ``<id>.log`` exists it holds the whole log so far,
otherwise ``<id>.log.gz`` holds all of it. A chunk that arrives after its log was
finished (a requeued build) reopens it: the text is unpacked to ``<id>.log`` first, on
the store's thread (chunks that come meanwhile wait in memory, in order).

Compression runs on a thread of its own (:meth:`finish_later`): the dispatcher calls it
from gear's poll thread, which must never wait on a big file.
"""
from __future__ import annotations

import functools
import gzip
import logging
import os
import queue
import shutil
import threading
import uuid
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

from . import seekgz

log = logging.getLogger("ccci_gate.logstore")

RUNNING, FINISHED = "running", "finished"
_STRIPES = 64        # locks shared by build ids: an append, a finish's swap, a removal
PIECE = 1 << 20      # bytes a served log is read and sent at a time
_MAX_RATIO = 1100    # deflate expands at most ~1032:1: below 2**32 / this, ISIZE is exact


class LogFile(NamedTuple):
    """One log on disk, as retention sees it."""

    build_id: str
    path: Path
    bytes: int          # on disk
    mtime: float
    finished: bool


class LogStore:
    """The log directory: append, finish (compress), read ranges, remove, measure."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks = [threading.Lock() for _ in range(_STRIPES)]
        self._queue: "queue.Queue[str | tuple[str, str] | threading.Event | None]" = \
            queue.Queue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._reopening: dict[str, list[str]] = {}   # build id -> chunks waiting for a reopen

    def plain(self, build_id: str) -> Path:
        return self.root / f"{build_id}.log"

    def packed(self, build_id: str) -> Path:
        return self.root / f"{build_id}.log.gz"

    def _lock(self, build_id: str) -> threading.Lock:
        return self._locks[hash(build_id) % _STRIPES]

    # --- writing --------------------------------------------------------------------

    def append(self, build_id: str, text: str) -> None:
        """Add ``text`` to the build's log (gear's poll thread calls this: it never
        waits on a big file). A finished log is reopened on the store's own thread; the
        chunks that arrive meanwhile wait in memory, in order, and are written after it."""
        with self._lock(build_id):
            pending = self._reopening.get(build_id)
            if pending is not None:
                pending.append(text)
                return
            if not self.plain(build_id).exists() and self.packed(build_id).exists():
                self._reopening[build_id] = [text]
                self._later(("reopen", build_id))
                return
            with open(self.plain(build_id), "a", encoding="utf-8") as fh:
                fh.write(text)

    def finish(self, build_id: str) -> bool:
        """Compress a running log; False when there was none (no output, or done) or it
        kept growing. The lock is held only to swap the files, never while compressing:
        an append (gear's poll thread) never waits on a big file."""
        plain, packed = self.plain(build_id), self.packed(build_id)
        # one temporary file per call: the compress thread and the retention janitor may
        # finish one log at once, and the loser must not truncate what the winner published
        tmp = self.root / f".{build_id}.{uuid.uuid4().hex}.log.gz.part"
        for _ in range(3):
            try:
                size = plain.stat().st_size
                with open(plain, "rb") as src, open(tmp, "wb") as dst:
                    seekgz.write(src, size, dst)
            except FileNotFoundError:
                tmp.unlink(missing_ok=True)
                return False
            with self._lock(build_id):
                try:
                    if plain.stat().st_size != size:
                        continue   # a chunk came meanwhile: compress again
                except FileNotFoundError:
                    tmp.unlink(missing_ok=True)
                    return False
                os.replace(tmp, packed)
                plain.unlink()
                return True
        tmp.unlink(missing_ok=True)
        log.info("the log of build %s keeps growing: left uncompressed", build_id)
        return False

    def finish_later(self, build_id: str) -> None:
        """:meth:`finish` on the store's own thread (never blocks the caller)."""
        self._later(build_id)

    def _later(self, work: "str | tuple[str, str]") -> None:
        with self._thread_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._compress, name="log-compress",
                                                daemon=True)
                self._thread.start()
        self._queue.put(work)

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until what :meth:`finish_later` was given is done (tests, shutdown)."""
        if self._thread is not None:
            done = threading.Event()
            self._queue.put(done)
            done.wait(timeout)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)

    def _compress(self) -> None:
        while True:
            build_id = self._queue.get()
            if build_id is None:
                return
            if isinstance(build_id, threading.Event):
                build_id.set()
                continue
            if isinstance(build_id, tuple):
                self._reopen(build_id[1])
                continue
            try:
                self.finish(build_id)
            except OSError as exc:
                log.error("cannot compress the log of build %s: %s", build_id, exc)

    def _reopen(self, build_id: str) -> None:
        """Unpack a finished log to ``<id>.log`` (a chunk came after its finish), then
        write the chunks that waited for it. Until the swap, readers read the gzip."""
        tmp = self.root / f".{build_id}.log.part"
        try:
            with gzip.open(self.packed(build_id), "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except FileNotFoundError:   # removed meanwhile: the log starts afresh
            tmp.write_bytes(b"")
        except (OSError, EOFError, zlib.error) as exc:
            log.error("cannot reopen the log of build %s: %s; its new text starts a new "
                      "log", build_id, exc)
            tmp.write_bytes(b"")
        with self._lock(build_id):
            os.replace(tmp, self.plain(build_id))
            self.packed(build_id).unlink(missing_ok=True)
            with open(self.plain(build_id), "a", encoding="utf-8") as fh:
                fh.write("".join(self._reopening.pop(build_id, [])))
        log.info("build %s logs again after its log was finished: reopened", build_id)

    def remove(self, build_id: str) -> int:
        """Delete a build's log (both forms); the bytes freed."""
        freed = 0
        with self._lock(build_id):
            for path in (self.plain(build_id), self.packed(build_id)):
                try:
                    freed += path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    pass
        return freed

    # --- reading --------------------------------------------------------------------

    def state(self, build_id: str) -> str | None:
        """``running``, ``finished``, or None when there is no log on disk."""
        if self.plain(build_id).exists():
            return RUNNING
        return FINISHED if self.packed(build_id).exists() else None

    def size(self, build_id: str) -> int | None:
        """The length of the log's text in bytes (uncompressed); None: no log."""
        for _ in range(2):   # a finish may move the file between the two looks
            try:
                return self.plain(build_id).stat().st_size
            except FileNotFoundError:
                pass
            try:
                with open(self.packed(build_id), "rb") as fh:
                    found = seekgz.index(fh)
                return found[0] if found else gz_size(self.packed(build_id))
            except FileNotFoundError:
                pass
        return None

    def read(self, build_id: str, start: int = 0, end: int | None = None) -> bytes | None:
        """Bytes ``start`` to ``end`` (exclusive; None: to the end) of the log's text."""
        for _ in range(2):
            try:
                with open(self.plain(build_id), "rb") as fh:
                    fh.seek(start)
                    return fh.read() if end is None else fh.read(max(0, end - start))
            except FileNotFoundError:
                pass
            try:
                with open(self.packed(build_id), "rb") as raw:
                    text = seekgz.read_range(raw, start, end)
                    if text is not None:
                        return text
                    raw.seek(0)
                    with gzip.open(raw, "rb") as fh:   # a gzip not written here
                        fh.seek(start)
                        return fh.read() if end is None else fh.read(max(0, end - start))
            except FileNotFoundError:
                pass
        return None

    def read_pieces(self, build_id: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of the log's text, ``PIECE`` at a time: a
        response body that never holds a big log whole (a finish or a removal meanwhile
        is crossed like :meth:`read` crosses it; the pieces stop where the text does)."""
        while start < end:
            piece = self.read(build_id, start, min(end, start + PIECE))
            if not piece:
                return
            start += len(piece)
            yield piece

    def packed_pieces(self, build_id: str) -> Iterator[bytes] | None:
        """A finished log's gzip bytes as stored, ``PIECE`` at a time (None: not
        finished). The file is opened now, so a removal meanwhile does not cut it."""
        try:
            fh = open(self.packed(build_id), "rb")
        except FileNotFoundError:
            return None

        def pieces() -> Iterator[bytes]:
            with fh:
                while piece := fh.read(PIECE):
                    yield piece
        return pieces()

    def files(self) -> Iterator[LogFile]:
        """Every log on disk (temporary files left by a crash are not logs)."""
        for entry in os.scandir(self.root):
            name = entry.name
            if name.startswith("."):
                continue
            if name.endswith(".log.gz"):
                build_id, finished = name[:-7], True
            elif name.endswith(".log"):
                build_id, finished = name[:-4], False
            else:
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            yield LogFile(build_id, Path(entry.path), st.st_size, st.st_mtime, finished)

    def disk_use(self) -> int:
        return sum(f.bytes for f in self.files())


def gz_size(path: Path) -> int:
    """The uncompressed length of a one-member gzip file (``finish`` writes one): its
    ISIZE trailer when that is exact (under ~3.9 MB stored), else by decompressing once
    (remembered while the file is unchanged)."""
    st = os.stat(path)
    if 4 <= st.st_size and st.st_size * _MAX_RATIO < 2 ** 32:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            return int.from_bytes(fh.read(4), "little")
    return _inflated_size(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _inflated_size(path: str, _mtime_ns: int, _size: int) -> int:
    inflate, total = zlib.decompressobj(16 + zlib.MAX_WBITS), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            total += len(inflate.decompress(chunk))
    return total
