"""The one table of model families: everything architecture-specific lives here.

The rest of iclgd asks a :class:`Family` for module paths, the K/V parameters to train, BOS and separator,
and whether attention is routed through transformers' attention interface; it never asks which family
it holds. Logits go through :func:`readout` / :func:`unembed` (final soft cap included); the attention soft cap
arrives with the model's own call (``softcap=``); :func:`check_config` refuses a cap no path applies. Paths are
dotted attribute paths; ``{i}`` in ``blocks`` is not used: ``blocks`` names the ModuleList of decoder blocks and
the other paths are relative to one block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from iclgd.errors import UserError
from iclgd.models import own_attention
from iclgd.models.attention import soft_cap

# How a fused q/k/v projection lays out its output features.
#   "columns":  [q | k | v] along the output dimension (GPT-2's Conv1D c_attn, weight shape (in, 3*out)).
#   "per_head": per head [q_h | k_h | v_h] of head_dim each (GPT-NeoX query_key_value, weight (3*out, in)).
#   "rows":     [q (H·D) | k (H_kv·D) | v (H_kv·D)] along the output rows, GQA sizes (Phi-3 qkv_proj, weight (out, in)).
FusedLayout = Literal["columns", "per_head", "rows"]

# Config attributes that ask for tanh soft-capping (Gemma 2). A config that sets one the family does not declare is
# refused (see check_config): a cap iclgd does not apply would silently change every score or logit.
SOFTCAP_ATTRIBUTES = ("attn_logit_softcapping", "final_logit_softcapping")


@dataclass(frozen=True)
class Family:
    """One architecture, as transformers 5.23 implements it (checked against its ``modeling_*.py``)."""

    name: str
    model_types: tuple[str, ...]
    blocks: str  # ModuleList of decoder blocks, from the CausalLM root
    attention: str  # attention module, relative to a block
    q_proj: str | None  # relative to the attention module; None when fused
    k_proj: str | None
    v_proj: str | None
    o_proj: str  # output projection (its output, bias included, is the captured attention output)
    fused_qkv: str | None = None
    fused_layout: FusedLayout | None = None
    final_norm: str = "model.norm"  # from the CausalLM root
    final_projection: str | None = None  # applied after the final norm (OPT's project_out, None in most OPTs)
    unembedding: str = "lm_head"
    embeddings: tuple[str, ...] = ()  # token (and learned position) embeddings, from the root
    # How the scores fed to the softmax are scaled (what SimAM's m is), in words.
    scaling: str = "q·k / sqrt(d_head)"
    # Rotary position embedding, in words; None for absolute (learned or sinusoidal) positions.
    rotary: str | None = None
    # None: the family calls attention through ALL_ATTENTION_FUNCTIONS with q/k already rotated, so the registered
    # "iclgd" function serves it. Otherwise the forward (iclgd.models.own_attention) that replaces its attention's.
    own_attention: Callable | None = None
    scores_in_float32: bool = False  # the family upcasts q, k before the scores (GPT-Neo, GPT-J)
    # Default BOS and separator text (overridable by the task or the config). None: no BOS.
    bos: Literal["bos_token", "eos_token"] | None = "bos_token"
    sep: str = "\n"
    # Local / sliding windows: config attribute holding the window; config attribute listing the layer kinds and
    # the kinds that use the window (None: every layer uses it whenever the window attribute is set).
    window_attr: str | None = None
    layer_kinds_attr: str | None = None
    windowed_kinds: tuple[str, ...] = ()
    # Tanh soft-capping, cap·tanh(x/cap): the config attribute holding the cap of the attention scores (the model passes
    # it to the attention function as ``softcap=``) and of the final logits (applied after the unembedding).
    attn_softcap_attr: str | None = None
    final_softcap_attr: str | None = None

    @property
    def layers_blind_to_demos(self) -> tuple[int, ...]:
        """Layers whose attention scores over the test tokens are the same with and without demos: layer 0 under
        rotary positions (its inputs are token embeddings, its q·k depends only on relative offsets; within the
        context :func:`rope_length_limit` allows, one set of frequencies serves every prompt)."""
        return (0,) if self.rotary is not None else ()

    @property
    def attention_interface(self) -> bool:
        return self.own_attention is None

    @property
    def attention_path(self) -> str:
        return "attention interface" if self.own_attention is None else f"own forward ({self.own_attention.__name__})"


FAMILIES: tuple[Family, ...] = (
    Family(
        name="gpt2", model_types=("gpt2", "iclgd-momentum-gpt2"), blocks="transformer.h", attention="attn",
        q_proj=None, k_proj=None, v_proj=None, o_proj="c_proj",
        fused_qkv="c_attn", fused_layout="columns",
        final_norm="transformer.ln_f", embeddings=("transformer.wte", "transformer.wpe"),
        scaling="q·k / sqrt(d_head) (and / (layer+1) if scale_attn_by_inverse_layer_idx)",
        bos="eos_token", sep="\n",
    ),
    Family(
        name="gpt_neo", model_types=("gpt_neo",), blocks="transformer.h", attention="attn.attention",
        q_proj="q_proj", k_proj="k_proj", v_proj="v_proj", o_proj="out_proj",
        final_norm="transformer.ln_f", embeddings=("transformer.wte", "transformer.wpe"),
        scaling="q·k (unscaled, fp32)", own_attention=own_attention.gpt_neo_forward, scores_in_float32=True,
        bos="eos_token", sep="\n",
        window_attr="window_size", layer_kinds_attr="attention_layers", windowed_kinds=("local",),
    ),
    Family(
        name="gptj", model_types=("gptj",), blocks="transformer.h", attention="attn",
        q_proj="q_proj", k_proj="k_proj", v_proj="v_proj", o_proj="out_proj",
        final_norm="transformer.ln_f", embeddings=("transformer.wte",),
        scaling="q·k / sqrt(d_head) (fp32)", rotary="interleaved pairs, first rotary_dim dims of each head",
        own_attention=own_attention.gptj_forward, scores_in_float32=True, bos="eos_token", sep="\n",
    ),
    Family(
        name="opt", model_types=("opt",), blocks="model.decoder.layers", attention="self_attn",
        q_proj="q_proj", k_proj="k_proj", v_proj="v_proj", o_proj="out_proj",
        final_norm="model.decoder.final_layer_norm",  # None when do_layer_norm_before is False (opt-350m)
        final_projection="model.decoder.project_out",  # opt-350m: 1024 -> 512 before the tied unembedding
        embeddings=("model.decoder.embed_tokens", "model.decoder.embed_positions"),
        scaling="(q / sqrt(d_head))·k: q is scaled by q_proj's caller, the attention call gets scaling=1",
        bos="bos_token", sep="\n",  # OPT's BOS token is </s>, prepended by its tokenizer
    ),
    Family(
        name="xglm", model_types=("xglm",), blocks="model.layers", attention="self_attn",
        q_proj="q_proj", k_proj="k_proj", v_proj="v_proj", o_proj="out_proj",
        final_norm="model.layer_norm", embeddings=("model.embed_tokens",),  # positions: sinusoidal buffer
        scaling="(q / sqrt(d_head))·k: q scaled before the scores", own_attention=own_attention.xglm_forward,
        bos="bos_token", sep="</s>",
    ),
    Family(
        name="gpt_neox", model_types=("gpt_neox",), blocks="gpt_neox.layers", attention="attention",
        q_proj=None, k_proj=None, v_proj=None, o_proj="dense",
        fused_qkv="query_key_value", fused_layout="per_head",
        final_norm="gpt_neox.final_layer_norm",  # unembedding: lm_head (checkpoints' embed_out is renamed on load)
        embeddings=("gpt_neox.embed_in",), rotary="rotate-half, first partial_rotary_factor of each head",
        bos="eos_token", sep="\n",
    ),
    Family(
        name="llama", model_types=("llama", "iclgd-momentum-llama"), blocks="model.layers", attention="self_attn",
        q_proj="q_proj", k_proj="k_proj", v_proj="v_proj", o_proj="o_proj",
        embeddings=("model.embed_tokens",), rotary="rotate-half, GQA", bos="bos_token", sep="\n",
    ),
    Family(
        name="mistral", model_types=("mistral",), blocks="model.layers", attention="self_attn",
        q_proj="q_proj", k_proj="k_proj", v_proj="v_proj", o_proj="o_proj",
        embeddings=("model.embed_tokens",), rotary="rotate-half, GQA", bos="bos_token", sep="\n",
        window_attr="sliding_window",
    ),
    Family(
        name="qwen2", model_types=("qwen2",), blocks="model.layers", attention="self_attn",
        q_proj="q_proj", k_proj="k_proj", v_proj="v_proj", o_proj="o_proj",
        embeddings=("model.embed_tokens",), rotary="rotate-half, GQA, q/k/v biases", bos=None, sep="\n",
        window_attr="sliding_window", layer_kinds_attr="layer_types", windowed_kinds=("sliding_attention",),
    ),
    Family(
        name="phi3", model_types=("phi3",), blocks="model.layers", attention="self_attn",
        q_proj=None, k_proj=None, v_proj=None, o_proj="o_proj", fused_qkv="qkv_proj", fused_layout="rows",
        embeddings=("model.embed_tokens",), rotary="rotate-half, first partial_rotary_factor of each head, GQA",
        bos="bos_token", sep="\n", window_attr="sliding_window",  # every layer, when set (Phi-3-mini-4k: 2047)
    ),
    Family(
        # Embeddings are scaled by sqrt(hidden_size) inside embed_tokens (Gemma2TextScaledWordEmbedding); RMSNorms
        # scale by (1 + weight); the tokenizer adds <bos> and no dummy prefix (" Negative" is "▁Negative").
        name="gemma2", model_types=("gemma2",), blocks="model.layers", attention="self_attn",
        q_proj="q_proj", k_proj="k_proj", v_proj="v_proj", o_proj="o_proj",
        embeddings=("model.embed_tokens",), scaling="q·k / sqrt(query_pre_attn_scalar), then cap·tanh(s/cap)",
        rotary="rotate-half, GQA", bos="bos_token", sep="\n",
        window_attr="sliding_window", layer_kinds_attr="layer_types", windowed_kinds=("sliding_attention",),
        attn_softcap_attr="attn_logit_softcapping", final_softcap_attr="final_logit_softcapping",
    ),
    Family(
        # Gemma 3 text: as Gemma 2, plus q/k RMSNorms (q_norm, k_norm) inside the attention module before RoPE, so the
        # q and k reaching the attention function are normed and rotated. transformers 5.23 never passes its
        # attn_logit_softcapping to the attention function: a config that sets it is refused (check_config).
        name="gemma3", model_types=("gemma3_text",), blocks="model.layers", attention="self_attn",
        q_proj="q_proj", k_proj="k_proj", v_proj="v_proj", o_proj="o_proj",
        embeddings=("model.embed_tokens",), scaling="q·k / sqrt(query_pre_attn_scalar) (q, k RMS-normed)",
        rotary="rotate-half, GQA, local/global RoPE bases", bos="bos_token", sep="\n",
        window_attr="sliding_window", layer_kinds_attr="layer_types", windowed_kinds=("sliding_attention",),
        final_softcap_attr="final_logit_softcapping",
    ),
)


def family_of(model_or_config: nn.Module | object) -> Family:
    """The family of a model (or its config), by ``config.model_type``."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            check_config(config, family)
            return family
    supported = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise UserError(
        f"unsupported architecture {model_type!r}: iclgd has no attention hooks for it; "
        f"supported model types are {supported} (add an entry to iclgd/models/families.py)"
    )


