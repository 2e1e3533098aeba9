"""MinHash signatures and LSH parameters against the real datasketch."""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from lakecurate.udfs import minhash as mh

TEXTS = [
    "A small red circle on the left of a blue background",
    "a small red circle on the left, of a GREEN background!",
    "",
    None,
    "ab",
    "abcde",
    "café crème brûlée 🍰 on a plate",
    "   whitespace\tand\nnewlines   ",
    "photo of a dog running on the beach at sunset with a red ball",
]


@pytest.mark.parametrize(
    "shingle,ngram,num_perm,seed",
    [("char", 5, 128, 1), ("char", 3, 64, 7), ("word", 2, 128, 1), ("word", 1, 32, 3)],
)
def test_signatures_equal_datasketch(shingle, ngram, num_perm, seed):
    params = mh.MinHashParams(num_perm=num_perm, seed=seed, shingle=shingle, ngram=ngram)
    texts = TEXTS * 3  # repeated shingles across the batch share one hash
    ours = mh.minhash_signatures(texts, params, chunk=4)
    for text, sig in zip(texts, ours, strict=True):
        ref = MinHash(num_perm=num_perm, seed=seed)
        ref.update_batch([s.encode("utf-8") for s in mh.shingles(text, shingle, ngram)])
        assert np.array_equal(sig, ref.hashvalues), text
    # the bulk API of datasketch gives the same
    grams = [[s.encode() for s in mh.shingles(t, shingle, ngram)] for t in texts]
    bulk = MinHash.bulk(grams, num_perm=num_perm, seed=seed)
    assert all(np.array_equal(s, m.hashvalues) for s, m in zip(ours, bulk, strict=True))


def test_shingles_normalize_case_space_and_punctuation():
    assert mh.shingles("Red, ROUND  ball!", "word", 1) == ["red", "round", "ball"]
    assert mh.shingles("abc", "char", 5) == ["abc"]
    assert mh.shingles("", "char", 5) == []
    assert mh.shingles("a b c d", "char", 3) == ["a b", " b ", "b c", " c ", "c d"]


@pytest.mark.parametrize("threshold", [0.3, 0.45, 0.5, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128])
def test_bands_match_datasketch_lsh(threshold, num_perm):
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert mh.optimal_bands(threshold, num_perm) == (lsh.b, lsh.r)


def test_jaccard_estimate_matches_datasketch():
    params = mh.MinHashParams()
    a, b = mh.minhash_signatures(TEXTS[:2], params)
    ma, mb = (MinHash(num_perm=128, seed=1) for _ in range(2))
    ma.update_batch([s.encode() for s in mh.shingles(TEXTS[0])])
    mb.update_batch([s.encode() for s in mh.shingles(TEXTS[1])])
    assert mh.jaccard_estimates(a[None], b[None])[0] == pytest.approx(ma.jaccard(mb))


def test_binary_round_trip():
    params = mh.MinHashParams(num_perm=32)
    sigs = mh.minhash_signatures(TEXTS, params)
    arr = mh.to_binary(sigs)
    assert np.array_equal(mh.from_binary(arr, 32), sigs)
    assert np.array_equal(mh.from_binary(arr.slice(2, 4), 32), sigs[2:6])
    with pytest.raises(ValueError, match="256 bytes"):
        mh.from_binary(arr, 32 * 2)


def test_band_rows_hash_each_band_of_the_signature_in_spark(spark):
    from lakecurate.curation.dedup.near import band_rows

    params = mh.MinHashParams(num_perm=32, bands=4, rows=8)
    sigs = mh.minhash_signatures(TEXTS, params)
    # a copy of TEXTS[0] whose last band differs: it shares the first three buckets only
    changed = sigs[0].copy()
    changed[-1] ^= 1
    arr = mh.to_binary(np.vstack([sigs, changed[None]]))
    uids = [f"u{i}" for i in range(len(TEXTS))] + ["changed"]
    reps = spark.createDataFrame(
        [(u, bytes(arr[i].as_py()), False) for i, u in enumerate(uids)],
        "uid string, signature binary, is_new boolean",
    )
    rows = band_rows(reps, params).collect()
    assert len(rows) == 4 * len(uids)
    bucket = {(r["uid"], r["band"]): r["bucket"] for r in rows}
    assert [bucket["u2", k] == bucket["u3", k] for k in range(4)] == [True] * 4  # "" and None
    assert [bucket["u0", k] == bucket["changed", k] for k in range(4)] == [True] * 3 + [False]
    assert bucket["u0", 0] != bucket["u6", 0]
    order = {r["uid"]: r["order"] for r in rows}
    assert order["u0"] == order["changed"] == bytes(arr[0].as_py())[:8]


def test_spark_signatures_equal_the_batch_function(spark):
    params = mh.MinHashParams(num_perm=64)
    rows = [(f"u{i}", t) for i, t in enumerate(TEXTS)]
    df = spark.createDataFrame(rows, "uid string, caption string").repartition(2)
    out = df.mapInArrow(
        lambda it: mh.signature_batches(it, params), "uid string, signature binary"
    ).collect()
    expected = mh.minhash_signatures(TEXTS, params)
    got = {r["uid"]: np.frombuffer(r["signature"], "<u4") for r in out}
    for i in range(len(TEXTS)):
        assert np.array_equal(got[f"u{i}"], expected[i])
