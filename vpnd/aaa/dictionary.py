"""The RADIUS dictionary vpnd ships (``vpnd/aaa/dictionary``, FreeRADIUS syntax) as a pyrad Dictionary."""

from __future__ import annotations

import functools
from importlib import resources

from pyrad.dictionary import Dictionary

DICTIONARY_RESOURCE = "dictionary"


@functools.cache
def _load_shared() -> Dictionary:
    with resources.as_file(resources.files("vpnd.aaa") / DICTIONARY_RESOURCE) as path:
        return Dictionary(str(path))


def load_dictionary(*extra_paths: str) -> Dictionary:
    """The vpnd dictionary, plus optional extra dictionary files (for site-specific vendors).

    Without extra files the same parsed object is returned every time: parsing takes a few
    milliseconds and the dictionary is never modified after loading.
    """
    if not extra_paths:
        return _load_shared()
    with resources.as_file(resources.files("vpnd.aaa") / DICTIONARY_RESOURCE) as path:
        return Dictionary(str(path), *extra_paths)
