"""One-line error messages: every problem is reported as one line that names it and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a traceback's text often spans several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def suggest(word: str, choices: Iterable[str], prefix: str = "", otherwise: str = "") -> str:
    """``did you mean PREFIX+closest?`` when a choice is close to ``word``, else ``otherwise`` (default: the list
    of valid choices)."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean {prefix}{close[0]}?"
    return otherwise or f"valid keys: {', '.join(prefix + c for c in choices)}"
