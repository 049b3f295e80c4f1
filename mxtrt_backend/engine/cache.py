"""The engine cache: in memory for this process, on disk across processes.

A disk entry is ``<key>.engine``: a header (magic, format, the runtime that built the engine
and loads it, its version, payload size and CRC-32) followed by the serialized engine. The
runtime may be the fallback of the one asked (TensorRT rejected the subgraph, ONNX Runtime
serves it): the header says which. An entry that fails any check, or that no runtime of this
process loads, is discarded with one WARNING and rebuilt, so a damaged cache costs time, never
a wrong answer. Writers take a file lock and write a temporary file that is renamed into place,
so readers never see a torn file and two processes building the same engine leave one file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
import threading
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from filelock import FileLock

from . import Engine, Serialized

log = logging.getLogger("mxtrt")

MAGIC = b"MXTRTENG"
# 3: the header's runtime is the one whose engine the payload is (no tag inside the payload).
FORMAT = 3
_HEADER_LEN = struct.Struct("<I")


class CorruptEntry(ValueError):
    pass


def cache_key(parts: dict[str, Any]) -> str:
    """A stable digest of everything an engine depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def pack(blob: bytes, runtime: str, version: str) -> bytes:
    header = json.dumps({"format": FORMAT, "runtime": runtime, "version": version,
                         "size": len(blob), "crc32": zlib.crc32(blob)}).encode()
    return MAGIC + _HEADER_LEN.pack(len(header)) + header + blob


def unpack(data: bytes, accepts: Mapping[str, str]) -> Serialized:
    """The entry, if it is intact and built by one of ``accepts`` (runtime name -> version)."""
    if not data.startswith(MAGIC):
        raise CorruptEntry("not an mxtrt engine file (bad magic)")
    start = len(MAGIC) + _HEADER_LEN.size
    if len(data) < start:
        raise CorruptEntry("truncated header")
    (length,) = _HEADER_LEN.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(data[start:start + length])
    except ValueError:
        raise CorruptEntry("unreadable header") from None
    blob = data[start + length:]
    found = {k: header.get(k) for k in ("format", "runtime", "version")}
    if found["format"] != FORMAT or accepts.get(found["runtime"]) != found["version"]:
        raise CorruptEntry(f"built by {found}, this process loads format {FORMAT} of "
                           f"{dict(accepts)}")
    # CRC-32 catches damage (truncation, bit rot, a foreign file) at twice sha256's speed; the
    # file's name, a sha256 of all inputs, is what ties it to a model.
    if header.get("size") != len(blob) or header.get("crc32") != zlib.crc32(blob):
        raise CorruptEntry("payload size or checksum mismatch (truncated or damaged)")
    return Serialized(blob, found["runtime"], found["version"])


@dataclass
class Hit:
    engine: Engine
    source: str  # "memory", "disk" or "built"
    runtime: str  # which runtime's engine: the one asked, or its fallback


class EngineCache:
    def __init__(self) -> None:
        # A loaded engine belongs to one device (a TensorRT engine lives in its GPU's memory):
        # in memory, engines are per (key, device id); on disk, per key, so devices of the same
        # device_key share the serialized engine and each loads its own.
        self._engines: dict[tuple[str, int], Hit] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._unwritable: set[str] = set()
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
            self._engines.clear()
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

    def get(self, key: str, cache_dir: str, accepts: Mapping[str, str],
            build: Callable[[], Serialized], load: Callable[[Serialized], Engine],
            device_id: int = 0) -> Hit:
        """The engine of ``key`` loaded for ``device_id``; ``accepts`` (runtime name ->
        version) says which serialized engines the caller's ``load`` takes."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one build per key in this process
            kept = self._engines.get((key, device_id))
            hit = (Hit(kept.engine, "memory", kept.runtime) if kept is not None
                   else self._from_disk(key, cache_dir, accepts, build, load))
            self._engines[(key, device_id)] = hit
        with self._guard:
            self.lookups[hit.source] += 1
            observers = list(self._observers)
        for observer in observers:
            observer(key, hit)
        return hit

    def _from_disk(self, key: str, cache_dir: str, accepts: Mapping[str, str],
                   build: Callable[[], Serialized], load: Callable[[Serialized], Engine]) -> Hit:
        for bundle in self._bundles:
            entry = self._read(bundle / f"{key}.engine", accepts, discard=False)
            if entry is not None:
                return Hit(load(entry), "disk", entry.runtime)
        folder = self._writable(cache_dir)
        if folder is None:
            entry = build()
            return Hit(load(entry), "built", entry.runtime)
        path = folder / f"{key}.engine"
        with FileLock(str(path) + ".lock"):  # one build per key across processes
            entry = self._read(path, accepts)
            if entry is not None:
                return Hit(load(entry), "disk", entry.runtime)
            entry = build()
            self._write(path, pack(*entry))
        return Hit(load(entry), "built", entry.runtime)

    def _writable(self, cache_dir: str) -> Path | None:
        if cache_dir in self._unwritable:
            return None
        folder = Path(cache_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(f"no write permission on {folder}")
        except OSError as err:
            self._unwritable.add(cache_dir)
            log.warning("mxtrt: engine cache folder %s is not writable (%s); caching engines in "
                        "memory only. Set cache_dir or $MXTRT_CACHE_DIR to a writable folder.",
                        cache_dir, err)
            return None
        return folder

    @staticmethod
    def _read(path: Path, accepts: Mapping[str, str], discard: bool = True) -> Serialized | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return unpack(data, accepts)
        except CorruptEntry as err:
            if discard:
                path.unlink(missing_ok=True)
                log.warning("mxtrt: discarding cached engine %s: %s; rebuilding it", path, err)
            else:  # a bundle holds the user's files: skipped, never deleted
                log.warning("mxtrt: ignoring bundled engine %s: %s; using the engine cache",
                            path, err)
            return None

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        try:
            write_atomic(path, data)
        except OSError as err:
            log.warning("mxtrt: could not write engine cache file %s (%s); keeping the engine in "
                        "memory only", path, err)


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a torn one: temp file, fsync, rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


ENGINES = EngineCache()
