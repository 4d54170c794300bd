"""The paper's doc-level labelling rule (Eq. 2, §A.1): keep or drop from the teacher's educational and format scores.

| Edu ≥ 3 | keep |  | Edu = 2 and Format ≥ 4 | keep |  | Edu < 2 | drop |

Eq. 2 does not list Edu = 2 with Format < 4; by elimination it is a drop (docs/refiners.md). The format score is
consulted only when Edu = 2, so a missing format score matters only then.
"""

from __future__ import annotations

SCORE_RANGE = (0, 5)  # both prompts: "a score between 0 and 5" (§A.1)


def eq2_keep(edu: int | None, fmt: int | None) -> bool | None:
    """True: keep; False: drop; None: undecidable (no edu score, or edu = 2 without a format score)."""
    if edu is None:
        return None
    if edu >= 3:
        return True
    if edu == 2:
        return None if fmt is None else fmt >= 4
    return False
