"""Texts from files shown on a terminal: control characters escaped, so that a name cannot forge a line."""

from __future__ import annotations


def escape_control(text: str) -> str:
    """text with each character Python does not count as printable (newline, carriage return, ESC, bidirectional
    overrides, ...) written as its escape, e.g. a newline as \\n: a run folder named 'a\\nb' prints on one line."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)
