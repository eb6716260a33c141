"""A thin layer over ``pyarrow.fs`` with the few primitives the registry and event log need.

The same code runs on a local disk and on object stores. What differs is how a file appears
atomically: locally we write a hidden temp name and ``rename(2)`` it (readers see the old file
or the new one, never half of one); on object stores a single PUT is already atomic, while a
"rename" would be copy + delete, so we write the final name directly.

Durability: on a local disk every write that returns has been ``fsync``-ed — the file, the
directory entry that names it (after a rename), and any directory created for it — so what a
caller acknowledges survives a power loss, not just a process crash. On object stores a PUT is
durable when it returns; there is nothing to sync.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

CHUNK = 1 << 20


def _fsync(path: str, directory: bool = False) -> None:
    """``fsync(2)`` the file or directory at ``path`` (flushes the inode whichever descriptor
    wrote it)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Storage:
    """A filesystem plus a root path inside it, named by a URI.

    ``uri`` is a plain local path (relative paths are resolved), ``file://``, ``s3://``,
    ``gs://`` or any URI ``pyarrow.fs.FileSystem.from_uri`` accepts. ``filesystem`` overrides
    what the URI would give (e.g. an ``S3FileSystem`` with ``endpoint_override``); ``uri`` is
    then the path inside it.
    """

    def __init__(self, uri: str | os.PathLike, filesystem: pafs.FileSystem | None = None):
        uri = os.fspath(uri)
        self.uri = uri
        if filesystem is not None:
            self.fs, root = filesystem, uri
        elif "://" in uri:
            self.fs, root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, root = pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
        self.root = root.rstrip("/") if root != "/" else root
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """The full path of ``parts`` under the root (``/``-joined)."""
        return "/".join([self.root, *parts])

    def ls(self, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
        """Entries under ``path``; empty if it does not exist."""
        selector = pafs.FileSelector(path, allow_not_found=True, recursive=recursive)
        return self.fs.get_file_info(selector)

    def is_file(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def read_bytes(self, path: str) -> bytes:
        """The file's content; FileNotFoundError if absent."""
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def makedirs(self, path: str) -> None:
        """Create ``path`` and its parents; locally, each new directory's entry is synced."""
        if not self.is_local:
            self.fs.create_dir(path, recursive=True)
            return
        missing, p = [], Path(path)
        while not p.exists():
            missing.append(p)
            p = p.parent
        os.makedirs(path, exist_ok=True)
        for d in reversed(missing):
            _fsync(str(d.parent), directory=True)

    def sync_file(self, path: str) -> None:
        """Make the content of ``path`` durable (local disks; a no-op on object stores)."""
        if self.is_local:
            _fsync(path)

    def sync_dir(self, path: str) -> None:
        """Make the entries of directory ``path`` durable (local disks; no-op elsewhere)."""
        if self.is_local:
            _fsync(path, directory=True)

    def tmp_name(self, path: str) -> str:
        """A hidden sibling of ``path`` (leading ``.``), ignored by every reader."""
        parent, name = path.rsplit("/", 1)
        return f"{parent}/.tmp-{uuid.uuid4().hex[:12]}-{name}"

    def commit(self, tmp: str, path: str) -> None:
        """Move a fully written ``tmp`` into place (replacing ``path`` if it exists), durably:
        ``tmp``'s content is synced before the rename and the directory after it."""
        self.sync_file(tmp)
        self.fs.move(tmp, path)
        self.sync_dir(path.rsplit("/", 1)[0])

    def write_atomic(self, path: str, data: bytes) -> None:
        """Make ``path`` hold ``data`` in one visible step."""
        self.makedirs(path.rsplit("/", 1)[0])
        if not self.is_local:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = self.tmp_name(path)
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.commit(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise

    def upload(self, src: Path, dest: str) -> tuple[int, str]:
        """Copy a local file to ``dest``; returns (bytes, sha256 hex) of what was written."""
        digest, size = hashlib.sha256(), 0
        self.makedirs(dest.rsplit("/", 1)[0])
        with open(src, "rb") as fin, self.fs.open_output_stream(dest) as fout:
            while chunk := fin.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                fout.write(chunk)
        self.sync_file(dest)
        self.sync_dir(dest.rsplit("/", 1)[0])
        return size, digest.hexdigest()

    def download(self, src: str, dest: Path) -> str:
        """Copy ``src`` to the local file ``dest``; returns the sha256 hex of the content."""
        digest = hashlib.sha256()
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open_input_stream(src) as fin, open(dest, "wb") as fout:
            while chunk := fin.read(CHUNK):
                digest.update(chunk)
                fout.write(chunk)
        return digest.hexdigest()

    def sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(path) as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    @contextlib.contextmanager
    def local_lock(self, directory: str, name: str = ".lock") -> Iterator[None]:
        """An exclusive inter-process lock on local storage; a no-op on object stores.
        ``name``: the lock file in ``directory`` (one directory can hold several locks).

        Object stores have no cheap lock; callers must be correct without it (last writer
        wins) and use it only to serialise read-modify-write sequences where it is available.
        """
        if not self.is_local:
            yield
            return
        import fcntl

        os.makedirs(directory, exist_ok=True)
        with open(f"{directory}/{name}", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
