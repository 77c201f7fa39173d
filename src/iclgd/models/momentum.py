"""Momentum attention (Dai et al. 2023, §5) for GPT-2 and LLaMA models, as registered transformers model classes.

    MoAttn(V, K, q_t) = Attn(V, K, q_t) + Σ_{i<t} η^{t−i} v_i

the attention output plus an exponential moving average of the past value vectors, added before the output
projection (spec/protocols.md). η is one fixed number (``momentum_eta``), or, with ``momentum_learned``, one decay
per channel (head × head dim) of each layer, η_c = sigmoid(θ_c) trained with the model (the MEGA-style variant the
authors released informally). η = 0 is vanilla attention, bit for bit.

Two classes: GPT-2's (``GPT2LMHeadModel`` with each block's attention swapped for :class:`MomentumGPT2Attention`,
``model_type = "iclgd-momentum-gpt2"``) and LLaMA's (``LlamaForCausalLM``, grouped-query attention included, each
value head's term serving its group of query heads, ``"iclgd-momentum-llama"``), registered with the Auto classes:
``save_pretrained`` writes an ordinary folder and ``AutoModelForCausalLM.from_pretrained`` reads it once ``iclgd``
(this module) is imported; iclgd's family table treats them as GPT-2 and LLaMA. The momentum term goes in
through a pre-hook on the output projection, so the captured attention output (the projection's output) includes
it. It sees every past value: those of a KV cache, and those of the shared demonstration prefix iclgd scores
queries on (positions continue after the prefix). Batches must be right-padded (a left-padded one is refused): the
sum runs over token indices.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention
from transformers.models.llama.modeling_llama import LlamaAttention

MODEL_TYPE = "iclgd-momentum-gpt2"
LLAMA_MODEL_TYPE = "iclgd-momentum-llama"


def set_momentum(config, momentum_eta: float, momentum_learned: bool) -> None:
    """Check and set the fields momentum adds to a family's config: ``momentum_eta`` (η in [0, 1): the fixed decay,
    or the initial one of learned decays) and ``momentum_learned`` (one trained decay per channel and layer)."""
    if not 0.0 <= momentum_eta < 1.0:
        raise ValueError(f"momentum_eta must lie in [0, 1), got {momentum_eta}")
    if momentum_learned and momentum_eta == 0.0:
        raise ValueError("learned decays start from momentum_eta: give one in (0, 1)")
    config.momentum_eta = momentum_eta
    config.momentum_learned = momentum_learned


# Each class defines its own __init__: transformers makes every config class a dataclass, which writes an __init__
# (without the momentum fields) for a subclass that has none.
class MomentumGPT2Config(GPT2Config):
    """GPT-2's config plus the momentum fields (:func:`set_momentum`)."""

    model_type = MODEL_TYPE

    def __init__(self, momentum_eta: float = 0.9, momentum_learned: bool = False, **kwargs) -> None:
        set_momentum(self, momentum_eta, momentum_learned)
        super().__init__(**kwargs)


class MomentumLlamaConfig(LlamaConfig):
    """LLaMA's config plus the momentum fields (:func:`set_momentum`)."""

    model_type = LLAMA_MODEL_TYPE

    def __init__(self, momentum_eta: float = 0.9, momentum_learned: bool = False, **kwargs) -> None:
        set_momentum(self, momentum_eta, momentum_learned)
        super().__init__(**kwargs)


