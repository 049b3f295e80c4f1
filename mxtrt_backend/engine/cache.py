"""The engine cache: in memory for this process, on disk across processes.

A disk entry is ``<key>.engine``: a header (magic, format, the runtime that built the engine and
loads it, its version, what the engine computes, payload size and CRC-32) followed by the
serialized engine. The runtime may be the fallback of the one asked (TensorRT rejected the
subgraph, ONNX Runtime serves it): the header says which. An entry that fails any check, or that
no runtime of this process loads, is discarded with one WARNING and rebuilt, so a damaged cache
costs time, never a wrong answer. A file the process cannot read or write (another user's, a directory in its place, a full
disk) costs the same: the engine is built and kept in memory only, with one WARNING; no cache
error ever reaches a forward.

Building a key takes its build lock (``<key>.engine.lock``, removed afterwards) so that processes
build an engine once; files are written to a temporary name and renamed into place, so readers
never see a torn file, with or without the lock. A process waits for another one building the
same engine at most ``cache_lock_timeout`` seconds, and not at all for a stopped one; then it
builds the engine itself.

The folder is kept under ``cache_max_size``: after each new engine is written, the least recently
used engines (loaded or written longest ago: the file's modification time) are deleted beyond it,
along with temporary files left by killed writers and build locks nobody holds.

A loaded engine belongs to one device (a TensorRT engine lives in its GPU's memory): in memory,
engines are kept per (key, device id); on disk, per key, so devices of the same model share the
serialized engine and each loads its own.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import mmap
import os
import secrets
import socket
import struct
import threading
import time
import weakref
import zlib
from collections import Counter, OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..config import Options
from . import Blob, Engine, FileRegion, Serialized

log = logging.getLogger("mxtrt")

MAGIC = b"MXTRTENG"
# 3: the header's runtime is the one whose engine the payload is (no tag inside the payload).
# 4: the payload starts PAYLOAD_ALIGN-aligned (ONNX Runtime engines' weights are mapped from it).
FORMAT = 4
PAYLOAD_ALIGN = 64
_HEADER_LEN = struct.Struct("<I")
SUFFIX = ".engine"
LOCK_SUFFIX = ".lock"
TMP_SUFFIX = ".tmp"

# Engines no op state uses any more that stay in memory, most recently used first: Gluon without
# static_alloc makes a new op state at every forward, which must find its engine here. An engine
# an op state replaced (its parameters changed) leaves at once.
IDLE_ENGINES = 32
# Folder scans (eviction, clean-up) look at this many entries at most.
SCAN_LIMIT = 10_000
# A temporary file untouched this long belongs to a writer that was killed.
STALE_TMP_SECONDS = 3600.0
# How often a process waiting for a build lock looks again, and when it says that it waits.
_POLL_SECONDS = 0.1
_NOTICE_AFTER = 5.0
# Headers are a few hundred bytes: ``mxtrt cache list`` reads this much of each file.
_HEADER_READ = 1 << 16


class CorruptEntry(ValueError):
    pass


def cache_key(parts: dict[str, Any]) -> str:
    """A stable digest of everything an engine depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def pack(blob: Blob, runtime: str, version: str, label: str = "") -> bytes:
    """``label`` says what the engine computes, for ``mxtrt cache list``; it is not checked.
    The header is padded with blanks so the payload starts PAYLOAD_ALIGN-aligned in the file:
    a runtime mapping aligned data from the payload finds it aligned in memory too."""
    header = json.dumps({"format": FORMAT, "runtime": runtime, "version": version,
                         "label": label, "size": len(blob), "crc32": zlib.crc32(blob)}).encode()
    header += b" " * (-(len(MAGIC) + _HEADER_LEN.size + len(header)) % PAYLOAD_ALIGN)
    return MAGIC + _HEADER_LEN.pack(len(header)) + header + blob