def check_config(config: object, family: Family) -> None:
    """Refuse what iclgd would compute differently from the model: a soft cap the family does not declare (so no path
    applies it, or transformers itself ignores it), and bidirectional attention (iclgd's masks are causal)."""
    declared = (family.attn_softcap_attr, family.final_softcap_attr)
    for name in SOFTCAP_ATTRIBUTES:
        if getattr(config, name, None) is not None and name not in declared:
            raise UserError(
                f"{family.name} config sets {name}={getattr(config, name)}, a soft cap no iclgd path applies for this "
                f"family (its entry in iclgd/models/families.py declares none), so scores or logits would be wrong: "
                f"set {name} to null in the model's config.json if the model was not trained with it"
            )
    if getattr(config, "use_bidirectional_attention", False):
        raise UserError(f"{family.name} config sets use_bidirectional_attention: iclgd supports causal LMs only")


def rope_length_limit(config: object) -> int | None:
    """The positions within which a rotary scaling that picks its frequencies by the sequence's length keeps one set
    (longrope: the short factors up to original_max_position_embeddings; past it the long ones, for the whole
    sequence); None where the frequencies do not depend on the length. Past the limit a prompt with demos and the
    same prompt without them would be rotated differently, as would a shared demo prefix and its full prompt, and a
    row by its batch's longest neighbour. (Dynamic NTK scaling switches past max_position_embeddings, which is the
    context already.)"""
    found = [getattr(config, name, None) for name in ("rope_parameters", "rope_scaling")]
    settings = [entry for value in found if isinstance(value, dict)
                for entry in ([value] if "rope_type" in value or "type" in value else value.values())
                if isinstance(entry, dict)]  # one dict, or one per layer type (Gemma 3)
    limits = [entry.get("original_max_position_embeddings") or getattr(config, "original_max_position_embeddings", None)
              for entry in settings if (entry.get("rope_type") or entry.get("type")) == "longrope"]
    limits = [limit for limit in limits if isinstance(limit, int) and limit > 0]
    return min(limits) if limits else None


