"""Configurations of the linear-regression commands: pydantic models filled from YAML, then CLI flags.

Defaults are the official recipe of von Oswald et al. 2023 (spec/synthetic.md §1); the values a run used
(steps, lr, init scale resolved from the depth) are written back into the run folder's config.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from iclgd.checks import check_output_dir
from iclgd.config_files import build_config
from iclgd.errors import UserError

THRESHOLDS = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]


class TrainConfig(BaseModel):
    """One LSA training run; `seed` fixes the data stream, the init and the eval set."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no NaN or inf: --lr inf ran fully, to NaN

    kind: Literal["linreg"] = "linreg"
    seed: int = Field(0, ge=0)
    d: int = Field(10, ge=1, description="input dimension")
    m: int = Field(1, ge=1, description="output dimension")
    n_context: int = Field(10, ge=1, description="context pairs N per task")
    input_range: float = Field(1.0, gt=0, description="x ~ U(-r/2, r/2): 1 is the official ±0.5, 2 gives ±1")
    weight_scale: float = Field(1.0, gt=0, description="W ~ N(0, s² I)")
    layers: int = Field(1, ge=1, description="K: LSA layers (or applications when recurrent)")
    recurrent: bool = Field(False, description="one layer applied K times")
    causal_mask: bool = False
    positional_encoding: bool = Field(False, description="concatenate sinusoidal position features")
    pe_size: int = Field(6, ge=1, description="positional features when positional_encoding")
    softmax: bool = False
    steps: int | None = Field(None, ge=1, description="default 5000 for one layer, 20000 deeper")
    batch_size: int = Field(2048, ge=1, description="fresh tasks per step")
    lr: float | None = Field(None, gt=0, description="Adam lr; default 1e-3, 5e-4 above 3 layers")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.98, ge=0, lt=1)
    init_scale: float | None = Field(None, gt=0, description="variance scale of the init; default 0.002/K")
    grad_clip: float | None = Field(None, ge=0, description="clip the gradient's global norm (0: off); default 10 "
                                    "above 2 layers (official notebook; without it 3-layer training spikes), else 0")
    eval_tasks: int = Field(10_000, ge=1, description="fixed seeded eval set")
    eval_every: int = Field(100, ge=1, description="steps between eval-loss points of the curve")
    threads: int | None = Field(1, ge=1, description="torch CPU threads while training; None: torch's choice "
                                "(tiny matrices: 1 thread is as fast, and far faster on a shared machine)")
    out: str | None = Field(None, description="run folder to write")

    @model_validator(mode="after")
    def _official_defaults(self) -> TrainConfig:
        if self.steps is None:
            self.steps = 5000 if self.layers == 1 else 20_000
        if self.lr is None:
            self.lr = 5e-4 if self.layers > 3 else 1e-3
        if self.init_scale is None:
            self.init_scale = 0.002 / self.layers
        if self.grad_clip is None:
            # The notebook's 0.001 for <= 2 layers is left out: Adam undoes most of that rescaling.
            self.grad_clip = 10.0 if self.layers > 2 else 0.0
        return self

    def model_options(self) -> dict[str, Any]:
        """The LSA constructor's keyword arguments."""
        return dict(layers=self.layers, recurrent=self.recurrent, causal_mask=self.causal_mask,
                    positional_encoding=self.positional_encoding, pe_size=self.pe_size, softmax=self.softmax)


class CompareConfig(BaseModel):
    """`iclgd linreg compare`: trained LSA vs GD, GD++, the hand-built and the interpolated weights."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no NaN or inf: --lr inf ran fully, to NaN

    run: str | None = Field(None, description="run folder written by `iclgd linreg train`")
    ood: bool = Field(True, description="also run the out-of-distribution sweeps")
    ood_tasks: int = Field(2000, ge=1, description="tasks per sweep point (official: 1000)")
    input_ranges: tuple[float, float, float] = Field((0.5, 2.0, 0.03), description="start, stop, step of α")
    weight_scales: tuple[float, float, float] = Field((0.5, 5.0, 0.1), description="start, stop, step")
    fit_iterations: int = Field(100, ge=1, description="L-BFGS iterations fitting GD++'s (η_l, γ_l)")

    @model_validator(mode="after")
    def _check_sweeps(self) -> CompareConfig:
        for name in ("input_ranges", "weight_scales"):
            start, stop, step = getattr(self, name)
            if not (0 < start <= stop and step > 0):  # a scale of 0 zeroes every x; step 0 never ends
                raise ValueError(f"{name} is [start, stop, step] with 0 < start <= stop and step > 0, got "
                                 f"{list(getattr(self, name))}")
        return self


class CritiqueConfig(BaseModel):
    """`iclgd linreg critique`: order sensitivity, sparsity and weight perturbation (Shen et al. 2024)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no NaN or inf: --lr inf ran fully, to NaN

    run: str | None = Field(None, description="run folder written by `iclgd linreg train`")
    orderings: int = Field(10, ge=2, description="context orderings per task (|Π|)")
    order_tasks: int = Field(1000, ge=1, description="eval tasks used for order sensitivity")
    order_depths: list[int] = Field([1, 2], description="depths of the LSA variants trained for the order table")
    variant_steps: int = Field(1000, ge=1, description="training steps of each order-table variant")
    sgd_epochs: int = Field(1, ge=1, description="passes of online SGD through the context")
    thresholds: list[float] = Field(THRESHOLDS, description="sparsity thresholds δ")
    noise_scales: list[float] = Field([0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], description="ε")
    noise_repeats: int = Field(3, ge=1, description="noise draws per ε")
    noise_tasks: int = Field(2000, ge=1, description="eval tasks used for the perturbation curves")

    @model_validator(mode="after")
    def _check_lists(self) -> CritiqueConfig:
        if not self.order_depths or min(self.order_depths) < 1:
            raise ValueError("order_depths must list depths >= 1")
        if any(t <= 0 for t in self.thresholds) or any(e < 0 for e in self.noise_scales):
            raise ValueError("thresholds must be > 0 and noise_scales >= 0")
        if not self.thresholds or not self.noise_scales:  # else empty tables and plots, without a word
            raise ValueError("thresholds and noise_scales must list at least one value")
        return self


Config = TypeVar("Config", TrainConfig, CompareConfig, CritiqueConfig)


def check_run_dir(run_dir: str | Path | None) -> Path:
    """The run folder, if it is one written by `iclgd linreg train`; else a one-line UserError (no torch needed)."""
    if not run_dir:
        raise UserError("no run folder given: pass --run runs/lsa1 (a folder written by `iclgd linreg train`)")
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"run folder {run_dir} does not exist: train one with `iclgd linreg train --out {run_dir}`")
    config_path = run_dir / "config.yaml"
    try:
        raw = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    except yaml.YAMLError:
        raw = None
    if not isinstance(raw, dict) or raw.get("kind") != "linreg" or not (run_dir / "weights.safetensors").is_file():
        raise UserError(f"{run_dir} is not a linreg run (needs config.yaml with kind: linreg and weights.safetensors): "
                        "pass a folder written by `iclgd linreg train`")
    return check_output_dir(run_dir, flag="--run")  # the tables and plots go into the run folder


def load_config(cls: type[Config], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """`cls` from an optional YAML file, overridden by the non-None `overrides` (the CLI flags)."""
    return build_config(cls, path, overrides, example="configs/linreg/lsa1.yaml")
