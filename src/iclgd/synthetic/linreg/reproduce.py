"""`iclgd reproduce vonoswald2023`: von Oswald et al.'s linear-regression experiment in one command.

It runs the linreg commands in ``DIR``: ``iclgd linreg train`` for each depth (``DIR/lsa<K>``), ``iclgd linreg
compare`` (with the out-of-distribution sweeps) on each, and Shen et al.'s ``critique`` on the one-layer run (the
construction is one layer). A rerun reuses what is trained (a run folder holding the same config is not retrained)
and recomputes the comparisons, which take seconds. ``--quick`` trains depths 1 and 2 for fewer steps and
evaluates on fewer tasks: a couple of minutes on 2 cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iclgd.checks import check_output_dir
from iclgd.synthetic.linreg.config import CompareConfig, CritiqueConfig, TrainConfig


@dataclass(frozen=True)
class LinregProtocol:
    """Depths to train (with their train settings), the compare and critique settings; ``quick`` overrides each."""

    title: str
    depths: tuple[int, ...]
    quick_depths: tuple[int, ...]
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields for every depth
    quick_train: dict[int, dict[str, Any]] = field(default_factory=dict)  # depth -> TrainConfig fields
    compare: dict[str, Any] = field(default_factory=dict)
    quick_compare: dict[str, Any] = field(default_factory=dict)
    critique: dict[str, Any] = field(default_factory=dict)
    quick_critique: dict[str, Any] = field(default_factory=dict)
    critique_depth: int = 1

    def train_configs(self, quick: bool, out: Path) -> list[TrainConfig]:
        return [TrainConfig(**{**self.train, **(self.quick_train.get(depth, {}) if quick else {}), "layers": depth,
                               "out": str(out / f"lsa{depth}")})
                for depth in (self.quick_depths if quick else self.depths)]


VON_OSWALD = LinregProtocol(
    "von Oswald et al. 2023, Transformers Learn In-Context by Gradient Descent", depths=(1, 2, 3),
    quick_depths=(1, 2), train={"seed": 0},
    quick_train={1: {"steps": 5000, "eval_tasks": 2000}, 2: {"steps": 3000, "eval_tasks": 2000}},
    compare={"ood": True}, quick_compare={"ood_tasks": 200},
    quick_critique={"order_tasks": 200, "variant_steps": 300, "noise_tasks": 500, "noise_repeats": 2})


@dataclass
class LinregReproduction:
    """What the report of a linreg reproduction reads: each depth's run folder and compare summary, the critique of
    the one-layer run, which depths this call trained, and its wall time."""

    paper: str
    protocol: LinregProtocol
    quick: bool
    runs: dict[int, Path]
    summaries: dict[int, dict]
    critique: dict | None
    trained: list[str]
    wall_s: float
    model: str = "linear self-attention, trained here"
    analyses: dict[str, dict] = field(default_factory=dict)  # the compare (with OOD) and critique settings used


def run_linreg_reproduce(paper: str, protocol: LinregProtocol, out: str | Path, *, quick: bool = False,
                         progress: bool = True) -> LinregReproduction:
    """Train each depth (or reuse its finished run), compare each with GD and GD++, critique the one-layer run."""
    from iclgd.synthetic.linreg.compare import compare
    from iclgd.synthetic.linreg.critique import critique
    from iclgd.synthetic.linreg.run import check_out
    from iclgd.synthetic.linreg.train import train

    out = check_output_dir(out)
    configs = protocol.train_configs(quick, out)  # settings checked before any training
    for config in configs:  # and every run folder: a full run is not written over a --quick one's, or the other way
        check_out(Path(config.out), config, hint="a --quick run and a full one differ: give each its own --out")
    compare_config = CompareConfig(**{**protocol.compare, **(protocol.quick_compare if quick else {})})
    critique_config = CritiqueConfig(**{**protocol.critique, **(protocol.quick_critique if quick else {})})
    started = time.time()
    runs, summaries, trained = {}, {}, []
    for config in configs:
        result = train(config, config.out, progress=progress)
        if not result.already_done:
            trained.append(Path(config.out).name)
        runs[config.layers] = Path(config.out)
        summaries[config.layers] = compare(config.out, compare_config)
    critiqued = (critique(runs[protocol.critique_depth], critique_config, progress=progress)
                 if protocol.critique_depth in runs else None)
    analyses = {"compare": compare_config.model_dump(mode="json", exclude={"run"}),
                "critique": critique_config.model_dump(mode="json", exclude={"run"})}
    return LinregReproduction(paper, protocol, quick, runs, summaries, critiqued, trained, time.time() - started,
                              analyses=analyses)