def model_context(config: object, default: int | None = None) -> int:
    """The context length a transformers config gives (``default`` where it gives none), within the positions where
    its rotary frequencies do not depend on the prompt's length (:func:`rope_length_limit`)."""
    limit = rope_length_limit(config)
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return min(value, limit or value)
    if limit is not None:
        return limit
    if default is not None:
        return default
    raise UserError("the model config gives no context length: set `max_context` in the config")


def family_named(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise UserError(f"unknown model family {name!r}; known: {', '.join(f.name for f in FAMILIES)}")


def layer_window(config: object, family: Family, layer: int) -> int | None:
    """The attention window of one layer (a query at p sees keys j with p - W < j <= p), None for full attention."""
    if family.window_attr is None:
        return None
    window = getattr(config, family.window_attr, None)
    if window is None:
        return None
    if family.layer_kinds_attr is not None:
        kinds = getattr(config, family.layer_kinds_attr, None)
        if kinds is None or kinds[layer] not in family.windowed_kinds:
            return None
    return int(window)


def is_norm(module: nn.Module) -> bool:
    """LayerNorm and RMSNorm modules (the families' RMSNorms are their own classes, named ``*RMSNorm``)."""
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__.endswith("RMSNorm")


def final_softcap(config: object, family: Family) -> float | None:
    """The cap on the final logits (None: none)."""
    return None if family.final_softcap_attr is None else getattr(config, family.final_softcap_attr, None)


def readout(model: nn.Module, family: Family, final_hidden: torch.Tensor) -> torch.Tensor:
    """Logits of the base model's output (final norm and projection already applied): the unembedding, then the
    final soft-cap if the model has one. Every place iclgd computes logits goes through here or :func:`unembed`."""
    return soft_cap(get_module(model, family.unembedding)(final_hidden), final_softcap(model.config, family))


def unembed(model: nn.Module, family: Family, hidden: torch.Tensor) -> torch.Tensor:
    """Logits of a residual-stream state, as the model computes them after its last block: final norm (if the model
    has one), OPT's project_out (if any), the unembedding, the final soft-cap (if any)."""
    for path in (family.final_norm, family.final_projection):
        module = get_module(model, path) if path is not None else None
        if module is not None:
            hidden = module(hidden)
    return readout(model, family, hidden)


def get_module(root: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path (``"transformer.h"``)."""
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


def blocks(model: nn.Module, family: Family) -> nn.ModuleList:
    return get_module(model, family.blocks)


def attention_modules(model: nn.Module, family: Family) -> list[nn.Module]:
    """Every block's attention module, in layer order (the modules iclgd's capture hooks go on)."""
    return [get_module(block, family.attention) for block in blocks(model, family)]


@dataclass(frozen=True)
class TrainableSlice:
    """A parameter that finetuning updates, and which rows/columns of it (None: all of it).

    ``mask`` has the parameter's shape, 1 where the entry belongs to K or V and 0 for Q; gradients are
    multiplied by it so that the Q slice of a fused projection stays bit-identical.
    """

    name: str  # full parameter name in model.named_parameters()
    parameter: nn.Parameter
    mask: torch.Tensor | None = None


Projection = Literal["q", "k", "v"]


def _fused_mask(param: nn.Parameter, family: Family, n_heads: int, n_kv_heads: int,
                kinds: tuple[Projection, ...]) -> torch.Tensor:
    """True on the entries of a fused q/k/v parameter that belong to ``kinds``."""
    mask = torch.zeros_like(param, dtype=torch.bool)
    if family.fused_layout == "columns":
        # Conv1D: weight (in, 3*d), bias (3*d); the last dim is [q | k | v].
        d = param.shape[-1] // 3
        for kind in kinds:
            start = "qkv".index(kind) * d
            mask[..., start:start + d] = True
    elif family.fused_layout == "per_head":
        # Linear: weight (3*d, in), bias (3*d); the first dim is per head [q | k | v].
        head_dim = param.shape[0] // (3 * n_heads)
        per_head = mask.view(n_heads, 3 * head_dim, *param.shape[1:])
        for kind in kinds:
            start = "qkv".index(kind) * head_dim
            per_head[:, start:start + head_dim] = True
    elif family.fused_layout == "rows":
        # Linear: weight (H·D + 2·H_kv·D, in): rows [q (H·D) | k (H_kv·D) | v (H_kv·D)].
        head_dim = param.shape[0] // (n_heads + 2 * n_kv_heads)
        bounds = {"q": (0, n_heads * head_dim), "k": (n_heads * head_dim, (n_heads + n_kv_heads) * head_dim),
                  "v": ((n_heads + n_kv_heads) * head_dim, param.shape[0])}
        for kind in kinds:
            mask[bounds[kind][0]:bounds[kind][1]] = True
    else:  # pragma: no cover - the table is closed
        raise ValueError(f"unknown fused layout {family.fused_layout!r}")
    return mask


def projection_parameters(model: nn.Module, family: Family, kinds: tuple[Projection, ...] = ("k", "v"),
                          layers: Sequence[int] | None = None) -> list[TrainableSlice]:
    """The attention projections of ``kinds`` (weights and biases) of ``layers`` (None: every layer); a fused q/k/v
    parameter comes with the mask of the entries that belong to ``kinds``."""
    n_heads = model.config.num_attention_heads
    n_kv_heads = getattr(model.config, "num_key_value_heads", None) or n_heads
    names = {id(p): n for n, p in model.named_parameters()}
    paths = {"q": family.q_proj, "k": family.k_proj, "v": family.v_proj}
    modules = attention_modules(model, family)
    out: list[TrainableSlice] = []
    for layer in range(len(modules)) if layers is None else layers:
        attention = modules[layer]
        if family.fused_qkv is not None:
            fused = get_module(attention, family.fused_qkv)
            for param in fused.parameters(recurse=False):
                out.append(TrainableSlice(names[id(param)], param,
                                          _fused_mask(param, family, n_heads, n_kv_heads, kinds)))
        else:
            for kind in kinds:
                for param in get_module(attention, paths[kind]).parameters(recurse=False):
                    out.append(TrainableSlice(names[id(param)], param, None))
    return out


def kv_parameters(model: nn.Module, family: Family) -> list[TrainableSlice]:
    """The attention key and value projections (weights and biases) of every layer."""
    return projection_parameters(model, family, ("k", "v"))


def projection_weight(model: nn.Module, family: Family, kind: Projection, layer: int) -> torch.Tensor:
    """The weight matrix of one projection (W_Q, W_K or W_V) of one layer, cut out of a fused q/k/v weight, as
    (out_features, in_features) whatever the module's own layout (GPT-2's Conv1D stores (in, out))."""
    (weight,) = [s for s in projection_parameters(model, family, (kind,), [layer])
                 if s.parameter.dim() == 2]
    w = weight.parameter.detach()
    if weight.mask is None:
        return w
    if family.fused_layout == "columns":  # Conv1D (in, 3*d): the kind's columns, transposed
        return w[:, weight.mask[0]].T
    return w[weight.mask[:, 0]]
