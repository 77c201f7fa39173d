"""The configuration of one comparison unit: every CLI flag of `iclgd compare` is a field here.

A YAML file (``--config``) and CLI flags fill the same model; flags given on the command line win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iclgd.checks import DeviceName
from iclgd.config_files import build_config, read_yaml_mapping
from iclgd.errors import UserError
from iclgd.finetune.methods import BUILT_IN, parse_method
from iclgd.models.loading import Untrained
from iclgd.runner.units import unit_id

# Epochs at which a multi-epoch method is measured by default (those up to the unit's epochs, and the last one).
CURVE_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 200)
Position = Literal["label_token", "prompt_end"]
Captures = Literal["none", "compact", "full"]  # in this order: each keeps what the one before it keeps, and more
CAPTURE_LEVELS: tuple[str, ...] = get_args(Captures)
# Config fields that say where and how fast a unit ran, not what it computed: no part of its id or its setting.
NOT_SETTINGS = ("out", "device", "batch_size", "captures")
# The ordering added for the output metrics' ICL-vs-ICL floor where one ordering is asked for: since this rule, one
# that ends with another demo (units stored before it have ids without this key, and are computed anew).
FLOOR_ORDERING_RULE = "first seeded permutation ending with another demo"


class CompareConfig(BaseModel):
    """One unit: (model, variant, task, template, k, seed, order, methods, hyperparameters)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # --lr inf would run fully, then fail

    model: str = Field(description="hub id, local folder, .gguf file or named model (iclgd models) of a causal LM")
    task: str = Field(description="built-in task name or path to a task file")
    template: int | str = Field(0, description="template index in the task file, or a template string")
    shots: int = Field(32, ge=1, description="demonstrations requested (k); true k may be smaller")
    seed: int = Field(1, ge=0, description="demonstration seed; also seeds every random baseline")
    order: int = Field(0, ge=0, description="0: sampled order; i > 0: default_rng([seed, i]) permutation")
    balanced: bool = Field(False, description="class-balanced demonstration sampling")
    eval_size: int | None = Field(None, ge=1, description="eval rows (default: the task's eval_size)")
    position: Position = Field("label_token", description="analysis position")
    methods: list[str] = Field(default_factory=lambda: ["gd"], description="FT methods compared: gd, lcgd, "
                               "lcgd-paper or <kv|whole|wv:layer>-<gd|sgd[b]|adam[b]>[-demo|label][@lr] "
                               "(iclgd.finetune.methods)")
    epochs: int = Field(1, ge=1, description="epochs every FT method runs (Dai, Deutch: 1; Shen: up to 200)")
    record_epochs: list[int] | None = Field(None, description="epochs at which each method is measured (default: "
                                            "1, 2, 5, 10, 20, 50, 100, 200 up to epochs, and the last)")
    output_metrics: bool = Field(False, description="TO@10, OCS@10, KL and JS between ICL's next-token distribution "
                                 "and each method's, with the ICL-vs-ICL noise floor over the orderings (at least 2)")
    ft_shots: int | None = Field(None, ge=1, description="demonstrations the FT methods train on, when not ICL's: "
                                 "the first ft_shots of the same seeded sample, not bound by the context (Shen's GD "
                                 "with more data); ICL keeps the first `shots`")
    orderings: int = Field(1, ge=1, description="orderings of the same demos (the unit's order, then order+1, ...): "
                           "with 2 or more, order sensitivity (Sen) of ICL and of every method at each recorded epoch")
    lr: float | None = Field(None, gt=0, description="learning rate; default: published value or a search (gd, lcgd "
                             "with 1 epoch only)")
    lr_search: Literal["grid", "halving"] = Field("grid", description="the lr search (iclgd.finetune.lr_search): "
                                                  "grid (the choice of Dai's 36 points, each scored on every "
                                                  "held-out row, found best first) or halving (8 half-decade "
                                                  "points, successive halving: cheaper, a worse lr on some tasks)")
    lr_search_rows: int = Field(200, ge=1, description="held-out training rows scoring the lr search")
    untrained: Untrained | None = Field(None, description="Deutch et al.'s untrained model variants")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: DeviceName = Field("cpu", description="cpu | cuda | cuda:N | mps (presence checked at run time)")
    batch_size: int = Field(16, ge=1)
    max_context: int | None = Field(None, ge=8, description="context length (default: the model's)")
    separator: str | None = Field(None, description="overrides the task's and the family's separator")
    bos: str | None = Field(None, description="overrides the BOS text; 'none' (or '') for no BOS")
    data_dir: str | None = Field(None, description="folder of `iclgd prepare-data` snapshots")
    kendall_examples: int = Field(100, ge=0, description="eval examples used for Kendall (Dai: first 100)")
    captures: Captures = Field("compact", description="per-example captures kept in the unit folder (float32): "
                               "compact (what the similarity metrics need), full (+ queries and demo scores, "
                               "for Kendall), none; like out and batch_size not part of the unit id (a finished "
                               "unit is not rerun for other captures: delete its folder)")
    out: str = Field("results", description="results folder")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one finetuning method is needed (gd, lcgd, whole-gd-label, ...)")
        specs = {}
        for name in dict.fromkeys(value):
            try:
                spec = parse_method(name)
            except UserError as err:
                raise ValueError(str(err)) from None
            twin = next((other for other in specs.values() if other.same_training(spec) and other.lr == spec.lr), None)
            if twin is not None:
                raise ValueError(f"methods {twin.name!r} and {name!r} train alike: list one of them")
            specs[name] = spec
        return list(specs)

    @field_validator("shots", "seed", "order", "eval_size", "epochs", "ft_shots", "orderings", "lr_search_rows",
                     "batch_size", "max_context", "kendall_examples", "template", "lr", "record_epochs", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool) or isinstance(value, list) and any(isinstance(v, bool) for v in value):
            raise ValueError(f"expected a number, got {str(value).lower()}")  # YAML's `true` would be taken as 1
        return value

    @field_validator("separator")
    @classmethod
    def _separator_not_empty(cls, value: str | None) -> str | None:
        if value == "":
            raise ValueError("separator is empty: demos need text between them; leave it out for the task's or the "
                             "model family's default, or give one (e.g. ' ' or '\\n')")
        return value

    @model_validator(mode="after")
    def _epochs_and_lr(self) -> CompareConfig:
        beyond = [e for e in self.record_epochs or [] if not 1 <= e <= self.epochs]
        if beyond:
            raise ValueError(f"record_epochs {beyond} lie outside the {self.epochs} epoch(s) run: list epochs in "
                             f"1..{self.epochs} or raise epochs")
        if self.ft_shots is not None and self.balanced:
            raise ValueError("ft_shots and balanced do not combine: ICL's demos are the first `shots` of FT's sample, "
                             "which a balanced sample of ft_shots does not balance; sample without balancing")
        if self.ft_shots is not None and self.orderings > 1:
            raise ValueError("ft_shots and orderings > 1 do not combine: order sensitivity reorders ICL's demos, which "
                             "FT then trains on; run them as separate units")
        if self.lr is None:
            unset = [m for m in self.methods if parse_method(m).lr is None and (m not in BUILT_IN or self.epochs > 1)]
            if unset:
                raise ValueError(f"methods {unset} have no learning rate: the published values and the search cover "
                                 f"only gd, lcgd and lcgd-paper for one epoch; set lr, or name a method's own as "
                                 f"{unset[0]}@<lr>")
        return self

    def epochs_recorded(self) -> list[int]:
        """The epochs at which every method is measured, ascending (the last epoch always)."""
        chosen = self.record_epochs or [e for e in CURVE_EPOCHS if e <= self.epochs]
        return sorted({*chosen, self.epochs})

    def unit_fields(self) -> dict[str, Any]:
        """The fields that define what is computed (not where it is written)."""
        fields = self.model_dump(exclude=set(NOT_SETTINGS))
        if self.output_metrics and self.orderings < 2 and self.shots >= 2:  # one demo has no second ordering
            fields["floor_ordering"] = FLOOR_ORDERING_RULE
        if self.lr is not None or self.lr_search == "grid":  # no search, or the one every older unit ran: the ids of
            del fields["lr_search"]                            # units stored before the field existed stay valid
        if self.lr is not None:  # no search: its rows change nothing (the default kept, so stored ids stay valid)
            fields["lr_search_rows"] = type(self).model_fields["lr_search_rows"].default
        return fields

    def unit_id(self) -> str:
        """``<task>-k<shots>-s<seed>-o<order>[-untrained_<v>]-<hash of the unit fields>`` (the store's one scheme,
        :func:`iclgd.runner.units.unit_id`): stable across runs, so finished units are skipped."""
        return unit_id(self.unit_fields())


def load_config(path: str | Path | None, overrides: dict[str, Any], source: str | None = None) -> CompareConfig:
    """The config from a YAML file (optional) with CLI overrides (None values are ignored); ``source`` names where
    the settings came from in an error."""
    if path is not None:
        sweep_keys = sorted({"base", "grid", "runs"} & set(read_yaml_mapping(path, "configs/dai2023/sst2.yaml")))
        if sweep_keys:
            raise UserError(f"config file {path} is a sweep file ({', '.join(sweep_keys)}), not one unit's config: run "
                            f"it with iclgd sweep {path}")
    return build_config(CompareConfig, path, overrides, example="configs/dai2023/sst2.yaml", source=source)
