"""Generated captions with controlled edits, shared by the dedup benchmarks.

Web alt-text is short and formulaic, so unrelated captions share many words; the
generator draws from a few hundred words and a handful of sentence frames so that
precision is tested against realistic overlap, not against random strings.
"""

from __future__ import annotations

import random

ADJ = (
    "small large old young bright dark wooden red blue green yellow white black brown "
    "grey golden silver happy sleepy tall short ancient modern rusty shiny colourful "
    "vintage cozy empty crowded quiet busy snowy sunny rainy foggy tiny huge pale fluffy "
    "striped spotted frozen wild wet dry"
).split()
NOUN = (
    "dog cat horse bird child woman man girl boy car bicycle train boat house bridge "
    "tree flower mountain river lake beach street city market kitchen table chair window "
    "door garden field forest road castle church tower lamp book cup plate cake pizza "
    "guitar piano phone laptop camera bus truck plane cow sheep duck fish apple banana "
    "sandwich umbrella hat jacket shoe bag clock sofa bed painting statue fountain"
).split()
VERB = (
    "sitting standing running walking lying playing jumping sleeping eating looking "
    "waiting parked floating flying resting hanging leaning shining"
).split()
PLACE = (
    "on the grass|in the snow|near the water|under a tree|on a wooden table|in the city|"
    "at the beach|by the window|in a field|on the street|in the kitchen|at night|"
    "in the morning|during sunset|in the park|next to a wall|on the sofa|in the garden"
).split("|")
FRAMES = (
    "a {a1} {n1} {v} {p}",
    "a {a1} {n1} {v} {p} with a {a2} {n2}",
    "photo of a {a1} {n1} and a {a2} {n2} {p}",
    "{a1} {n1} {v} {p}, {a2} {n2} in the background",
    "close up of a {a1} {n1} {v} next to a {a2} {n2} {p}",
    "a {a1} {n1} {v} {p} while a {a2} {n2} is {v2} {p2}",
    "stock image: {a1} {n1} {v} {p} - {a2} {n2} and {a3} {n3} nearby",
    "the {a1} {n1} is {v} {p} and the {a2} {n2} is {v2} {p2} as a {a3} {n3} watches",
)
MODERNIZE = {"colourful": "colorful", "grey": "gray", "cozy": "cosy", "photo": "photograph"}
PUNCT = (",", ".", "!", " -", ":", ";")


def caption(rng: random.Random) -> str:
    """One caption of roughly 8-40 words."""
    c = rng.choice(FRAMES).format(
        a1=rng.choice(ADJ), a2=rng.choice(ADJ), a3=rng.choice(ADJ),
        n1=rng.choice(NOUN), n2=rng.choice(NOUN), n3=rng.choice(NOUN),
        v=rng.choice(VERB), v2=rng.choice(VERB), p=rng.choice(PLACE), p2=rng.choice(PLACE),
    )  # fmt: skip
    if rng.random() < 0.4:  # a longer tail, as alt-text often has
        c += ", " + rng.choice(FRAMES).format(
            a1=rng.choice(ADJ), a2=rng.choice(ADJ), a3=rng.choice(ADJ),
            n1=rng.choice(NOUN), n2=rng.choice(NOUN), n3=rng.choice(NOUN),
            v=rng.choice(VERB), v2=rng.choice(VERB), p=rng.choice(PLACE), p2=rng.choice(PLACE),
        )  # fmt: skip
    return c


def substitute(text: str, rng: random.Random, k: int) -> str:
    """Change k words (each to another word of the same kind where possible)."""
    words = text.split()
    for i in rng.sample(range(len(words)), min(k, len(words))):
        w = words[i].strip(",.")
        pool = ADJ if w in ADJ else NOUN if w in NOUN else VERB if w in VERB else ADJ + NOUN
        words[i] = rng.choice([x for x in pool if x != w])
    return " ".join(words)


def modernize(text: str, rng: random.Random) -> str:
    """Spelling variants, case and punctuation changes (a light edit)."""
    for old, new in MODERNIZE.items():
        text = text.replace(old, new)
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = words[i].rstrip(",.") + rng.choice(PUNCT)
    out = " ".join(words)
    return out.capitalize() if rng.random() < 0.5 else out


def paraphrase(text: str, rng: random.Random) -> str:
    """A heavier rewrite: clause order swapped and about a third of the words replaced."""
    parts = [p.strip() for p in text.replace(" - ", ", ").split(",") if p.strip()]
    rng.shuffle(parts)
    out = ", ".join(parts)
    return substitute(out, rng, max(3, len(out.split()) // 3))


EDITS = {
    "1 word": lambda t, r: substitute(t, r, 1),
    "2 words": lambda t, r: substitute(t, r, 2),
    "3 words": lambda t, r: substitute(t, r, 3),
    "spelling+punct": modernize,
    "paraphrase": paraphrase,
}
LIGHT = ("1 word", "2 words", "3 words", "spelling+punct")


def captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [caption(rng) for _ in range(n)]


def labeled_pairs(n_base: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int, str]]]:
    """Base captions plus one edited copy of each for every edit kind.

    Returns (texts, truth) where truth holds (i, j, edit) for each true near-dup pair.
    """
    rng = random.Random(seed)
    base = list(dict.fromkeys(caption(rng) for _ in range(n_base)))
    texts = list(base)
    truth = []
    for name, edit in EDITS.items():
        for i, t in enumerate(base):
            texts.append(edit(t, rng))
            truth.append((i, len(texts) - 1, name))
    return texts, truth
