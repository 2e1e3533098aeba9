"""Readers and validation without Spark: every bad input becomes the right reject reason."""

from __future__ import annotations

import base64
import collections
import gzip
import io
import json
import tarfile
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from PIL import Image

from lakecurate.sources.discover import SourceNotFound, expand_source
from lakecurate.udfs.images import ImageLimits, ImageRejected, probe_image
from lakecurate.udfs.readers.base import SourceFile
from lakecurate.udfs.readers.task import IngestOptions, checksum_source, ingest_source
from lakecurate.udfs.text import make_uid, sha256_hex


def img(w: int = 64, h: int = 48, fmt: str = "JPEG", color=(200, 30, 30), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format=fmt, **save)
    return buf.getvalue()


def noisy(w: int = 64, h: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((w, h), 60).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if data else None)


def rows_of(path, fmt: str, opts: IngestOptions | None = None) -> list[dict]:
    src = checksum_source(SourceFile(str(path), fmt))
    return list(ingest_source(src, opts or IngestOptions()))


def by_kind(rows: list[dict]) -> tuple[dict, dict, dict]:
    pairs = {r["source_key"]: r for r in rows if r["kind"] == "pair"}
    rejects = collections.defaultdict(set)
    for r in rows:
        if r["kind"] == "reject":
            rejects[r["source_key"]].add(r["reason"])
    (source,) = [r for r in rows if r["kind"] == "source"]
    return pairs, dict(rejects), source


# --- images ------------------------------------------------------------------------------


def test_probe_reads_exif_orientation_and_format():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed 48 wide, 64 high
    info = probe_image(img(64, 48, exif=exif), ImageLimits())
    assert (info.format, info.width, info.height, info.orientation) == ("jpeg", 48, 64, 6)
    assert probe_image(img(64, 48, "PNG"), ImageLimits()).format == "png"
    assert probe_image(img(64, 48, "WEBP"), ImageLimits()).format == "webp"


@pytest.mark.parametrize(
    "data,limits,reason",
    [
        (b"", ImageLimits(), "empty_image"),
        (b"\xff\xd8\xff\xe0 not a jpeg at all", ImageLimits(), "undecodable_image"),
        (b"GIF89a-garbage", ImageLimits(), "undecodable_image"),
        (noisy()[:-200], ImageLimits(), "truncated_image"),
        (noisy()[:-200], ImageLimits(decode="header"), "truncated_image"),
        (img(64, 48, "PPM"), ImageLimits(), "unsupported_format"),
        (img(8, 8), ImageLimits(), "too_small"),
        (img(64, 48), ImageLimits(max_pixels=1000), "too_many_pixels"),
        (img(64, 48), ImageLimits(max_bytes=100), "image_too_large"),
    ],
)
def test_probe_rejects(data, limits, reason):
    with pytest.raises(ImageRejected) as e:
        probe_image(data, limits)
    assert e.value.reason == reason


def _png_header_only(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h 1-bit pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9_000, 60_000])  # over our limit; over Pillow's own too
def test_decompression_bomb_is_refused_from_the_header(side):
    with pytest.raises(ImageRejected) as e:
        probe_image(_png_header_only(side, side), ImageLimits(max_pixels=50_000_000))
    assert e.value.reason == "too_many_pixels"


# --- webdataset tars -----------------------------------------------------------------------


