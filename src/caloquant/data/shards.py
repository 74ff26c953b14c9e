"""Sharded outputs: a folder of HDF5 shards plus ``manifest.json``, and reading any shower source (a file, a
shard set, a folder or a glob) back as one sample.

A job of N showers with seed s is cut into S contiguous index ranges; shard k holds showers
[start_k, stop_k) of the single-process run with seed s (shower i depends only on (s, i)), so the shards
concatenated in order equal that run. The manifest records the job (kind, request, model and precision),
and per shard its file, index range, seed and the sha256 of the finished file (null until it is done).

Every reader checks each shard against the manifest before reading it (``shard_problem``): its path stays
inside the set and names no other entry, its bytes have the recorded sha256, its row count, seed and first
index are the manifest's and its attributes name the manifest's job. A shard that fails is refused, naming it.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from caloquant._atomic import check_outputs, sha256_file, write_text_atomic
from caloquant.data.formats import ShowerFile, ShowerSet, ShowerWriter
from caloquant.errors import DataFormatError, GeometryMismatchError, InputError

MANIFEST = "manifest.json"
FORMAT = "caloquant-shards/1"
#: Most shards one job may have (each is a file and a task).
MAX_SHARDS = 100_000
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Shard:
    """One shard: showers [start, stop) in ``file`` (relative to the manifest), done when ``sha256`` is set."""

    index: int
    file: str
    start: int
    stop: int
    seed: int
    sha256: str | None = None

    @property
    def n(self) -> int:
        return self.stop - self.start


@dataclass
class Manifest:
    """A sharded job: what was asked (``job``), how it is cut (``shards``) and which shards are finished."""

    kind: str
    n: int
    seed: int
    job: dict[str, Any]
    shards: list[Shard] = field(default_factory=list)

    @property
    def missing(self) -> list[Shard]:
        """Shards not yet finished."""
        return [s for s in self.shards if s.sha256 is None]

    def same_job(self, other: Manifest) -> bool:
        """Whether ``other`` asks for the same showers cut the same way, into the same files."""
        def cut(m: Manifest) -> list[tuple[int, str, int, int, int]]:
            return [(s.index, s.file, s.start, s.stop, s.seed) for s in m.shards]

        return (self.kind, self.n, self.seed, cut(self)) == (other.kind, other.n, other.seed, cut(other)) and \
            {k: str(v) for k, v in self.job.items()} == {k: str(v) for k, v in other.job.items()}

    def to_json(self) -> str:
        done = len(self.shards) - len(self.missing)
        body = {"format": FORMAT, "kind": self.kind, "n": self.n, "seed": self.seed, "shards_total": len(self.shards),
                "shards_done": done, "complete": done == len(self.shards), "job": self.job,
                "shards": [{**asdict(s), "n": s.n} for s in self.shards]}
        return json.dumps(body, indent=1) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the manifest atomically."""
        write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest; a malformed one is a DataFormatError naming the file."""
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            if d.get("format") != FORMAT:
                raise DataFormatError(f"{p}: not a caloquant shard manifest (format {d.get('format')!r})")
            shards = [Shard(int(s["index"]), str(s["file"]), int(s["start"]), int(s["stop"]), int(s["seed"]),
                            s.get("sha256")) for s in d["shards"]]
            m = cls(str(d["kind"]), int(d["n"]), int(d["seed"]), dict(d["job"]), shards)
        except FileNotFoundError:
            raise DataFormatError(f"{p}: file not found") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataFormatError(f"{p}: malformed shard manifest ({e})") from None
        if not shards or [(s.start, s.stop) for s in shards] != list(zip([0, *[s.stop for s in shards[:-1]]],
                                                                          [s.stop for s in shards])) or \
                any(s.n <= 0 for s in shards) or shards[-1].stop != m.n:
            raise DataFormatError(f"{p}: shard index ranges do not tile 0..{m.n}")
        problem = _entries_problem(p.parent, m)
        if problem is not None:
            raise DataFormatError(f"{p}: {problem}")
        return m


def _entries_problem(folder: Path, m: Manifest) -> str | None:
    """Why the shard entries of ``m`` (a manifest in ``folder``) are not a valid set, or None."""
    root = Path(os.path.realpath(folder))
    seen: dict[Path, int] = {}
    for k, s in enumerate(m.shards):
        if s.index != k:
            return f"shard entry {k} has index {s.index}"
        if s.seed != m.seed:
            return f"shard {k} has seed {s.seed}, the job's is {m.seed}"
        if s.sha256 is not None and not (isinstance(s.sha256, str) and _SHA256.fullmatch(s.sha256)):
            return f"shard {k} has a malformed sha256 {s.sha256!r}"
        rel = Path(s.file)
        outside = "\0" in s.file or rel.is_absolute() or ".." in rel.parts
        real = root if outside else Path(os.path.realpath(root / rel))
        if outside or not real.is_relative_to(root) or real == root:
            return f"shard {k} file {s.file!r} is outside the shard set {folder}"
        if real == root / MANIFEST:
            return f"shard {k} names the manifest itself"
        if real in seen:
            return f"shards {seen[real]} and {k} name the same file {s.file!r}"
        seen[real] = k
    return None


def shard_problem(path: Path, shard: Shard, job: dict[str, Any], sha256: str | None) -> str | None:
    """Why ``path`` is not shard ``shard`` of ``job`` with bytes ``sha256``, as a phrase; None when it is.

    Checks the bytes against ``sha256``, then (which a matching hash alone would not catch after an edited
    manifest) the row count and the attributes: the job's request, the seed, the shard's first index and size.
    """
    if not path.is_file():
        return "is missing"
    if sha256 is None:
        return "has no recorded sha256"
    if sha256_file(path) != sha256:
        return "was changed after its sha256 was recorded (or is another file)"
    try:
        with ShowerFile(path, check_values=False) as f:
            attrs, rows = f.attrs, len(f)
    except DataFormatError as e:
        return f"cannot be read ({e})"
    if rows != shard.n:
        return f"holds {rows} showers, the manifest says {shard.n}"
    want = {**job, "seed": shard.seed, "n": shard.n, "first_index": shard.start}
    for key, value in want.items():
        if str(attrs.get(key)) != str(value):
            return f"is not this shard of the job: its {key} is {attrs.get(key)}, the manifest's {value}"
    return None


def plan(kind: str, n: int, seed: int, job: dict[str, Any], shards: int) -> Manifest:
    """Cut showers [0, n) into ``shards`` contiguous ranges as even as possible (the first ones one longer)."""
    if not 1 <= shards <= min(n, MAX_SHARDS):
        raise InputError(f"--shards must be between 1 and min(--n, {MAX_SHARDS}) = {min(n, MAX_SHARDS)}, "
                         f"got {shards}")
    width = len(str(shards - 1))
    q, r = divmod(n, shards)
    bounds = [k * q + min(k, r) for k in range(shards + 1)]
    return Manifest(kind, n, seed, dict(job), [
        Shard(k, f"shard-{k:0{max(width, 5)}d}.h5", bounds[k], bounds[k + 1], seed) for k in range(shards)])


def manifest_path(source: str | os.PathLike[str]) -> Path | None:
    """The manifest a source names: the file itself, or ``manifest.json`` inside a directory; else None."""
    p = Path(source)
    if p.is_dir():
        return p / MANIFEST if (p / MANIFEST).is_file() else None
    return p if p.suffix == ".json" else None


def shard_paths(manifest: str | os.PathLike[str]) -> list[Path]:
    """The shard files of a complete job, in index order, each verified against the manifest
    (``shard_problem``); an incomplete or altered job is an error naming the first bad shard."""
    p = Path(manifest)
    m = Manifest.load(p)
    if m.missing:
        raise DataFormatError(f"{p}: {len(m.missing)} of {len(m.shards)} shards are not finished; rerun the "
                              f"{m.kind} command with the same options to complete them")
    paths = [p.parent / s.file for s in m.shards]
    for s, path in zip(m.shards, paths):
        problem = shard_problem(path, s, m.job, s.sha256)
        if problem is not None:
            raise DataFormatError(f"{path}: shard {s.index} of {p} {problem}; rerun the {m.kind} command with the "
                                  "same options to redo it")
    return paths


class ShowerFiles:
    """Several shower files of one window read as one sample: ``read(start, stop)`` spans file boundaries."""

    def __init__(self, paths: list[Path], name: str | os.PathLike[str]) -> None:
        self.path = Path(name)
        self.files: list[ShowerFile] = []
        try:
            for p in paths:
                f = ShowerFile(p)
                self.files.append(f)
                if f.window != self.files[0].window:
                    raise GeometryMismatchError(f"{p}: window {f.window} differs from {paths[0]} "
                                                f"({self.files[0].window})")
        except BaseException:
            self.close()
            raise
        self.window, self.layout = self.files[0].window, self.files[0].layout
        self.offsets = [0]
        for f in self.files:
            self.offsets.append(self.offsets[-1] + len(f))
        self.n = self.offsets[-1]

    @property
    def attrs(self) -> dict[str, Any]:
        """The first file's attributes, with the count of all files (merged shards read as one run)."""
        attrs = self.files[0].attrs
        if "n" in attrs:
            attrs["n"] = self.n
        return attrs

    def __len__(self) -> int:
        return int(self.n)

    def read(self, start: int = 0, stop: int | None = None) -> ShowerSet:
        """Showers [start, stop) of the concatenated files."""
        stop = self.n if stop is None else min(stop, self.n)
        parts = [f.read(max(start - lo, 0), min(stop, hi) - lo)
                 for f, lo, hi in zip(self.files, self.offsets, self.offsets[1:]) if lo < stop and hi > start]
        return ShowerSet.concatenate(parts) if parts else self.files[0].read(0, 0)

    def iter_chunks(self, chunk_size: int = 1000) -> Iterator[ShowerSet]:
        for start in range(0, self.n, chunk_size):
            yield self.read(start, start + chunk_size)

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> ShowerFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_showers(source: str | os.PathLike[str]) -> ShowerFile | ShowerFiles:
    """A shower file, or a manifest / directory of shards / glob opened as one sample in shard order."""
    p = Path(source)
    if p.is_file() and manifest_path(p) is None:
        return ShowerFile(p)
    return ShowerFiles(expand_paths(source), source)


