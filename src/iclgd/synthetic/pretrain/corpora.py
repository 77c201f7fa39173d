"""The pretraining corpora by name: each a seeded generator of token batches with its own vocabulary.

    corpus = make_corpus("icc", {"n_inputs": 64})
    ids = corpus.pretraining_batch(numpy.random.default_rng([seed, step]), batch_size, length)
    corpus.words                      # vocabulary words after the specials (see tokenizer.py)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

from iclgd.errors import UserError
from iclgd.synthetic.pretrain.ginc import GINC
from iclgd.synthetic.pretrain.icc import ICC, ICCExemplars
from iclgd.synthetic.pretrain.markov import MarkovChains


class Corpus(Protocol):
    words: tuple[str, ...]

    def pretraining_batch(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray: ...


CORPORA: dict[str, type] = {"icc": ICC, "icc-exemplars": ICCExemplars, "ginc": GINC, "markov": MarkovChains}


def make_corpus(name: str, options: dict[str, Any] | None = None) -> Corpus:
    """The corpus ``name`` with ``options`` (its dataclass fields); UserError for unknown names or fields."""
    if name not in CORPORA:
        raise UserError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}")
    cls = CORPORA[name]
    options = dict(options or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise UserError(f"corpus {name!r} has no option(s) {', '.join(unknown)}; "
                        f"its options: {', '.join(sorted(fields))}")
    for key, value in options.items():
        if isinstance(value, list):
            options[key] = tuple(value)
    try:
        return cls(**options)
    except TypeError as err:
        raise UserError(f"corpus {name!r}: bad option value ({err})") from None


def heldout_task(name: str, options: dict[str, Any] | None = None) -> str:
    """The first held-out evaluation task of corpus ``name`` (icc: icc-heldout); UserError if it has none."""
    tasks = list(getattr(make_corpus(name, options), "heldout", {}))
    if not tasks:
        raise UserError(f"corpus {name!r} has no held-out task: give --task (icc-heldout and icc-exemplars-heldout "
                        "belong to the icc corpora)")
    return tasks[0]
