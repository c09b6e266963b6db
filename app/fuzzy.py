"""Fuzzy matching for the quick-add popup: letters in order, rewarded for runs and word starts."""

from __future__ import annotations


def fuzzy_score(query: str, text: str) -> float | None:
    """A score (higher is better) when every letter of `query` appears in `text` in order, else None."""
    query = query.lower().strip()
    text_l = text.lower()
    if not query:
        return 0.0
    if query in text_l:
        start = text_l.index(query)
        return 100.0 + (20.0 if start == 0 or not text_l[start - 1].isalnum() else 0.0) - start * 0.1
    score, pos, run = 0.0, -1, 0
    for ch in query:
        if ch == " ":
            continue
        found = text_l.find(ch, pos + 1)
        if found < 0:
            return None
        run = run + 1 if found == pos + 1 else 0
        word_start = found == 0 or not text_l[found - 1].isalnum()
        score += 1.0 + run * 2.0 + (3.0 if word_start else 0.0) - min(found - pos - 1, 10) * 0.2
        pos = found
    return score


def rank(query: str, items: list[tuple[str, str]]) -> list[str]:
    """items: (key, searchable text); returns the matching keys, best first."""
    scored = []
    for index, (key, text) in enumerate(items):
        score = fuzzy_score(query, text)
        if score is not None:
            scored.append((-score, index, key))
    return [key for _, _, key in sorted(scored)]
