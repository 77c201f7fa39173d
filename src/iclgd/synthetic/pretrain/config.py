"""The pretraining configuration: a pydantic model filled from YAML (``--config``), then CLI flags.

The defaults are the recipe of the shipped checkpoint ``iclgd/assets/icc-gpt2``; the other corpora have their
recipes in ``recipes/<corpus>.yaml``, used by ``iclgd pretrain --corpus <name>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from iclgd.checks import DeviceName
from iclgd.config_files import build_config


class PretrainConfig(BaseModel):
    """One pretraining run. ``seed`` fixes the initialisation and the data: the batch of step s is a pure
    function of (seed, s)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # lr: inf would train to NaN, then save it

    corpus: str = "icc"
    corpus_options: dict[str, Any] = Field(default_factory=dict, description="the corpus generator's fields")
    seed: int = Field(0, ge=0)
    # GPT-2 shape
    n_layer: int = Field(2, description="transformer blocks")
    n_head: int = Field(2, description="attention heads per block (head width 32: room to tell 32 inputs apart)")
    n_embd: int = Field(64, description="width")
    n_inner: int | None = Field(128, description="MLP width (None: GPT-2's 4 * n_embd)")
    n_positions: int = Field(64, description="context length of the model")
    vocab_size: int | None = Field(None, description="default: the corpus vocabulary; larger leaves unused ids")
    activation: str = Field("gelu", description="GPT-2 activation_function")
    tie_embeddings: bool = Field(True, description="the unembedding is the token embedding (GPT-2's default)")
    init_std: float = Field(0.02, gt=0, description="std of the normal initial weights (GPT-2's initializer_range)")
    position_init: Literal["sinusoidal", "random"] = Field(
        "sinusoidal", description="initial position embeddings: scaled sinusoids (trainable) or GPT-2's N(0, 0.02)")
    position_scale: float = Field(0.1, gt=0, description="amplitude of the sinusoidal initial position embeddings")
    attention: Literal["vanilla", "momentum"] = Field(
        "vanilla", description="GPT-2 attention, or Dai et al.'s momentum attention (iclgd.models.momentum)")
    momentum_eta: float = Field(0.9, ge=0, lt=1, description="momentum attention: η (fixed, or where learned decays "
                                "start)")
    momentum_learned: bool = Field(False, description="momentum attention: one learned decay per channel and layer")
    # optimisation
    steps: int = Field(5000, ge=1)
    batch_size: int = Field(32, ge=1)
    seq_len: int | None = Field(None, description="tokens per training sequence (default n_positions)")
    loss_on: Literal["predictable", "all"] = Field(
        "predictable", description="next-token loss on the targets the corpus marks predictable, or on every token")
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(200, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay to min_lr_ratio * lr at the last step")
    weight_decay: float = Field(0.0, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.98, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)
    # bookkeeping
    checkpoint_every: int = Field(500, ge=1, description="steps between resumable checkpoints")
    log_every: int = Field(250, ge=1, description="steps between log lines (loss, ICL probe)")
    keep_every: int | None = Field(None, ge=1, description="steps between kept checkpoints: loadable model folders "
                                   "checkpoints/step-NNNNNN (step 0 and the last step too); None: none kept")
    threads: int | None = Field(1, ge=1, description="torch CPU threads (None: torch's choice); the float sums, "
                                "hence the weights, depend on it: a run resumes only at its own thread count")
    device: DeviceName = Field("cpu", description="cpu | cuda | cuda:N")

    @model_validator(mode="after")
    def _sizes(self) -> PretrainConfig:
        if self.n_layer < 1 or self.n_head < 1 or self.n_embd < 1:
            raise ValueError(f"n_layer, n_head and n_embd must be >= 1 (got {self.n_layer}, {self.n_head}, "
                             f"{self.n_embd})")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} must be a multiple of n_head {self.n_head}")
        if self.n_inner is not None and self.n_inner < 1:
            raise ValueError(f"n_inner must be >= 1, got {self.n_inner}")
        if self.n_positions < 4:
            raise ValueError(f"n_positions {self.n_positions} is too short (>= 4)")
        if self.seq_len is not None and not 4 <= self.seq_len <= self.n_positions:
            raise ValueError(f"seq_len {self.seq_len} must lie in 4..n_positions={self.n_positions}")
        if self.attention == "momentum" and self.momentum_learned and self.momentum_eta == 0:
            raise ValueError("learned momentum decays start from momentum_eta: give one in (0, 1)")
        if self.position_init == "sinusoidal" and self.n_embd % 2:
            raise ValueError(f"sinusoidal position_init needs an even n_embd, got {self.n_embd}")
        return self

    @property
    def train_len(self) -> int:
        return self.seq_len or self.n_positions

    def lr_at(self, step: int) -> float:
        """lr of step ``step`` (1-based): linear warm-up, then cosine from lr to min_lr_ratio * lr at ``steps``."""
        import math

        if step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def identity(self) -> dict[str, Any]:
        """The fields that fix the weights: a run may only be resumed under the same identity."""
        return self.model_dump(exclude={"checkpoint_every", "log_every", "keep_every", "threads", "device"})


RECIPES = Path(__file__).resolve().parent / "recipes"


def recipe_path(corpus: str) -> Path | None:
    """The packaged recipe of a corpus (recipes/<corpus>.yaml), None where the defaults are its recipe (icc)."""
    path = RECIPES / f"{corpus}.yaml"
    return path if path.is_file() else None


def load_config(path: str | Path | None = None, **overrides: Any) -> PretrainConfig:
    """The config from a YAML file (default: the packaged recipe of ``overrides['corpus']``, if any) with the
    non-None ``overrides`` applied; UserError if invalid."""
    if path is None and overrides.get("corpus"):
        path = recipe_path(overrides["corpus"])
    return build_config(PretrainConfig, path, overrides, example=str(RECIPES / "ginc.yaml"))
