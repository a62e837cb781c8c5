"""Atomic file writes: the one implementation every writer of the project uses.

A file is written under a temporary name in the same directory (``<name>.tmp-<pid>.<k>``: process id and a
counter within the process, so parallel jobs and threads never share a temporary), flushed and fsynced, then
renamed onto the final name with ``os.replace`` (atomic on POSIX file systems) and the directory is fsynced
(so that the rename itself survives a power loss). Consequences:

* a reader never sees half a file: it finds the old file, or the new one complete;
* an exception (KeyboardInterrupt included) removes the temporary and leaves the old file byte-identical;
* only a hard kill (SIGKILL, node failure) can leave a ``*.tmp-<pid>.<k>`` behind; readers skip names that
  contain :data:`TMP_MARK` and :func:`tglassmlp.data.manifest.claim_shard` removes a shard's leftovers;
* concurrent writers of one path each write their own temporary; the last rename wins, with a complete file.

:func:`atomic_path` is the core (it yields the temporary path, for writers that need a file name: h5py,
matplotlib, ``np.savez`` by name); :func:`atomic_write` hands a file object to a callback; the rest are
one-line conveniences for text, JSON and numpy arrays.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

#: Marker in the name of every temporary file (``<name>.tmp-<pid>.<k>``); readers skip names containing it.
TMP_MARK = ".tmp-"

# itertools.count's next() is atomic under the GIL: two threads of one process get different numbers
_counter = itertools.count()


class TargetExistsError(FileExistsError):
    """``overwrite=False`` and the final name already exists (nothing was changed)."""


def temporary_path(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """A fresh temporary name beside ``path``, unique to this process and call.

    ``keep_suffix=True`` gives ``<stem>.tmp-<pid>.<k><suffix>`` (for writers that infer the format from the
    suffix or append one: ``savefig``, ``np.savez``); otherwise ``<name>.tmp-<pid>.<k>``.
    """
    path = Path(path)
    tag = f"{TMP_MARK}{os.getpid()}.{next(_counter)}"
    if keep_suffix:
        return path.with_name(f"{path.stem}{tag}{path.suffix}")
    return path.with_name(f"{path.name}{tag}")


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory, making a rename inside it durable; skipped where a directory cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True, keep_suffix: bool = False) -> Iterator[Path]:
    """``with atomic_path(p) as tmp: write the file tmp`` -- on a clean exit ``tmp`` is fsynced and moved onto
    ``p`` (parent directories are created); on any exception ``tmp`` is removed and ``p`` is left as it was.

    Args:
        path: the final name.
        overwrite: False: the move is ``os.link`` (fails atomically when ``path`` exists, so of two racing
            writers exactly one wins; the other gets :class:`TargetExistsError`); where the file system has
            no hard links, an existence check then ``os.replace``.
        keep_suffix: the temporary keeps ``path``'s suffix (see :func:`temporary_path`).

    Raises:
        TargetExistsError: ``overwrite=False`` and ``path`` exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path, keep_suffix)
    try:
        yield tmp
        _fsync_file(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise TargetExistsError(f"{path} exists") from None
            except OSError:  # file system without hard links
                if path.exists():
                    raise TargetExistsError(f"{path} exists") from None
                os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        # after os.link the temporary is a second name of the final file; on failure it is half a file
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], mode: str = "wb", *,
                 encoding: str | None = None) -> Path:
    """``write(file object)`` into a temporary beside ``path`` (opened with ``mode``), then move it onto
    ``path`` atomically (:func:`atomic_path`). Returns ``path``."""
    path = Path(path)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as fh:
            write(fh)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``text`` (UTF-8) at ``path``, atomically. Returns ``path``."""
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """``obj`` as JSON (``indent``, ``sort_keys``, ``default`` as in :func:`json.dumps`) plus a final newline
    at ``path``, atomically. The text is built before anything is opened, so an unserialisable object raises
    ``TypeError`` and touches no file. Returns ``path``."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    return write_text_atomic(path, text)


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` of ``array`` at exactly ``path`` (no ``.npy`` appended), atomically. Returns ``path``."""
    return atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], compressed: bool = False) -> Path:
    """``np.savez`` (``np.savez_compressed`` if ``compressed``) of ``arrays`` at exactly ``path`` (no ``.npz``
    appended), atomically. Returns ``path``."""
    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda fh: save(fh, **arrays))


def save_figure_atomic(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """``fig.savefig`` at ``path`` (format from the suffix), atomically (no half-written PNG), then close the
    figure. Returns ``path``."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path, keep_suffix=True) as tmp:  # savefig takes the format from the suffix
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return path