def momentum_term(values: torch.Tensor, query_positions: torch.Tensor, decay: torch.Tensor,
                  chunk_elements: int = 1 << 24) -> torch.Tensor:
    """Σ_{j < p_t} η^{p_t − j} v_j for each query t at absolute position p_t, over ``values [B, H, S, D]`` at positions
    0..S−1; ``decay``: η, a scalar or one per channel ``[H, D]``. Returns ``[B, H, T, D]`` in the values' dtype.

    Computed in float32 at least (distances from an integer range: bf16 holds whole numbers exactly only up to 256),
    per-channel decays in blocks of queries of at most ``chunk_elements`` weights."""
    compute = torch.promote_types(values.dtype, torch.float32)
    source = values.to(compute)
    distance = (query_positions[:, None].long() - torch.arange(values.shape[2], device=values.device)[None, :])
    past = distance >= 1
    distance = distance.clamp_min(1).to(compute)  # [T, S]
    log_decay = torch.log(decay.to(device=values.device, dtype=compute))  # −inf at η = 0: every weight exactly 0
    if log_decay.dim() == 0:
        weights = torch.where(past, torch.exp(distance * log_decay), 0.0)  # [T, S]
        return torch.einsum("ts,bhsd->bhtd", weights, source).to(values.dtype)
    heads, width = log_decay.shape
    rows = max(1, chunk_elements // max(1, heads * values.shape[2] * width))
    blocks = []
    for start in range(0, distance.shape[0], rows):
        exponents = distance[start:start + rows, :, None][None] * log_decay[:, None, None, :]  # [H, t, S, D]
        weights = torch.where(past[start:start + rows, :, None][None], torch.exp(exponents), 0.0)
        blocks.append(torch.einsum("htsd,bhsd->bhtd", weights, source))
    return torch.cat(blocks, dim=2).to(values.dtype)


class MomentumAttention:
    """What momentum adds to a family's attention module (a mixin before the family's class): the decays, the term
    computed from the value states (those before this block too: a KV cache's, or iclgd's shared prefix) and handed
    to the output projection by a pre-hook. A family says how to read its value states (``_value_states``) and which
    module projects the output (``_output_projection``)."""

    def _init_momentum(self, config, query_heads: int, value_heads: int, head_dim: int) -> None:
        self._momentum_shape = (value_heads, head_dim)
        self._query_heads = query_heads
        if config.momentum_learned:
            logit = math.log(config.momentum_eta / (1.0 - config.momentum_eta))
            self.momentum_logit = nn.Parameter(torch.full((value_heads * head_dim,), logit))
        else:
            self.momentum_eta = float(config.momentum_eta)  # a number, not a buffer: nothing to load or move
        self._pending_momentum: torch.Tensor | None = None
        self._output_projection().register_forward_pre_hook(self._add_momentum)

    def decay(self) -> torch.Tensor:
        """η: a scalar, or ``[value heads, head dim]`` per channel."""
        if hasattr(self, "momentum_logit"):
            return torch.sigmoid(self.momentum_logit).view(*self._momentum_shape)
        return torch.tensor(self.momentum_eta, dtype=torch.float64)

    def _add_momentum(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._pending_momentum is None:
            return None
        momentum, self._pending_momentum = self._pending_momentum, None
        return (args[0] + momentum.to(args[0].dtype), *args[1:])

    def _prepare_momentum(self, hidden_states: torch.Tensor, past_key_values) -> None:
        from iclgd.models.attention import session_for

        batch, length, _ = hidden_states.shape
        value = self._value_states(hidden_states)  # [B, H_kv, T, D]
        earlier = None  # the values before this block: a KV cache's, or iclgd's shared prefix
        if past_key_values is not None and past_key_values.get_seq_length(self.layer_idx) > 0:
            earlier = past_key_values.layers[self.layer_idx].values
        session = session_for(self)
        if session is not None and session.prefix is not None:
            earlier = session.prefix.values[self._iclgd_layer]
        offset = 0 if earlier is None else earlier.shape[2]
        if earlier is not None:
            value = torch.cat([earlier.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
        positions = offset + torch.arange(length, device=hidden_states.device)
        momentum = momentum_term(value, positions, self.decay())
        if self._query_heads != momentum.shape[1]:  # grouped-query attention: a value head serves a group of heads
            momentum = momentum.repeat_interleave(self._query_heads // momentum.shape[1], dim=1)
        self._pending_momentum = momentum.transpose(1, 2).reshape(batch, length, -1)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        self._prepare_momentum(hidden_states, kwargs.get("past_key_values"))
        try:
            return super().forward(hidden_states, *args, **kwargs)
        finally:
            self._pending_momentum = None


class MomentumGPT2Attention(MomentumAttention, GPT2Attention):
    """GPT-2 attention whose output projection receives the attention output plus the momentum term."""

    def _value_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        value = self.c_attn(hidden_states).split(self.split_size, dim=2)[2]
        return value.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _output_projection(self) -> nn.Module:
        return self.c_proj


class MomentumLlamaAttention(MomentumAttention, LlamaAttention):
    """LLaMA attention (grouped-query included) with the momentum term before ``o_proj``."""

    def _value_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        return self.v_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)

    def _output_projection(self) -> nn.Module:
        return self.o_proj


class MomentumGPT2LMHeadModel(GPT2LMHeadModel):
    """GPT-2 with momentum attention in every block."""

    config_class = MomentumGPT2Config

    def __init__(self, config: MomentumGPT2Config) -> None:
        super().__init__(config)
        for block in self.transformer.h:
            block.attn.__class__ = MomentumGPT2Attention
            block.attn._init_momentum(config, config.n_head, config.n_head, config.n_embd // config.n_head)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        _refuse_left_padding(attention_mask)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


class MomentumLlamaForCausalLM(LlamaForCausalLM):
    """LLaMA with momentum attention in every decoder layer."""

    config_class = MomentumLlamaConfig

    def __init__(self, config: MomentumLlamaConfig) -> None:
        super().__init__(config)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        for layer in self.model.layers:
            layer.self_attn.__class__ = MomentumLlamaAttention
            layer.self_attn._init_momentum(config, config.num_attention_heads, config.num_key_value_heads, head_dim)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        _refuse_left_padding(attention_mask)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def _refuse_left_padding(attention_mask: torch.Tensor | None) -> None:
    """The momentum sum runs over token indices: a left-padded row would mix its pad values into it."""
    if attention_mask is not None and attention_mask.dim() == 2 and bool(
            (attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        raise ValueError("momentum attention takes right-padded batches only (padding after the tokens): "
                         "set tokenizer.padding_side = 'right'")


AutoConfig.register(MODEL_TYPE, MomentumGPT2Config)
AutoModelForCausalLM.register(MomentumGPT2Config, MomentumGPT2LMHeadModel)
AutoConfig.register(LLAMA_MODEL_TYPE, MomentumLlamaConfig)
AutoModelForCausalLM.register(MomentumLlamaConfig, MomentumLlamaForCausalLM)