def expand_paths(sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files from a mix of file paths, shard manifests (a ``.json`` file or a directory holding
    ``manifest.json``: its shards in index order), directories (all ``*.h5``/``*.hdf5`` inside) and globs."""
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        manifest = manifest_path(p)
        if manifest is not None:
            out.extend(shard_paths(manifest))
        elif p.is_dir():
            found = sorted([*p.glob("*.h5"), *p.glob("*.hdf5")])
            if not found:
                raise DataFormatError(f"{p}: directory contains no .h5 or .hdf5 files")
            out.extend(found)
        elif any(c in str(item) for c in "*?["):
            found = sorted(Path(x) for x in glob.glob(str(item)))
            if not found:
                raise DataFormatError(f"{item}: pattern matches no files")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise DataFormatError("no input files given")
    return out


def read_showers(path: str | os.PathLike[str], start: int = 0, stop: int | None = None) -> ShowerSet:
    """Read showers [start, stop) of one file (either layout), or of a shard manifest or folder, into memory."""
    with open_showers(path) as f:
        return f.read(start, stop)


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, layout: str, chunk_size: int = 1000,
            overwrite: bool = False) -> int:
    """Copy ``src`` (a file, or a shard manifest / directory: merged in index order) to ``dst`` in ``layout``,
    chunk by chunk; returns the number of showers. ``dst`` may not be ``src`` nor lie inside its shard set."""
    check_outputs({"dst": dst}, sources={"src": src})
    with open_showers(src) as f, ShowerWriter(dst, f.window, layout=layout, attrs=f.attrs, overwrite=overwrite) as w:
        for chunk in f.iter_chunks(chunk_size):
            w.append(chunk)
        return w.n
