"""Read a unit's captures back as tensors, to recompute any metric without rerunning the model.

    from iclgd.experiments.captures import load_captures
    from iclgd import metrics
    zs, icl, gd = (load_captures("results/sst2-k32-...", p) for p in ("zs", "icl", "gd"))
    metrics.simaou(icl.attn_out, zs.attn_out, gd.attn_out).per_layer

With ``captures: full``, Kendall recomputes too (for the unit's first ``kendall_examples`` eval examples):

    q_train = load_train_queries("results/sst2-k32-...", "gd")      # [L, demo tokens, H*D]
    rows = slice(0, record["config"]["kendall_examples"])
    metrics.kendall(icl.demo_attn_scores[rows], metrics.ft_demo_logits(gd.q[rows], q_train)).mean

Captures are float32, the precision the unit's metrics were computed from, so every stored metric recomputes
from them (tested to 1e-9); ``captures: full`` adds the queries and the demo scores, ``captures: none`` keeps none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from iclgd.errors import UserError
from iclgd.runner.store import read_tensors


@dataclass
class PassCaptures:
    """One pass (zs, icl, gd, lcgd, gd:random_direction) over all eval examples, in example order, named as
    TransformerLens names its hooks (taken at the analysis position only; scores over the test tokens only):

    attn_out          [N, L, d_model]   hook_attn_out: the attention module's output (output projection, bias;
                                        for Gemma 2/3 before post_attention_layernorm, TransformerLens after it)
    attn_scores       [N, L, H, T_max]  one row of hook_attn_scores: pre-softmax scores from the analysis position
                                        to the test-example tokens, right-padded with 0 (``test_length`` real)
    q                 [N, L, H*D]       hook_q (scaled, heads concatenated) at the analysis position; captures: full
    demo_attn_scores  [N, L, N_demo]    head-summed scores to the demo tokens (ICL only, Kendall); captures: full

    ``captures["blocks.3.attn_out"]`` gives one layer ([N, ...]). Inside iclgd's metrics the same tensors are
    called ``attention_output`` (h) and ``presoftmax_logits`` (m), as in spec/metrics.md.
    """

    example: torch.Tensor  # [N]
    attn_out: torch.Tensor
    attn_scores: torch.Tensor
    test_length: torch.Tensor  # [N]
    q: torch.Tensor | None
    demo_attn_scores: torch.Tensor | None

    def __getitem__(self, name: str) -> torch.Tensor:
        match = re.fullmatch(r"blocks\.(\d+)\.(attn_out|attn_scores|q|demo_attn_scores)", name)
        if match is None:
            raise KeyError(f"{name!r}: use blocks.<layer>.attn_out | attn_scores | q | demo_attn_scores")
        stacked = getattr(self, match.group(2))
        if stacked is None:
            raise KeyError(f"{name!r} was not captured (run the unit with captures: full)")
        layer, n_layers = int(match.group(1)), stacked.shape[1]
        if layer >= n_layers:
            raise KeyError(f"{name!r}: the unit captured layers 0..{n_layers - 1}")
        return stacked[:, layer]


def _stack_layers(part: dict[str, torch.Tensor], prefix: str, name: str) -> torch.Tensor | None:
    pattern = re.compile(rf"{re.escape(prefix)}\.blocks\.(\d+)\.{name}")
    layers = sorted(int(m.group(1)) for key in part if (m := pattern.fullmatch(key)))
    if not layers:
        return None
    return torch.stack([part[f"{prefix}.blocks.{layer}.{name}"] for layer in layers], dim=1)


def _pad_cat(chunks: list[torch.Tensor]) -> torch.Tensor:
    width = max(c.shape[-1] for c in chunks)
    return torch.cat([torch.nn.functional.pad(c, (0, width - c.shape[-1])) for c in chunks])


def _unit_folder(unit_dir: str | Path) -> Path:
    unit_dir = Path(unit_dir)
    if not unit_dir.is_dir():
        raise UserError(f"{unit_dir} is not a folder: give a unit folder of a compare run, <out>/<unit id>")
    return unit_dir


def load_captures(unit_dir: str | Path, pass_name: str) -> PassCaptures:
    """One pass's captures (``pass_name``: zs, icl, an FT method such as gd or lcgd, or gd:random_direction) over
    all the unit's eval examples, in example order; a UserError where the unit holds none of that pass."""
    unit_dir = _unit_folder(unit_dir)
    parts = sorted((unit_dir / "captures").glob("part-*.safetensors"))
    if not parts:
        raise UserError(f"{unit_dir} holds no captures: is it a compare unit folder run with captures none? (captures "
                        "are no part of the unit id: delete the folder and rerun the unit to make them)")
    prefix = pass_name.replace(":", ".")
    fields: dict[str, list[torch.Tensor]] = {k: [] for k in ("example", "out", "scores", "length", "q", "demo")}
    for path in parts:
        part = read_tensors(unit_dir, path.stem)
        if f"{prefix}.test_length" not in part:
            continue
        fields["example"].append(part["example"])
        fields["length"].append(part[f"{prefix}.test_length"])
        fields["out"].append(_stack_layers(part, prefix, "attn_out"))
        fields["scores"].append(_stack_layers(part, prefix, "attn_scores"))
        for key, name in (("q", "q"), ("demo", "demo_attn_scores")):
            value = _stack_layers(part, prefix, name)
            if value is not None:
                fields[key].append(value)
    if not fields["example"]:
        raise UserError(f"{unit_dir} has no captures of pass {pass_name!r}: passes are zs, icl and the FT methods")
    return PassCaptures(
        example=torch.cat(fields["example"]),
        attn_out=torch.cat(fields["out"]).float(),
        attn_scores=_pad_cat(fields["scores"]).float(),
        test_length=torch.cat(fields["length"]),
        q=torch.cat(fields["q"]).float() if fields["q"] else None,
        demo_attn_scores=_pad_cat(fields["demo"]).float() if fields["demo"] else None,
    )


def load_train_queries(unit_dir: str | Path, method: str = "gd") -> torch.Tensor:
    """[L, demo tokens, H*D]: the scaled query of every demo token as FT ``method`` saw it in its one training step
    (Dai's FT, ``captures: full``), in demo order: Kendall's q_train (:func:`iclgd.metrics.ft_demo_logits`)."""
    unit_dir = _unit_folder(unit_dir)
    pattern = re.compile(rf"{re.escape(method)}\.blocks\.(\d+)\.train_q")
    for path in sorted((unit_dir / "captures").glob("part-*.safetensors")):
        part = read_tensors(unit_dir, path.stem)
        layers = sorted(int(m.group(1)) for key in part if (m := pattern.fullmatch(key)))
        if layers:
            return torch.stack([part[f"{method}.blocks.{layer}.train_q"] for layer in layers]).float()
    raise UserError(f"{unit_dir} holds no training queries of {method!r}: they are kept for Dai's FT only (gd or "
                    "kv-sgd: K/V, every demo token, SGD, batch 1) over one epoch on ICL's own demos, with captures: "
                    "full and kendall_examples > 0; delete the folder and rerun the unit so (a plain rerun finds "
                    "it done)")