def read_header(data: Blob) -> tuple[dict[str, Any], int]:
    """The header of an entry (``data`` may be just the start of the file) and where the payload
    starts."""
    if bytes(data[:len(MAGIC)]) != MAGIC:
        raise CorruptEntry("not an mxtrt engine file (bad magic)")
    start = len(MAGIC) + _HEADER_LEN.size
    if len(data) < start:
        raise CorruptEntry("truncated header")
    (length,) = _HEADER_LEN.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(bytes(data[start:start + length]))
    except ValueError:
        raise CorruptEntry("unreadable header") from None
    if not isinstance(header, dict):
        raise CorruptEntry("unreadable header")
    return header, start + length


def unpack(data: Blob, accepts: Mapping[str, str]) -> Serialized:
    """The entry, if it is intact and built by one of ``accepts`` (runtime name -> version)."""
    header, payload = read_header(data)
    blob = memoryview(data)[payload:]
    runtime, version = str(header.get("runtime")), str(header.get("version"))
    if header.get("format") != FORMAT or accepts.get(runtime) != version:
        raise CorruptEntry(f"built by format {header.get('format')} of {runtime} {version}, "
                           f"this process loads format {FORMAT} of {dict(accepts)}")
    # CRC-32 catches damage (truncation, bit rot, a foreign file) at twice sha256's speed; the
    # file's name, a sha256 of all inputs, is what ties it to a model.
    if header.get("size") != len(blob) or header.get("crc32") != zlib.crc32(blob):
        raise CorruptEntry("payload size or checksum mismatch (truncated or damaged)")
    return Serialized(blob, runtime, version)


@dataclass
class Hit:
    engine: Engine
    source: str  # "memory", "disk" or "built"
    runtime: str  # which runtime's engine: the one asked, or its fallback


@dataclass(frozen=True)
class Store:
    """Where and how engines are kept on disk (from the options ``cache_dir``,
    ``cache_max_size`` and ``cache_lock_timeout``)."""

    folder: str
    max_size: int  # bytes of engines; 0: no limit
    lock_timeout: float  # seconds

    @classmethod
    def of(cls, options: Options) -> "Store":
        return cls(options.cache_dir, options.cache_max_size, options.cache_lock_timeout)


# An engine in memory: its key and the device it was loaded for.
Slot = tuple[str, int]