@pytest.fixture
def bad_tar(tmp_path):
    path = tmp_path / "bad.tar"
    good = img()
    with tarfile.open(path, "w") as tar:
        add(tar, "ok1.jpg", good)
        add(tar, "ok1.txt", b"a red square")
        add(tar, "ok1.json", json.dumps({"url": "http://x/ok1.jpg"}).encode())
        add(tar, "nocap.jpg", img(color=(1, 2, 3)))
        add(tar, "noimg.txt", b"caption without image")
        add(tar, "latin1.jpg", img(color=(4, 5, 6)))
        add(tar, "latin1.txt", "caf\u00e9".encode("latin-1"))
        add(tar, "empty.jpg", img(color=(7, 8, 9)))
        add(tar, "empty.txt", b"   \n")
        add(tar, "long.jpg", img(color=(9, 9, 9)))
        add(tar, "long.txt", b"x" * 5000)
        add(tar, "corrupt.jpg", b"\xff\xd8\xff\xe0garbage")
        add(tar, "corrupt.txt", b"broken")
        add(tar, "zero.jpg", b"")
        add(tar, "zero.txt", b"zero bytes")
        add(tar, "link.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add(tar, "hard.jpg", type=tarfile.LNKTYPE, linkname="ok1.jpg")
        add(tar, "dev.jpg", type=tarfile.CHRTYPE)
        add(tar, "/abs.jpg", good)
        add(tar, "sub/../../up.jpg", good)
        add(tar, "ok1.jpg", img(color=(50, 50, 50)))  # the key again, later in the shard
        add(tar, "ok1.txt", b"another caption")
        add(tar, "ok2.png", img(fmt="PNG", color=(0, 90, 0)))
        add(tar, "ok2.txt", "ein gr\u00fcnes Quadrat".encode())
        add(tar, "ok2.cls", b"3")
    return path


def test_tar_records_become_pairs_or_reasoned_rejects(bad_tar):
    pairs, rejects, source = by_kind(rows_of(bad_tar, "webdataset"))
    assert set(pairs) == {"ok1", "ok2"}
    assert pairs["ok1"]["url"] == "http://x/ok1.jpg"
    assert pairs["ok1"]["uid"] == make_uid(sha256_hex(img()), "a red square")
    assert pairs["ok2"]["caption"] == "ein gr\u00fcnes Quadrat"
    assert (pairs["ok2"]["image_format"], pairs["ok2"]["width"]) == ("png", 64)
    assert rejects == {
        "nocap": {"missing_caption"},
        "noimg": {"missing_image"},
        "latin1": {"caption_not_utf8"},
        "empty": {"empty_caption"},
        "long": {"caption_too_long"},
        "corrupt": {"undecodable_image"},
        "zero": {"empty_image"},
        "link.jpg": {"unsafe_member"},
        "hard.jpg": {"unsafe_member"},
        "dev.jpg": {"unsafe_member"},
        "/abs.jpg": {"unsafe_member"},
        "sub/../../up.jpg": {"unsafe_member"},
        "ok1": {"duplicate_key"},
    }
    assert (source["status"], source["rows_ok"], source["rows_rejected"]) == ("ok", 2, 13)
    assert source["checksum"] == "xxh3_128:" + xxhash.xxh3_128(bad_tar.read_bytes()).hexdigest()
    sha = checksum_source(SourceFile(str(bad_tar), "webdataset"), "sha256").checksum
    assert sha == "sha256:" + sha256_hex(bad_tar.read_bytes())


def _shard(path, n: int, gz: bool = False) -> None:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for i in range(n):
            add(tar, f"k{i:03d}.jpg", img(color=(i, 2 * i % 255, 40)))
            add(tar, f"k{i:03d}.txt", f"sample {i}".encode())


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_tar_keeps_records_before_the_damage(tmp_path, gz):
    whole = tmp_path / ("whole.tar.gz" if gz else "whole.tar")
    _shard(whole, 20, gz)
    cut = tmp_path / ("cut.tar.gz" if gz else "cut.tar")
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    pairs, rejects, source = by_kind(rows_of(cut, "webdataset"))
    assert 1 <= len(pairs) < 20  # gzip loses up to one read buffer before the cut
    assert set(pairs) == {f"k{i:03d}" for i in range(len(pairs))}  # a prefix of the shard
    assert [r for rs in rejects.values() for r in rs] == ["truncated_tar"]
    assert source["status"] == "partial" and "truncated_tar" in source["error"]
    assert source["rows_ok"] == len(pairs)


def test_unreadable_tar_is_a_failed_source(tmp_path):
    path = tmp_path / "notatar.tar"
    path.write_bytes(b"this is not a tar file" * 100)
    pairs, rejects, source = by_kind(rows_of(path, "webdataset"))
    assert not pairs and source["status"] == "failed"
    assert set().union(*rejects.values()) <= {"unreadable_source", "truncated_tar"}


# --- folders, parquet, jsonl ----------------------------------------------------------------


def test_folder_with_sidecars_and_coco(tmp_path):
    side = tmp_path / "side"
    side.mkdir()
    (side / "a.jpg").write_bytes(img())
    (side / "a.txt").write_text("a red square\n")
    (side / "b.png").write_bytes(img(fmt="PNG"))
    pairs, rejects, source = by_kind(rows_of(side, "folder"))
    assert set(pairs) == {"a"} and pairs["a"]["caption"] == "a red square"
    assert rejects == {"b": {"missing_caption"}}
    assert source["checksum"].startswith("list-sha256:")

    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "1.jpg").write_bytes(img())
    doc = {
        "images": [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "../2.jpg"}],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "first caption"},
            {"id": 11, "image_id": 1, "caption": "second caption"},
            {"id": 12, "image_id": 2, "caption": "outside"},
            {"id": 13, "image_id": 3, "caption": "no such image"},
        ],
    }
    (coco / "captions.json").write_text(json.dumps(doc))
    pairs, rejects, _ = by_kind(rows_of(coco, "folder"))
    assert set(pairs) == {"1#10", "1#11"}
    assert rejects == {"2#12": {"unsafe_member"}, "image3#13": {"missing_image"}}


