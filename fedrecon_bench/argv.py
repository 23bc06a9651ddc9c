"""Looking up `key=value` arguments in a Hydra command line."""
from __future__ import annotations


def find(argv, key):
    """Index and value of `[+|++]key=value` in argv, or (None, None)."""
    for i, a in enumerate(argv):
        k, sep, val = a.lstrip("+").partition("=")
        if sep and k == key:
            return i, val
    return None, None
