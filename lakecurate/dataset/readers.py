"""Reading a published version for training, with its deletion lists applied.

A version directory holds WebDataset shards, a Parquet index per shard, a
`manifest.json`, and for shards reused from the parent version a deletion list
(`shard-NNNNNN.deleted.parquet`: the keys of the tar's samples this version leaves out).
The readers here give exactly the version's samples:

    import lakecurate.dataset as lcd
    ds = lcd.webdataset("lake/_published/demo/v3").decode("pil")   # a WebDataset pipeline
    ds = lcd.ShardDataset("lake/_published/demo/v3")                # a torch IterableDataset

Both split shards over DataLoader workers (and, for `ShardDataset`, over ranks), and
both hold at most one shard's deletion list in memory at a time. Readers that cannot
filter use `lakecurate versions materialize NAME@V --out DIR`, which writes an exact
copy (a manifest with `"exact": true`). No Spark and no lake access is needed here:
`path` is the version's directory (or its manifest), on any fsspec filesystem.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch.utils.data

from lakecurate.udfs.shards import read_deleted_keys, sample_key
from lakecurate.udfs.storage import url_to_fs

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Version:
    """A published version's directory and manifest."""

    uri: str
    manifest: dict

    @property
    def exact(self) -> bool:
        """Whether the shards hold exactly the version's samples (no deletion lists)."""
        return not any(s.get("deletions") for s in self.manifest["shards"])

    @property
    def shard_urls(self) -> list[str]:
        return [f"{self.uri}/{s['name']}" for s in self.manifest["shards"]]

    @property
    def deletion_files(self) -> dict[str, str]:
        """shard URL -> URL of its deletion list, for the shards that have one."""
        return {
            f"{self.uri}/{s['name']}": f"{self.uri}/{s['deletions']}"
            for s in self.manifest["shards"]
            if s.get("deletions")
        }

    @property
    def num_samples(self) -> int:
        return int(self.manifest["counts"]["num_samples"])


def open_version(path: str) -> Version:
    """The version at `path`: its directory or its `manifest.json` (local or a URL)."""
    uri = str(path).rstrip("/")
    if uri.endswith(f"/{MANIFEST}"):
        uri = uri[: -len(MANIFEST) - 1]
    fs, root = url_to_fs(uri)
    try:
        with fs.open(f"{root}/{MANIFEST}", "r") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{uri} holds no {MANIFEST}: pass a published version's directory "
            "(`lakecurate versions show NAME@V` prints it)"
        ) from None
    return Version(uri, manifest)


class SkipDeleted:
    """A WebDataset `select` predicate: False for a sample in its shard's deletion list.

    Picklable (DataLoader workers get a copy); each worker loads one shard's list at a
    time, when the first sample of that shard arrives."""

    def __init__(self, deletion_files: dict[str, str]):
        self.deletion_files = dict(deletion_files)
        self._url: str | None = None
        self._keys: frozenset[str] = frozenset()

    def keys_of(self, url: str) -> frozenset[str]:
        if url != self._url:
            f = self.deletion_files.get(url)
            self._keys = read_deleted_keys(f) if f else frozenset()
            self._url = url
        return self._keys

    def __call__(self, sample: dict) -> bool:
        return sample["__key__"] not in self.keys_of(sample["__url__"])

    def __getstate__(self):
        return {"deletion_files": self.deletion_files, "_url": None, "_keys": frozenset()}


def webdataset(path: str, **kwargs: Any):
    """A `webdataset.WebDataset` pipeline over the version at `path` that skips the samples
    in deletion lists. `kwargs` go to `WebDataset` (`shardshuffle` defaults to False);
    chain `.decode(...)`, `.to_tuple(...)`, `.batched(...)` as usual."""
    import webdataset as wds

    version = open_version(path)
    kwargs.setdefault("shardshuffle", False)
    ds = wds.WebDataset(version.shard_urls, **kwargs)
    return ds if version.exact else ds.select(SkipDeleted(version.deletion_files))


class ShardDataset(torch.utils.data.IterableDataset):
    """The samples of the version at `path` as a torch IterableDataset, in shard order.

    Each sample is a dict of its members' bytes by extension (`jpg`/`png`/..., `txt`,
    `json`) plus `__key__` and `__url__`, passed through `transform` if given. Shards are
    split over `world_size` ranks (this one is `rank`), then over DataLoader workers."""

    def __init__(
        self,
        path: str,
        transform: Callable[[dict], Any] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.version = open_version(path)
        self.transform = transform
        self.rank, self.world_size = rank, world_size

    def my_shards(self) -> list[str]:
        urls = self.version.shard_urls[self.rank :: self.world_size]
        info = torch.utils.data.get_worker_info()
        return urls if info is None else urls[info.id :: info.num_workers]

    def __iter__(self) -> Iterator[Any]:
        return self.samples(self.my_shards())

    def samples(self, urls: list[str]) -> Iterator[Any]:
        """The version's samples in the shards `urls` (of `shard_urls`), in that order."""
        deletions = self.version.deletion_files
        for url in urls:
            skip = read_deleted_keys(deletions[url]) if url in deletions else frozenset()
            for sample in read_shard(url):
                if sample["__key__"] not in skip:
                    yield sample if self.transform is None else self.transform(sample)


def read_shard(url: str) -> Iterator[dict]:
    """The samples of one tar, streamed: members grouped by key, in tar order."""
    fs, path = url_to_fs(url)
    sample: dict = {}
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key = sample_key(info.name)
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            if not sample:
                sample = {"__key__": key, "__url__": url}
            ext = info.name.rsplit("/", 1)[-1].split(".", 1)[1] if "." in info.name else ""
            sample[ext] = tar.extractfile(info).read()
    if sample:
        yield sample