def test_parquet_with_bytes_and_paths(tmp_path):
    (tmp_path / "p.jpg").write_bytes(img(color=(3, 3, 3)))
    table = pa.table(
        {
            "image": [img(), None, None, b"nope"],
            "image_path": [None, "p.jpg", "missing.jpg", None],
            "caption": ["bytes row", "path row", "lost", "bad"],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    pairs, rejects, source = by_kind(rows_of(tmp_path / "t.parquet", "parquet"))
    assert set(pairs) == {"0", "1"} and pairs["1"]["caption"] == "path row"
    assert rejects == {"2": {"missing_image"}, "3": {"undecodable_image"}}
    assert source["status"] == "ok"


def test_jsonl_base64_and_bad_lines(tmp_path):
    lines = [
        json.dumps({"key": "a", "image": base64.b64encode(img()).decode(), "caption": "b64"}),
        "{not json",
        json.dumps({"key": "c", "image": "***", "caption": "x"}),
        json.dumps({"key": "a", "image": base64.b64encode(img()).decode(), "caption": "again"}),
    ]
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    pairs, rejects, _ = by_kind(rows_of(path, "jsonl"))
    assert set(pairs) == {"a"}
    assert rejects == {"1": {"bad_record"}, "c": {"missing_image"}, "a": {"duplicate_key"}}


# --- discovery ----------------------------------------------------------------------------


def test_discovery_of_dirs_globs_and_missing_paths(tmp_path):
    (tmp_path / "wds").mkdir()
    for i in range(2):
        _shard(tmp_path / "wds" / f"{i:05d}.tar", 2)
        pq.write_table(pa.table({"key": ["x"]}), tmp_path / "wds" / f"{i:05d}.parquet")
    (tmp_path / "wds" / "_tmp").mkdir()
    _shard(tmp_path / "wds" / "_tmp" / "junk.tar", 1)
    units = expand_source(str(tmp_path / "wds"))
    assert [(u.uri.rsplit("/", 1)[-1], u.format) for u in units] == [
        ("00000.tar", "webdataset"),
        ("00001.tar", "webdataset"),
    ]
    assert len(expand_source(str(tmp_path / "wds" / "*.tar"))) == 2
    pq.write_table(pa.table({"url": ["http://x"], "caption": ["c"]}), tmp_path / "list.parquet")
    assert expand_source(str(tmp_path / "list.parquet"))[0].format == "urls"
    with pytest.raises(SourceNotFound):
        expand_source(str(tmp_path / "nope"))
    with pytest.raises(SourceNotFound):
        expand_source(str(tmp_path / "wds"), "parquet")


def test_tar_cut_at_a_member_boundary_is_still_truncated(tmp_path):
    whole = tmp_path / "whole.tar"
    _shard(whole, 10)
    with tarfile.open(whole) as tar:
        offset = tar.getmember(
            "k006.jpg"
        ).offset  # a header boundary: tarfile alone sees a clean end
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:offset])
    pairs, rejects, source = by_kind(rows_of(cut, "webdataset"))
    # k005 was still open when the stream ended: it may have lost members, so it is rejected
    assert set(pairs) == {f"k{i:03d}" for i in range(5)}
    assert rejects == {"k005": {"truncated_tar"}}
    assert source["status"] == "partial"