class EngineCache:
    def __init__(self) -> None:
        # Engines op states use (held by them), and recently used ones no state holds.
        self._live: weakref.WeakValueDictionary[Slot, Engine] = weakref.WeakValueDictionary()
        self._idle: OrderedDict[Slot, Engine] = OrderedDict()
        self._runtime_of: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
        # Keys being looked up in a bundle, on disk or built: their lock and how many threads
        # hold or wait for it (an entry leaves with the last one).
        self._pending: dict[str, tuple[threading.Lock, int]] = {}
        self._guard = threading.Lock()
        self._warned: set[tuple[str, str]] = set()
        # Read-only folders of engines shipped with a converted model (mxtrt_backend.load).
        self._bundles: list[Path] = []
        # How many engines were served from memory, loaded from disk, or built.
        self.lookups: Counter[str] = Counter()
        self._observers: list[Callable[[str, Hit], None]] = []

    def add_bundle(self, folder: str) -> None:
        with self._guard:
            if Path(folder) not in self._bundles:
                self._bundles.append(Path(folder))

    def clear_memory(self) -> None:
        with self._guard:
            self._live.clear()
            self._idle.clear()
            self._runtime_of.clear()
            self._warned.clear()
            self.lookups.clear()

    @contextmanager
    def watch(self, observer: Callable[[str, Hit], None]) -> Iterator[None]:
        """Call ``observer(key, hit)`` after every lookup while the context lasts, in the thread
        that made it (MXNet's engine thread for a forward): progress reports, counts."""
        with self._guard:
            self._observers.append(observer)
        try:
            yield
        finally:
            with self._guard:
                self._observers.remove(observer)

    def get(self, key: str, store: Store, accepts: Mapping[str, str],
            build: Callable[[], Serialized], load: Callable[[Serialized], Engine],
            device_id: int = 0, *, label: str = "", replaces: str | None = None) -> Hit:
        """The engine of ``key`` loaded for ``device_id``: from memory, a bundle, the disk, or
        ``build``. ``accepts`` (runtime name -> version) says which serialized engines ``load``
        takes. ``replaces`` names the engine the caller held before (its parameters changed): it
        is not kept idle."""
        slot = (key, device_id)
        hit = self._in_memory(slot)
        if hit is None:
            with self._one_lookup(key):  # one build per key in this process
                hit = self._in_memory(slot)  # another thread's lookup may have ended
                if hit is None:
                    hit = self._from_disk(key, store, accepts, build, load, label)
        with self._guard:
            self._live[slot] = hit.engine
            self._runtime_of[hit.engine] = hit.runtime
            self._idle[slot] = hit.engine
            self._idle.move_to_end(slot)
            if replaces is not None and replaces != key:
                self._idle.pop((replaces, device_id), None)
            while len(self._idle) > IDLE_ENGINES:
                self._idle.popitem(last=False)
            self.lookups[hit.source] += 1
            observers = list(self._observers)
        for observer in observers:
            observer(key, hit)
        return hit

    def _in_memory(self, slot: Slot) -> Hit | None:
        with self._guard:
            engine = self._live.get(slot)
            return None if engine is None else Hit(engine, "memory", self._runtime_of[engine])

    @contextmanager
    def _one_lookup(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._pending.get(key, (threading.Lock(), 0))
            self._pending[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._pending[key]
                if users == 1:
                    del self._pending[key]
                else:
                    self._pending[key] = (lock, users - 1)

    def _from_disk(self, key: str, store: Store, accepts: Mapping[str, str],
                   build: Callable[[], Serialized], load: Callable[[Serialized], Engine],
                   label: str) -> Hit:
        for bundle in self._bundles:
            entry = self._read(bundle / f"{key}{SUFFIX}", accepts, on_damage="skip")
            if entry is not None:
                return Hit(load(entry), "disk", entry.runtime)
        path = Path(store.folder) / f"{key}{SUFFIX}"
        # A complete file needs no lock: files only ever appear by rename.
        entry = self._read(path, accepts, on_damage="ignore")
        if entry is not None:
            _touch(path)
            return Hit(load(entry), "disk", entry.runtime)
        if not self._writable(store.folder):
            entry = build()
            return Hit(load(entry), "built", entry.runtime)
        with self._build_lock(path, store.lock_timeout) as locked:
            entry = self._read(path, accepts, on_damage="discard") if locked else None
            if entry is not None:  # built by the process we waited for
                _touch(path)
                return Hit(load(entry), "disk", entry.runtime)
            entry = build()
            self._store(path, pack(entry.data, entry.runtime, entry.version, label=label),
                        store.max_size)
        return Hit(load(entry), "built", entry.runtime)

    def _warn_once(self, kind: str, where: object, message: str, *args: object) -> None:
        with self._guard:
            if (kind, str(where)) in self._warned:
                return
            self._warned.add((kind, str(where)))
        log.warning(message, *args)

    def _writable(self, cache_dir: str) -> bool:
        folder = Path(cache_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(f"no write permission on {folder}")
        except OSError as err:
            self._warn_once("folder", cache_dir,
                            "mxtrt: engine cache folder %s is not writable (%s); caching new "
                            "engines in memory only. Set cache_dir or $MXTRT_CACHE_DIR to a "
                            "writable folder.", cache_dir, err)
            return False
        return True

    def _read(self, path: Path, accepts: Mapping[str, str], on_damage: str) -> Serialized | None:
        """The payload of an entry, or None. A damaged entry is deleted ("discard", under the
        build lock), left for the user ("skip": a bundle), or left for now ("ignore")."""
        try:
            data, fd = _mapped(path)
        except FileNotFoundError:
            return None
        except OSError as err:  # a directory, another user's file, an I/O error
            self._warn_once("read", path, "mxtrt: cannot read cached engine %s (%s); building "
                            "the engine instead", path, err)
            return None
        try:
            entry = unpack(data, accepts)
        except CorruptEntry as err:
            os.close(fd)
            if on_damage == "discard":
                _unlink(path)
                log.warning("mxtrt: discarding cached engine %s: %s; rebuilding it", path, err)
            elif on_damage == "skip":  # a bundle holds the user's files: skipped, never deleted
                log.warning("mxtrt: ignoring bundled engine %s: %s; using the engine cache",
                            path, err)
            return None
        return entry._replace(region=FileRegion(fd, len(data) - len(entry.data)))

    def _store(self, path: Path, data: bytes, max_size: int) -> None:
        if max_size and len(data) > max_size:
            self._warn_once("size", path.parent,
                            "mxtrt: an engine of %.1f MiB exceeds cache_max_size (%.1f MiB); "
                            "keeping it in memory only. Raise cache_max_size to cache it.",
                            len(data) / 2**20, max_size / 2**20)
            return
        try:
            write_atomic(path, data)
        except OSError as err:
            self._warn_once("write", path.parent,
                            "mxtrt: could not write engine cache file %s (%s); keeping the "
                            "engine in memory only", path, err)
            return
        prune(path.parent, max_size, keep=path)

    def _build_lock(self, path: Path, timeout: float) -> "_BuildLock":
        return _BuildLock(self, Path(f"{path}{LOCK_SUFFIX}"), timeout)


class _BuildLock:
    """``with`` yields True when this process holds the build lock of an entry, False when it
    builds without it (the holder is stopped or too slow, or the lock file cannot be made)."""

    def __init__(self, cache: EngineCache, path: Path, timeout: float) -> None:
        self._cache, self._path, self._timeout = cache, path, timeout
        self._fd: int | None = None

    def __enter__(self) -> bool:
        try:
            self._fd = _acquire(self._path, self._timeout)
        except OSError as err:  # e.g. no inode left for the lock file (ENOSPC)
            self._cache._warn_once("lock", self._path.parent,
                                   "mxtrt: cannot create the build lock %s (%s); building "
                                   "without it", self._path, err)
        return self._fd is not None

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            _release(self._path, self._fd)
            self._fd = None


@dataclass(frozen=True)
class Holder:
    """The process holding a build lock, as it wrote itself into the lock file."""

    pid: int
    host: str

    def state(self) -> str:
        """"stopped", "running", or "unknown" (another host, or no /proc)."""
        if self.host != socket.gethostname():
            return "unknown"
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return "unknown"
        # "pid (comm) state ...": comm may hold spaces and parentheses.
        return "stopped" if stat.rpartition(")")[2].split()[:1] in (["T"], ["t"]) else "running"


def _holder(path: Path) -> Holder | None:
    try:
        pid, host = path.read_text().split()
        return Holder(int(pid), host)
    except (OSError, ValueError):
        return None


def _acquire(path: Path, timeout: float) -> int | None:
    """A file descriptor holding the exclusive lock ``path``, or None when waiting is pointless
    (the holder is stopped) or took ``timeout`` seconds. Raises OSError when the lock file
    cannot be created."""
    start = time.monotonic()
    told = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # another user's lock file: locking needs no write access
            fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
        else:
            if _is_current(fd, path):
                _sign(fd)
                return fd
            os.close(fd)  # the holder removed that file as we opened it: lock the new one
            continue
        waited = time.monotonic() - start
        holder = _holder(path)
        who = f"process {holder.pid} on {holder.host}" if holder else "another process"
        if holder is not None and holder.state() == "stopped":
            log.warning("mxtrt: %s holds the build lock %s but is stopped (SIGSTOP or Ctrl-Z); "
                        "building the engine in this process instead", who, path)
            return None
        if waited >= timeout:
            log.warning("mxtrt: %s has held the build lock %s for over %.0f s "
                        "(cache_lock_timeout); building the engine in this process instead",
                        who, path, timeout)
            return None
        if not told and waited >= _NOTICE_AFTER:
            log.warning("mxtrt: waiting for %s, which is building the same engine (lock %s); "
                        "building it here after %.0f s more (cache_lock_timeout)",
                        who, path, timeout - waited)
            told = True
        time.sleep(_POLL_SECONDS)


def _is_current(fd: int, path: Path) -> bool:
    try:
        st, current = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (current.st_dev, current.st_ino)


def _sign(fd: int) -> None:
    """Write who holds the lock, so that waiters can tell a stopped holder."""
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    except OSError:
        pass  # opened read-only (another user's lock file) or the disk is full: unsigned


def _release(path: Path, fd: int) -> None:
    # Removed while still held: a waiter that opened this file sees it is gone (_is_current).
    _unlink(path)
    os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # another user's file in a sticky folder: left in place


def _touch(path: Path) -> None:
    """Mark an entry used now: the modification time orders eviction."""
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only cache: its entries are not evicted by this process anyway


def _mapped(path: Path) -> tuple[Blob, int]:
    """The file's bytes as a read-only memory mapping (nothing is read before it is used), and
    the file, left open for a runtime that maps parts of it again. Entries are replaced by
    rename, never rewritten in place, so a mapping keeps the file it opened."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size == 0:
            return b"", fd
        return memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ)), fd
    except BaseException:
        os.close(fd)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a torn one: temp file, fsync, rename.

    The file gets the permissions of any file the user creates (0666 less the umask), so a
    cache or a converted model in a folder shared by a group is readable by the group."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Entry:
    """One engine file of a cache folder, as ``mxtrt cache list`` shows it."""

    path: Path
    size: int
    last_use: float  # the file's modification time
    header: dict[str, Any]  # empty when unreadable

    @property
    def key(self) -> str:
        return self.path.name[:-len(SUFFIX)]


def _scan(folder: Path, limit: int | None = SCAN_LIMIT) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            for count, entry in enumerate(it):
                if limit is not None and count >= limit:
                    return
                yield entry
    except FileNotFoundError:
        return


def _engine_files(folder: Path, limit: int | None) -> list[tuple[float, int, Path]]:
    """(last use, size, path) of the engines, cleaning up after killed processes on the way."""
    found = []
    now = time.time()
    for entry in _scan(folder, limit):
        path = Path(entry.path)
        try:
            st = entry.stat()
        except OSError:
            continue
        if entry.name.endswith(SUFFIX) and entry.is_file():
            found.append((st.st_mtime, st.st_size, path))
        elif entry.name.endswith(TMP_SUFFIX):
            if now - st.st_mtime > STALE_TMP_SECONDS:
                _unlink(path)
        elif entry.name.endswith(SUFFIX + LOCK_SUFFIX):
            _remove_if_unheld(path)
    return found


def _remove_if_unheld(path: Path) -> None:
    """Remove a build lock left by a killed process (nobody holds it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)  # held: a build is under way
        return
    if _is_current(fd, path):
        _unlink(path)
    os.close(fd)


def prune(folder: Path, max_size: int, keep: Path | None = None,
          limit: int | None = SCAN_LIMIT) -> list[Path]:
    """Delete the least recently used engines until those left fit in ``max_size`` bytes (0: no
    limit), never ``keep``; remove stale temporary files and unheld build locks. Returns the
    engines deleted."""
    files = sorted(_engine_files(folder, limit))
    total = sum(size for _, size, _ in files)
    deleted = []
    for _, size, path in files:
        if not max_size or total <= max_size:
            break
        if path == keep:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass  # evicted by another process at the same time
        except OSError as err:
            log.debug("mxtrt: could not evict %s: %s", path, err)
            continue
        total -= size
        deleted.append(path)
    if deleted:
        log.info("mxtrt: evicted %d least recently used engine(s) from %s (cache_max_size %.0f MiB)",
                 len(deleted), folder, max_size / 2**20)
    return deleted


def entries(folder: Path) -> list[Entry]:
    """Every engine of a cache folder with its header, most recently used first."""
    found = []
    for last_use, size, path in _engine_files(folder, limit=None):
        try:
            with open(path, "rb") as f:
                header = read_header(f.read(_HEADER_READ))[0]
        except (OSError, CorruptEntry):
            header = {}
        found.append(Entry(path, size, last_use, header))
    return sorted(found, key=lambda e: -e.last_use)


def clear(folder: Path) -> int:
    """Delete every engine of a cache folder (and leftovers); returns how many."""
    count = 0
    for entry in entries(folder):
        try:
            entry.path.unlink()
            count += 1
        except FileNotFoundError:
            pass
    return count


ENGINES = EngineCache()
