"""Check a finished giveaway's draw from what the server publishes (SPEC §13).

    python scripts/verify_giveaway.py http://127.0.0.1:8000 gwy_...

Fetches `GET /api/giveaways/{id}` and checks, with nothing but SHA-256:
  1. SHA-256(seed) (hex) equals the commitment published when the giveaway opened;
  2. the winners are the `winners` distinct entrants with the smallest
     hex(SHA-256(seed + ":" + user_id)), smallest first.
Prints OK, or each problem found; exits 0 when OK, 1 otherwise. The commitment is worth
most when compared with the one you saw at the start (the `giveaway` room event or a saved
copy of this URL): pass it with `--commitment HEX`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from typing import Any

import httpx


def recompute(seed: str, entrants: list[str], winners: int) -> list[str]:
    """The winners by the published rule (independent of livecart's own code)."""

    def key(user: str) -> str:
        return hashlib.sha256((seed + ":" + user).encode("utf-8")).hexdigest()

    return sorted(set(entrants), key=lambda u: (key(u), u))[: max(0, winners)]


def check(giveaway: dict[str, Any], *, commitment: str | None = None) -> list[str]:
    """The problems with a giveaway as `GET /api/giveaways/{id}` returns it (empty: OK)."""
    problems: list[str] = []
    if giveaway.get("status") != "ended":
        return [f"the giveaway is {giveaway.get('status')!r}, not ended: nothing to check yet"]
    seed, entrants, drawn = giveaway.get("seed"), giveaway.get("entrants"), giveaway.get("drawn")
    if not isinstance(seed, str) or not isinstance(entrants, list) or not isinstance(drawn, list):
        return ["seed, entrants or drawn missing from the response"]
    published = str(giveaway.get("commitment", ""))
    if hashlib.sha256(seed.encode("utf-8")).hexdigest() != published:
        problems.append("SHA-256(seed) does not match the published commitment")
    if commitment is not None and commitment.lower() != published.lower():
        problems.append("the commitment differs from the one you saw at the start")
    if len(set(entrants)) != len(entrants):
        problems.append("the entrant list repeats a user")
    expected = recompute(seed, [str(e) for e in entrants], int(giveaway.get("winners", 0)))
    if expected != drawn:
        problems.append(f"the winners should be {expected}, the server says {drawn}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("id", help="the giveaway id")
    parser.add_argument("--commitment", help="the commitment you saw when it opened")
    args = parser.parse_args(argv)
    try:
        reply = httpx.get(f"{args.url.rstrip('/')}/api/giveaways/{args.id}", timeout=10)
    except httpx.HTTPError as exc:
        print(f"cannot fetch the giveaway: {exc}")
        return 1
    if reply.status_code != 200:
        print(f"cannot fetch the giveaway: HTTP {reply.status_code} {reply.text[:200]}")
        return 1
    giveaway = reply.json()
    problems = check(giveaway, commitment=args.commitment)
    if problems:
        for problem in problems:
            print("WRONG:", problem)
        return 1
    print(
        f"OK: giveaway {giveaway['id']}: SHA-256(seed) = commitment {giveaway['commitment']}; "
        f"{len(giveaway['drawn'])} winner(s) of {len(giveaway['entrants'])} entrant(s) "
        f"recomputed: {', '.join(giveaway['drawn']) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
