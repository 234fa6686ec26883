#!/usr/bin/env python3
"""Chat filter throughput: messages/s through normalise + blocked-term matching.

Ours: `match_forms` + `TermMatcher` (one Aho-Corasick automaton) over a generated, realistic
message mix. Baseline, measured in the same run: one compiled regex per term with the same
word-boundary rule, looped over every term, on the same already-normalised messages (so the
baseline is not even charged for normalisation). The baseline runs on a sample and is scaled
to messages/s. Everything is seeded, runs on one core, and takes well under a minute.

    python scripts/bench_chat_filter.py [--terms 10000] [--messages 50000]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from benchlib import machine_line
from livecart.chat.rules.normalize import MatchForms, conflate, match_forms
from livecart.chat.rules.terms import BlockedTerm, TermMatcher

TARGET_RATE = 20_000
TARGET_RATIO = 20.0


def _words(text: str) -> list[str]:
    return text.split()


ONSETS = _words("b c d f g h j k l m n p r s t v w z br cr dr fl gr kl pl pr sl st tr sh ch th")
VOWELS = _words("a e i o u a e i o ai ea ou")
CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "k", "nd", "st", "rk", "ck", "x"]

PRODUCTS = _words("dress jacket sneakers bag lipstick serum watch ring hoodie jeans scarf blender")
COLOURS = _words("red blue black white beige green pink navy olive gold silver")
SIZES = _words("xs s m l xl xxl 36 38 40 42 44 uk8 uk10 eu39")
NAMES = _words("anna ben chloe dan emma finn gina hugo ivy jack kim leo mia noah")
TEMPLATES = [
    "is the {p} still available in {c}?",
    "how much is the {p}",
    "do you have the {p} in size {s}?",
    "love this {c} {p}!!",
    "omg the {p} is so pretty",
    "can you show the back of the {p} please",
    "what material is the {p} made of?",
    "does the {p} run small or true to size?",
    "just bought the {c} one, can't wait",
    "shipping to canada?",
    "hi {n}! first time here",
    "{n} you look amazing today",
    "is there a discount code for the {p}?",
    "will the {p} restock soon?",
    "how long does delivery take",
    "can i pay with paypal",
    "the {c} {p} in {s} please",
    "wait is this the same {p} as last week?",
    "sold out already?? 😭",
    "add to cart done ✅",
    "price for two {p}s?",
    "${d} for the {p}? that's a steal",
    "{d}% off today only?",
    "size {s} or {s2}?",
    "i'm {d}cm tall, which size?",
    "ordered {d} minutes ago, no email yet",
    "check out the review at www.example-reviews.com",
    "my order #{d}{d} hasn't shipped",
]
EMOJI = ["😍😍😍", "🔥🔥", "❤️", "👏👏👏 love it", "😂", "🙌 yes!", "💅✨", "👀"]
FOREIGN = [
    "Das Kleid ist wunderschön, gibt es das in Größe 38?",
    "¿Cuánto cuesta el envío a México?",
    "C'est disponible en noir ?",
    "Сколько стоит доставка?",
    "これはいくらですか？",
    "多少钱？包邮吗？",
    "Quanto custa o frete para o Brasil?",
    "Czy jest rozmiar M?",
]


def make_terms(n: int, rng: random.Random, avoid: set[str]) -> list[str]:
    terms: set[str] = set()
    while len(terms) < n:
        word = "".join(
            rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
            for _ in range(rng.randint(2, 3))
        )
        if 5 <= len(word) <= 12 and word not in avoid:
            terms.add(word)
    return sorted(terms)


def disguise(term: str, rng: random.Random) -> str:
    tricks: list[Callable[[str], str]] = [
        lambda t: t.upper(),
        lambda t: t.translate(str.maketrans("aeios", "43105")),
        lambda t: " ".join(t),
        lambda t: ".".join(t),
        lambda t: "\u200b".join(t),
        lambda t: t.translate(str.maketrans("aceopx", "асеорх")),
        lambda t: "".join(chr(ord(c) + 0xFEE0) if c.isalpha() else c for c in t),
        lambda t: "".join(c + "\u0301" for c in t),
    ]
    return rng.choice(tricks)(term)


def make_messages(n: int, terms: Sequence[str], rng: random.Random) -> list[str]:
    messages: list[str] = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.08:
            text = rng.choice(EMOJI)
        elif roll < 0.15:
            text = rng.choice(FOREIGN)
        else:
            text = rng.choice(TEMPLATES).format(
                p=rng.choice(PRODUCTS),
                c=rng.choice(COLOURS),
                s=rng.choice(SIZES),
                s2=rng.choice(SIZES),
                n=rng.choice(NAMES),
                d=rng.randint(2, 180),
            )
            if rng.random() < 0.1:
                text = text.upper()
        if rng.random() < 0.02:
            text = f"{text} {rng.choice(terms)}"
        elif rng.random() < 0.02:
            text = f"{disguise(rng.choice(terms), rng)} {text}"
        messages.append(text)
    return messages


class NaiveFilter:
    """One compiled regex per normalised term, the same boundary rule, tried one by one."""

    def __init__(self, terms: Sequence[BlockedTerm]) -> None:
        self.rules: list[tuple[re.Pattern[str], str]] = []
        for t in terms:
            forms = match_forms(t.term)
            for key in dict.fromkeys((conflate(forms.leet), conflate(forms.plain))):
                pattern = rf"(?<![^\W\d_]){re.escape(key)}(?![^\W\d_])"
                self.rules.append((re.compile(pattern), t.action))

    def match(self, forms: MatchForms) -> str | None:
        texts = [conflate(forms.leet)]
        if forms.plain != forms.leet:
            texts.append(conflate(forms.plain))
        found: str | None = None
        for rx, action in self.rules:
            if any(rx.search(text) for text in texts):
                if action == "block":
                    return action
                found = found or action
        return found


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` runs."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terms", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--baseline-messages", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20_240_601)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    print(machine_line(), flush=True)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    rng = random.Random(args.seed)
    vocabulary = {w for t in TEMPLATES + FOREIGN for w in re.findall(r"\w+", t.lower())}
    vocabulary |= {*PRODUCTS, *COLOURS, *NAMES}
    words = make_terms(args.terms, rng, vocabulary)
    terms = [BlockedTerm(w, "hold" if rng.random() < 0.1 else "block") for w in words]
    messages = make_messages(args.messages, words, rng)

    started = time.perf_counter()
    matcher = TermMatcher(terms)
    build_s = time.perf_counter() - started

    def ours() -> int:
        return sum(matcher.match(m) is not None for m in messages)

    prepared = [match_forms(m) for m in messages]

    def normalise_only() -> None:
        for m in messages:
            match_forms(m)

    def match_only() -> None:
        for forms in prepared:
            matcher.match_forms(forms)

    ours()  # warm-up
    flagged = ours()
    ours_s = timed(ours, args.repeat)
    norm_s = timed(normalise_only, args.repeat)
    match_s = timed(match_only, args.repeat)

    naive = NaiveFilter(terms)
    sample = prepared[: args.baseline_messages]
    naive_results: list[str | None] = []

    def baseline() -> None:
        naive_results.clear()
        naive_results.extend(naive.match(forms) for forms in sample)

    naive_s = timed(baseline, 1)
    ours_sample = [
        None if (h := matcher.match_forms(forms)) is None else h.action for forms in sample
    ]
    agree = sum(a == b for a, b in zip(ours_sample, naive_results, strict=True))

    n = len(messages)
    rate = n / ours_s
    naive_rate = len(sample) / naive_s
    ratio = rate / naive_rate
    print(
        f"chat filter: {len(matcher):,} terms (automaton built in {build_s:.2f} s), "
        f"{n:,} messages, one core, Python {platform.python_version()}"
    )
    print(f"{'':44}{'messages/s':>12}{'µs/message':>12}")
    rows = [
        ("normalise + match (Aho-Corasick)", rate),
        ("  normalise only", n / norm_s),
        ("  match only, pre-normalised", n / match_s),
        (f"baseline: regex per term ({len(sample)} msgs)", naive_rate),
    ]
    for label, value in rows:
        print(f"{label:44}{value:>12,.0f}{1e6 / value:>12.1f}")
    print(f"{'ratio (ours incl. normalise / baseline)':44}{ratio:>11,.0f}×")
    print(
        f"flagged {flagged:,} of {n:,} messages ({100 * flagged / n:.1f} %); "
        f"ours and baseline agree on {agree}/{len(sample)} sampled messages"
    )
    met = rate >= TARGET_RATE and ratio >= TARGET_RATIO
    print(
        f"target ≥ {TARGET_RATE:,} messages/s and ≥ {TARGET_RATIO:.0f}× baseline: "
        f"{'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