def test_optional_resize_policy_reencodes_large_images(tmp_path):
    path = tmp_path / "big.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "big.png", img(200, 100, "PNG"))
        add(tar, "big.txt", b"a big image")
        add(tar, "small.jpg", img(40, 30))
        add(tar, "small.txt", b"a small image")
    pairs, _, _ = by_kind(rows_of(path, "webdataset", IngestOptions(resize_max_side=64)))
    big, small = pairs["big"], pairs["small"]
    assert (big["image_format"], big["width"], big["height"]) == ("jpeg", 64, 32)
    assert json.loads(big["meta_json"]) == {"original_width": 200, "original_height": 100}
    assert big["image_sha256"] == sha256_hex(big["image"])
    assert small["image"] == img(40, 30)  # under the limit: bytes as given


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_stream_reads_long_names_in_every_tar_format(tmp_path, fmt):
    """Our tar parser follows pax `path` records, GNU long-name members and the ustar
    prefix field, as `tarfile` writes them."""
    deep = "d" * 60 + "/" + "e" * 60  # > 100 chars: needs pax, GNU 'L' or the ustar prefix
    path = tmp_path / "long.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        for i in range(3):
            add(tar, f"{deep}/k{i}.jpg", img(color=(i, 10, 20)))
            add(tar, f"{deep}/k{i}.txt", f"caption {i} é".encode())
    pairs, rejects, source = by_kind(rows_of(path, "webdataset"))
    assert sorted(pairs) == [f"{deep}/k{i}" for i in range(3)]
    assert pairs[f"{deep}/k1"]["caption"] == "caption 1 é"
    assert not rejects and source["status"] == "ok"


def test_tar_with_a_corrupt_header_keeps_what_came_before(tmp_path):
    path = tmp_path / "bad_header.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(4):
            add(tar, f"k{i}.jpg", img(color=(i, 1, 2)))
            add(tar, f"k{i}.txt", f"caption {i}".encode())
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tar:
        offset = tar.getmember("k2.jpg").offset
    data[offset : offset + 10] = b"XXXXXXXXXX"  # the name changes, the checksum does not
    path.write_bytes(bytes(data))
    pairs, rejects, source = by_kind(rows_of(path, "webdataset"))
    # k1 was still open (more of its members could follow): it goes with the damage
    assert sorted(pairs) == ["k0"] and rejects == {"k1": {"truncated_tar"}}
    assert source["status"] == "partial" and "checksum" in source["error"]


def test_tar_member_names_that_are_not_utf8_stay_distinct_keys(tmp_path):
    """Names are bytes in a tar: invalid UTF-8 is kept visible (backslash escapes), so
    the key is valid text for the tables and two such names do not collide."""
    path = tmp_path / "latin1-names.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for i, name in enumerate(["caf\u00e9", "caf\u00e8"]):
            add(tar, f"{name}.jpg", img(color=(i, 5, 5)))
            add(tar, f"{name}.txt", f"caption {i}".encode())
    pairs, rejects, source = by_kind(rows_of(path, "webdataset"))
    assert sorted(pairs) == ["caf\\xe8", "caf\\xe9"] and not rejects
    assert all(k.encode("utf-8") for k in pairs)
