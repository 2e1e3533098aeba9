"""Image folders: `name.jpg` with a sidecar `name.txt` (and optional `name.json`),
or COCO-style captions (`{"images": [...], "annotations": [...]}`) in a `.json`.

One folder (not its subfolders: each is its own source) is one unit of work.
Files are read one at a time. A COCO file yields one pair per annotation, keyed
`<image file stem>#<annotation id>`; its `file_name`s must stay inside the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from lakecurate.udfs.readers.base import (
    READERS,
    RawRecord,
    ReaderOptions,
    SourceFile,
    image_ext,
    is_local,
    join_uri,
    local_path,
    open_binary,
    parse_meta,
)

_COCO_MAX_BYTES = 512 * 1024 * 1024


def list_dir(uri: str) -> list[tuple[str, int, float]]:
    """(name, size, mtime) of the files directly in `uri`, sorted by name."""
    if is_local(uri):
        out = []
        with os.scandir(local_path(uri)) as it:
            for e in it:
                if e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    out.append((e.name, st.st_size, st.st_mtime))
        return sorted(out)
    from lakecurate.udfs.storage import url_to_fs

    fs, path = url_to_fs(uri)
    infos = fs.ls(path, detail=True)
    files = [i for i in infos if i.get("type") == "file"]
    return sorted((i["name"].rsplit("/", 1)[-1], int(i.get("size") or 0), 0.0) for i in files)


def _read(uri: str, cap: int) -> bytes | None:
    """The file's bytes, or None when it is larger than `cap` (read no further)."""
    with open_binary(uri) as f:
        data = f.read(cap + 1)
    return None if len(data) > cap else data


def _stems(names: list[str]) -> dict[str, dict[str, str]]:
    """stem -> {ext: file name}; the extension is everything after the first dot."""
    out: dict[str, dict[str, str]] = {}
    for name in names:
        stem, dot, ext = name.partition(".")
        if dot:
            out.setdefault(stem, {})[ext.lower()] = name
    return out


def _load_coco(uri: str) -> dict | None:
    try:
        doc = json.loads(_read(uri, _COCO_MAX_BYTES) or b"null")
    except (ValueError, OSError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("images"), list) and "annotations" in doc:
        return doc
    return None


def _sidecar_record(
    folder: str, stem: str, files: dict[str, str], opts: ReaderOptions
) -> RawRecord:
    images = [files[e] for e in sorted(files) if image_ext(e)]
    rec = RawRecord(key=stem)
    if len(images) > 1:
        rec.reject = ("duplicate_key", f"{stem!r} has several images: {', '.join(images)}")
        return rec
    try:
        if images:
            rec.image = _read(join_uri(folder, images[0]), opts.max_image_bytes)
            if rec.image is None:
                rec.reject = ("image_too_large", f"{images[0]} is over ingest.max_image_bytes")
                return rec
        if "txt" in files:
            rec.caption = _read(join_uri(folder, files["txt"]), opts.max_caption_bytes)
            if rec.caption is None:
                rec.reject = ("caption_too_long", f"{files['txt']} is over the caption limit")
                return rec
        if "json" in files:
            rec.meta = parse_meta(_read(join_uri(folder, files["json"]), 1 << 20))
            rec.url = rec.meta.get("url") if isinstance(rec.meta.get("url"), str) else None
    except OSError as e:
        rec.reject = ("unreadable_source", f"{stem}: {e}")
    return rec


def _coco_records(folder: str, doc: dict, opts: ReaderOptions) -> Iterator[RawRecord]:
    files = {im.get("id"): im.get("file_name") for im in doc["images"] if isinstance(im, dict)}
    for ann in doc.get("annotations") or []:
        name = files.get(ann.get("image_id"))
        stem = (name or f"image{ann.get('image_id')}").rsplit("/", 1)[-1].partition(".")[0]
        rec = RawRecord(key=f"{stem}#{ann.get('id')}", caption=ann.get("caption"))
        rec.meta = {"coco_image_id": ann.get("image_id"), "coco_annotation_id": ann.get("id")}
        if not isinstance(name, str):
            rec.reject = ("missing_image", f"annotation {ann.get('id')}: no image with that id")
        elif name.startswith("/") or ".." in name.split("/"):
            rec.reject = ("unsafe_member", f"file_name {name!r} leaves the folder")
        else:
            try:
                rec.image = _read(join_uri(folder, name), opts.max_image_bytes)
                if rec.image is None:
                    rec.reject = ("image_too_large", f"{name} is over ingest.max_image_bytes")
            except FileNotFoundError:
                rec.reject = ("missing_image", f"{name} not found in the folder")
            except OSError as e:
                rec.reject = ("unreadable_source", f"{name}: {e}")
        yield rec


@READERS.register("folder")
def read_folder(src: SourceFile, opts: ReaderOptions) -> Iterator[RawRecord]:
    """Pairs of one folder: COCO annotations if a COCO `.json` is there, else sidecars."""
    names = [n for n, _, _ in list_dir(src.uri)]
    stems = _stems(names)
    coco = None
    for stem, files in stems.items():
        if set(files) == {"json"} and (doc := _load_coco(join_uri(src.uri, files["json"]))):
            coco = doc
            del stems[stem]
            break
    if coco is not None:
        yield from _coco_records(src.uri, coco, opts)
        return
    for stem, files in stems.items():
        if any(image_ext(e) or e == "txt" for e in files):
            yield _sidecar_record(src.uri, stem, files, opts)
