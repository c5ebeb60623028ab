"""Content digests of the files a run reads (checkpoints, data): how "the same inputs" is checked."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

LARGE = 1 << 30  # over this, size and mtime stand in for the contents (hashing would cost seconds per worker)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (streamed); size and mtime for files over 1 GiB."""
    path = Path(path)
    st = path.stat()
    if st.st_size > LARGE:
        return f"size={st.st_size},mtime={st.st_mtime_ns}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def changed(recorded: Mapping[str, str]) -> list[str]:
    """The recorded files (path -> digest) that are gone or whose contents differ now."""
    return [p for p, d in recorded.items() if not Path(p).is_file() or file_digest(p) != d]
