"""Greedy keepers of a duplicate group (udfs/keepers.py), without Spark."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from test_dedup_incremental import CHAIN

from lakecurate.udfs import minhash as mh
from lakecurate.udfs.keepers import greedy, keepers_batches


def test_a_chain_of_captions_gets_a_second_keeper():
    sigs = mh.minhash_signatures(list(CHAIN), mh.MinHashParams())
    keeper, sim = greedy(sigs, "minhash", 0.45)
    assert keeper.tolist() == [0, 0, 2, 2]
    assert sim[0] == 1.0 and sim[1] >= 0.45 and sim[3] >= 0.45
    assert sim[2] == pytest.approx(mh.jaccard_estimates(sigs[2:3], sigs[0:1])[0]) and sim[2] < 0.45


def test_hamming_members_go_to_the_most_similar_keeper():
    far = (1 << 20) - 1  # 20 bits from 0: a keeper of its own
    near_far = far ^ 0b1  # 1 bit from `far`, 19 from 0
    hashes = np.array([0, far, 0b11, near_far], dtype=np.uint64)
    keeper, sim = greedy(hashes, "hamming", 1 - 6 / 64)
    assert keeper.tolist() == [0, 1, 0, 1]
    assert sim.tolist() == pytest.approx([1.0, 1 - 20 / 64, 1 - 2 / 64, 1 - 1 / 64])


def test_keepers_batches_visits_each_group_in_rank_order_and_checks_the_kernel():
    a, b = [1.0, 0.0], [0.0, 1.0]
    rows = pa.table(
        {
            "uid": ["x", "p", "y", "z", "q"],
            "group_id": ["g", "h", "g", "g", "h"],
            "pos": [3, 2, 1, 2, 1],
            "vector": [a, a, b, a, a],
        }
    )
    batches = list(keepers_batches(iter(rows.to_batches(max_chunksize=2)), "cosine", 0.93))
    out = pa.Table.from_batches(batches).to_pylist()
    keeper = {r["uid"]: r["keeper_uid"] for r in out}
    # g: y ranks first and keeps itself; z is unlike y (a keeper too); x is z's copy
    assert keeper == {"y": "y", "z": "z", "x": "z", "q": "q", "p": "q"}
    sim = {r["uid"]: r["similarity"] for r in out}
    assert sim["y"] == sim["q"] == 1.0 and sim["z"] < 1.0 and sim["p"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kernel"):
        list(keepers_batches(iter([]), "euclid", 0.5))


def test_past_the_window_only_the_first_and_latest_keepers_are_compared():
    # eight hashes 8 or more bits apart: each is a keeper; the ninth copies one of them
    hashes = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [0], dtype=np.uint64)
    hashes[-1] = hashes[1] ^ 1  # one bit from keeper 1
    keeper, _ = greedy(hashes, "hamming", 1 - 6 / 64, window=8)
    assert keeper.tolist() == list(range(8)) + [1]
    # window 4: keepers 0, 1 (best-ranked) and 6, 7 (latest) are compared
    keeper, _ = greedy(hashes, "hamming", 1 - 6 / 64, window=4)
    assert keeper[-1] == 1
    hashes[-1] = hashes[3] ^ 1  # one bit from keeper 3, outside a window of 4
    keeper, sim = greedy(hashes, "hamming", 1 - 6 / 64, window=4)
    assert keeper[-1] == 8 and sim[-1] < 1 - 6 / 64
    keeper, _ = greedy(hashes, "hamming", 1 - 6 / 64, window=8)
    assert keeper[-1] == 3


def test_phash_members_meet_their_keeper_past_the_window():
    """A copy in a group chained through many look-alikes is compared with the keepers
    within the hash distance, however many keepers the group has."""
    from PIL import Image

    from lakecurate.udfs import phash

    def blob(colour):
        return phash.phash_and_thumbs([_png(Image.new("RGB", (64, 64), colour))])[1][0]

    # 9 keepers 7 bits apart (each a distinct picture), then a copy of keeper 5
    hashes = [(1 << (7 * i)) - 1 for i in range(9)]
    colours = [(28 * i, 250 - 28 * i, 128) for i in range(9)]
    rows = [h.to_bytes(8, "big") + blob(c) for h, c in zip(hashes, colours, strict=True)]
    rows.append((hashes[5] ^ 1).to_bytes(8, "big") + blob(colours[5]))
    vectors = phash.verification_rows(rows)
    keeper, sim = greedy(vectors, "phash_verified", 1 - 6 / 64, window=4)
    assert keeper.tolist() == list(range(9)) + [5]
    assert sim[-1] == pytest.approx(1 - 1 / 64)


def _png(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_a_crop_joins_the_group_through_the_copy_it_resembles(name):
    """Ranked first, a bordered copy (the most pixels) keeps; the original is its
    verified copy; a crop of the original lies too far inside the bordered frame to be
    matched with it directly, but is a verified copy of the original: it joins the
    bordered copy's keeper instead of keeping itself."""
    from PIL import ImageOps
    from test_phash import _jpeg_vector, _photo

    from lakecurate.udfs import phash

    img = _photo(name)
    w, h = img.size
    border = ImageOps.expand(img, border=round(0.07 * min(w, h)), fill="black")
    crop = img.crop((round(0.09 * w), round(0.02 * h), round(0.99 * w), round(0.92 * h)))
    rows = phash.verification_rows([_jpeg_vector(i) for i in (border, img, crop)])
    assert phash.verified_similarity(rows[[0]], rows[2], 1 - 6 / 64)[0] == 0.0  # not directly
    keeper, sim = greedy(rows, "phash_verified", 1 - 6 / 64)
    assert keeper.tolist() == [0, 0, 0]
    assert sim[2] >= 1 - 6 / 64  # its similarity to the copy it was matched with


def test_candidate_edges_are_verified_before_they_form_groups():
    """A hash match is a candidate: only pairs the images verify become edges, so
    look-alikes that share a hash never chain into one component."""
    import pyarrow as pa
    from PIL import Image

    from lakecurate.udfs import phash
    from lakecurate.udfs.keepers import verify_edge_batches

    def vector(h: int, colour) -> bytes:
        img = _png(Image.new("RGB", (64, 64), colour))
        return h.to_bytes(8, "big") + phash.phash_and_thumbs([img])[1][0]

    red, blue = (220, 40, 40), (40, 80, 220)
    edges = [  # (a, b, vector a, vector b, verified similarity or None)
        ("x", "y", vector(0b1011, red), vector(0b1010, red), 1 - 1 / 64),  # a copy
        ("x", "z", vector(0b1011, red), vector(0b1011, blue), None),  # same hash, not alike
        ("w", "y", vector(0, red), vector(0b1111111, red), None),  # 7 bits: too far
        ("w", "v", vector(0, red), vector(0, red), 1.0),  # identical
    ]
    batch = pa.record_batch(
        {
            "a": [e[0] for e in edges],
            "b": [e[1] for e in edges],
            "vector_a": pa.array([e[2] for e in edges], pa.binary()),
            "vector_b": pa.array([e[3] for e in edges], pa.binary()),
        }
    )
    out = pa.Table.from_batches(
        list(verify_edge_batches(iter([batch]), "phash_verified", 1 - 6 / 64))
    ).to_pylist()
    got = {(r["a"], r["b"]): r["similarity"] for r in out}
    want = {(e[0], e[1]): e[4] for e in edges if e[4] is not None}
    assert set(got) == set(want)
    assert all(got[k] == pytest.approx(want[k]) for k in want)
