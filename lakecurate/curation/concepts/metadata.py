"""The `metadata` table's entry lists: imported from a file, or built offline.

* `read_entry_file`: MetaCLIP's published `metadata.json` (a JSON list of strings) or a
  text file of one entry per line. An entry's id is its position in the list, as in
  MetaCLIP; a blank line or a repeat of an earlier entry is skipped (its id unused).
* `build_entries`: what is available without a network, in MetaCLIP's spirit:
  - an English word list from a package (`english-words`, its `web2` list of 234k
    lower-case words; MetaCLIP uses WordNet synsets, which no package ships offline);
  - unigrams of the lake's own captions occurring at least `min_count` times;
  - bigrams of adjacent caption tokens occurring at least `min_count` times whose
    pointwise mutual information, as a ratio p(ab) / (p(a) p(b)), is at least
    `min_pmi`.

  MetaCLIP's thresholds are 100 occurrences for a unigram and PMI 30 for a bigram,
  over English Wikipedia (about 3 billion words). PMI is a ratio of frequencies, so 30
  carries over as is; a count does not: 100 in 3 billion words is 100 x W / 3e9 in a
  lake of W caption words, floored at MIN_COUNT_FLOOR so that a word seen twice in a
  small pool is not a concept (`scaled_min_count`).

Tokens are the caption split on spaces after MetaCLIP's spacing (`udfs/concepts.spaced`),
so every mined entry can match the captions it came from; case is kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from lakecurate.runtime.errors import ConfigError

WIKIPEDIA_WORDS = 3e9
METACLIP_MIN_COUNT = 100
METACLIP_MIN_PMI = 30.0
MIN_COUNT_FLOOR = 5


@dataclass(frozen=True)
class Entries:
    """An entry list: entries with their ids (positions) and where each came from."""

    entries: list[str]
    ids: list[int]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.entries)


def _distinct(items: list[tuple[int, str, str]]) -> Entries:
    seen: set[str] = set()
    out: list[tuple[int, str, str]] = []
    for i, entry, source in items:
        if entry.strip() and entry not in seen:
            seen.add(entry)
            out.append((i, entry, source))
    return Entries([e for _, e, _ in out], [i for i, _, _ in out], [s for _, _, s in out])


def read_entry_file(path: str) -> Entries:
    """The entries of a MetaCLIP `metadata.json` or a text file of one entry a line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("FILE", f"{path}: no such file")
    text = p.read_text(encoding="utf-8")
    source = p.name
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError("FILE", f"{path} starts like JSON but is not: {e}") from None
        bad = next((i for i, x in enumerate(data) if not isinstance(x, str)), None)
        if bad is not None:
            raise ConfigError(
                "FILE",
                f"{path}: item {bad} is {data[bad]!r}; metadata.json must be a list of strings",
            )
        items = [(i, e.strip(), source) for i, e in enumerate(data)]
    else:
        lines = [line.strip() for line in text.splitlines()]
        items = [(i, e, source) for i, e in enumerate(e for e in lines if e)]
    entries = _distinct(items)
    if not entries.entries:
        raise ConfigError("FILE", f"{path} holds no entries")
    return entries


def package_words() -> list[str]:
    """The offline English word list: alphabetic words of two letters or more."""
    from english_words import get_english_words_set

    words = get_english_words_set(["web2"], lower=True)
    return sorted(w for w in words if len(w) > 1 and w.isalpha())


def scaled_min_count(caption_words: int) -> int:
    """MetaCLIP's 100-in-Wikipedia, scaled to a pool of `caption_words` words."""
    return max(MIN_COUNT_FLOOR, math.ceil(METACLIP_MIN_COUNT * caption_words / WIKIPEDIA_WORDS))


@dataclass(frozen=True)
class Mined:
    unigrams: list[str]
    bigrams: list[str]
    words: int  # caption tokens seen
    min_count: int


def mine_captions(captions, min_count: int | None, min_pmi: float) -> Mined:
    """Unigrams and PMI bigrams of a DataFrame of `caption` (Spark; only the counts
    that pass reach the driver)."""
    from pyspark.sql import functions as F

    from lakecurate.udfs.concepts import BREAKS, PUNCTUATION

    text = F.concat(F.lit(" "), F.coalesce(F.col("caption"), F.lit("")), F.lit(" "))
    for p in PUNCTUATION:
        text = F.replace(text, F.lit(p), F.lit(f" {p} "))
    for b in BREAKS:
        text = F.replace(text, F.lit(b), F.lit(" "))
    tokens = F.filter(F.split(F.trim(text), " +"), lambda t: t != "")
    toks = captions.select(tokens.alias("t")).persist()
    try:
        uni = toks.select(F.explode("t").alias("w")).groupBy("w").count()
        uni = uni.filter(F.col("w").rlike(r"[^\W\d_]")).persist()  # has a letter
        words = toks.select(F.sum(F.size("t")).alias("n")).first()["n"] or 0
        floor = scaled_min_count(words) if min_count is None else min_count
        unigrams = [r["w"] for r in uni.filter(F.col("count") >= floor).orderBy("w").collect()]
        adjacent = "transform(sequence(0, size(t) - 2), i -> struct(t[i] AS a, t[i + 1] AS b))"
        pairs = toks.filter(F.size("t") >= 2).select(F.explode(F.expr(adjacent)).alias("p"))
        big = pairs.select("p.a", "p.b")
        big = big.groupBy("a", "b").count().filter(F.col("count") >= floor)
        ua = uni.select(F.col("w").alias("a"), F.col("count").alias("ca"))
        ub = uni.select(F.col("w").alias("b"), F.col("count").alias("cb"))
        pmi = F.col("count") * F.lit(float(max(words, 1))) / (F.col("ca") * F.col("cb"))
        rows = big.join(ua, "a").join(ub, "b").filter(pmi >= min_pmi).orderBy("a", "b").collect()
        uni.unpersist()
    finally:
        toks.unpersist()
    return Mined(unigrams, [f"{r['a']} {r['b']}" for r in rows], int(words), floor)


def build_entries(mined: Mined | None, words: list[str]) -> Entries:
    """Package words, then the mined unigrams, then the bigrams (first source wins)."""
    items = [(0, w, "words:english-words/web2") for w in words]
    if mined is not None:
        items += [(0, w, "unigram") for w in mined.unigrams]
        items += [(0, b, "bigram") for b in mined.bigrams]
    kept = _distinct(items)
    return Entries(kept.entries, list(range(len(kept))), kept.sources)
