"""Batched forward passes on top of one shared demonstration prefix, capturing what the metrics need.

    prefix = encode_prefix(lm, prefix_ids)                      # the demonstrations, run once
    logits, capture = forward(lm, input_ids, attention_mask, prefix=prefix, request=request, logits_at=label_pos)
    with recording(lm, request) as buffer: ...any forward...   # finetuning steps (gradients flow as in the stock model)

Positions. ``input_ids [B, T]`` is the query block, right-padded, ``attention_mask [B, T]`` 1 on real tokens. Its
position ids are ``P + arange(T)`` (P = prefix length, 0 without a prefix), so a query block on top of a prefix is
the same sequence as prefix + query in one pass. Every row attends to the same prefix K/V (post-rotary, kept as
``[1, H_kv, P, D]`` per layer, never expanded per example; see :mod:`iclgd.models.attention`).

What is captured (TransformerLens names in brackets; ours are taken at one analysis position only), per layer l:

* ``attention_output [B, L, d_model]`` (``blocks.l.hook_attn_out``): the attention module's output projection at
  the analysis position, bias included, before dropout and the residual add. For Gemma 2/3 that is before the
  block's ``post_attention_layernorm`` (TransformerLens's ``hook_attn_out`` there is after it): the attention
  module's own output, as for every other family.
* ``presoftmax_logits [B, L, H, T_max]`` (``blocks.l.attn.hook_attn_scores``, one row): the scores the model feeds
  its softmax (its own scaling: GPT-Neo unscaled, OPT/XGLM with q pre-scaled; after Gemma 2's soft cap
  ``cap·tanh(s/cap)``), from the analysis position to the
  test-example tokens ``[test_start, analysis_index]`` in order, right-padded with 0 to ``T_max``; ``test_length
  [B]`` says how many are real. With GQA the key heads are repeated for their query heads. Keys the layer masks
  (a local or sliding window) hold 0 and are counted in ``masked_keys [B, L]``.
* ``demo_logits [B, L, N]``: ``Σ_h q_h·k_{h,j}·scaling`` from the analysis position to the prefix positions
  ``demo_key_index`` (Kendall's m_ICL), whether or not a window hides them; each head's score soft-capped before
  the sum where the model caps (the scores its softmax sees).
* ``analysis_query [B, L, H·D]``: ``q·scaling`` at the analysis position, heads concatenated (m_FT = Q_train @ q;
  linear, so never soft-capped).
* ``all_queries [B, L, T, H·D]`` (only if requested): ``q·scaling`` at every position of the block.

All captures are detached float32 CPU tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from iclgd.models.attention import BATCH_EXACT, EXACT_MIN_ROWS, Session, soft_cap
from iclgd.models.families import attention_modules, get_module, model_context, readout
from iclgd.models.loading import LoadedModel, prepare


@dataclass
class Prefix:
    """K/V of one demonstration prefix, per layer ``[1, H_kv, P, D]`` (post-rotary), shared by every batch."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    ids: torch.Tensor  # [P]
    model_id: int
    _workspaces: dict = field(default_factory=dict, repr=False)

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])

    def workspace(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A reusable score buffer of this shape (the attention to the prefix writes into it, layer after layer)."""
        key = (shape, dtype, device)
        if key not in self._workspaces:
            self._workspaces.clear()  # keep one: batches of one size, then perhaps a smaller last one
            self._workspaces[key] = torch.empty(shape, dtype=dtype, device=device)
        return self._workspaces[key]


@dataclass
class CaptureRequest:
    """What to capture. Indices are positions in the query block (the ``input_ids`` given to :func:`forward`)."""

    analysis_index: torch.Tensor  # [B] the analysis token
    test_start: torch.Tensor  # [B] first test-example token; test tokens are [test_start, analysis_index]
    demo_key_index: torch.Tensor | None = None  # [N] demonstration-token positions IN THE PREFIX (ICL only)
    all_queries: bool = False  # also record q·scaling at every position (FT training steps)


@dataclass
class Capture:
    attention_output: torch.Tensor  # [B, L, d_model]
    presoftmax_logits: torch.Tensor  # [B, L, H, T_max]
    test_length: torch.Tensor  # [B]
    masked_keys: torch.Tensor  # [B, L]
    demo_logits: torch.Tensor | None  # [B, L, N]
    analysis_query: torch.Tensor  # [B, L, H*D]
    all_queries: torch.Tensor | None  # [B, L, T, H*D]


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float32)


class CaptureBuffer:
    """Collects captures layer by layer; a new forward pass starts when layer 0 comes again.

    ``captures``: one :class:`Capture` per completed forward pass; ``capture``: the last one.
    """

    def __init__(self, request: CaptureRequest, n_layers: int):
        self.request = request
        self.n_layers = n_layers
        self._pending: dict[int, dict[str, torch.Tensor | None]] = {}
        self._done: list[Capture] = []

    # -- called by iclgd.models.attention.attend ---------------------------------------------------------------
    def on_attention(self, layer: int, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                     scaling: float, prefix_key: torch.Tensor | None, softcap: float | None = None) -> None:
        """query ``[B, H, T_q, D]``, key ``[B, H_kv, T_k, D]`` (the queries are the last T_q keys), mask boolean
        ``[B|1, 1, T_q, T_k]`` or None (causal), prefix_key ``[1, H_kv, P, D]`` or None, the model's soft cap or None.
        Scores are recorded as the softmax sees them: scaled, then soft-capped."""
        if layer == 0 and 0 in self._pending:
            self._finish_pass()
        request = self.request
        batch, n_heads, q_len, head_dim = query.shape
        n_kv, k_len = key.shape[1], key.shape[2]
        device = query.device
        rows = torch.arange(batch, device=device)
        analysis = request.analysis_index.to(device)
        start = request.test_start.to(device)
        kv_head = torch.arange(n_heads, device=device) // (n_heads // n_kv)  # GQA: query head h uses kv head h // g

        q_analysis = query[rows, :, analysis].float()  # [B, H, D]
        length = analysis - start + 1
        t_max = int(length.max())
        steps = torch.arange(t_max, device=device)
        real = steps[None, :] < length[:, None]  # [B, T_max]
        key_index = torch.minimum(start[:, None] + steps[None, :], analysis[:, None]) + (k_len - q_len)
        test_keys = key.transpose(1, 2)[rows[:, None], key_index][:, :, kv_head].float()  # [B, T_max, H, D]
        # Products summed over D, not an einsum: its matrix product's bits for one example depend on the batch.
        logits = soft_cap((q_analysis[:, None] * test_keys).sum(-1).transpose(1, 2) * scaling, softcap)
        if mask is None:
            allowed = torch.ones_like(real)
        else:
            rows_mask = rows if mask.shape[0] == batch else torch.zeros_like(rows)
            allowed = mask[rows_mask[:, None], 0, analysis[:, None], key_index]
        logits = logits.masked_fill(~(real & allowed)[:, None, :], 0.0)

        demo = None
        if prefix_key is not None and request.demo_key_index is not None:
            demo_keys = prefix_key[0][:, request.demo_key_index.to(device)][kv_head].float()  # [H, N, D]
            if softcap is None:
                demo = torch.einsum("bhd,hnd->bn", q_analysis, demo_keys) * scaling
            else:  # cap each head's score, then sum
                demo = soft_cap(torch.einsum("bhd,hnd->bhn", q_analysis, demo_keys) * scaling, softcap).sum(1)
        queries = None
        if request.all_queries:
            queries = (query.float() * scaling).transpose(1, 2).reshape(batch, q_len, n_heads * head_dim)
        self._pending[layer] = {
            "presoftmax_logits": _cpu(logits),
            "masked_keys": _cpu((real & ~allowed).sum(1)),
            "test_length": _cpu(length),
            "demo_logits": None if demo is None else _cpu(demo),
            "analysis_query": _cpu(q_analysis.reshape(batch, n_heads * head_dim) * scaling),
            "all_queries": None if queries is None else _cpu(queries),
        }

    # -- called by the output-projection hooks -----------------------------------------------------------------
    def on_output(self, layer: int, output: torch.Tensor) -> None:
        rows = torch.arange(output.shape[0], device=output.device)
        self._pending[layer]["attention_output"] = _cpu(output[rows, self.request.analysis_index.to(output.device)])

    def _finish_pass(self) -> None:
        layers = [self._pending[i] for i in range(self.n_layers)] if len(self._pending) == self.n_layers else None
        if layers is None:
            raise RuntimeError(f"captured {sorted(self._pending)} of {self.n_layers} layers in one forward pass")

        def stack(name: str) -> torch.Tensor | None:
            if layers[0][name] is None:
                return None
            return torch.stack([layer[name] for layer in layers], dim=1)

        self._done.append(Capture(
            attention_output=stack("attention_output"),
            presoftmax_logits=stack("presoftmax_logits"),
            test_length=layers[0]["test_length"].long(),
            masked_keys=stack("masked_keys").long(),
            demo_logits=stack("demo_logits"),
            analysis_query=stack("analysis_query"),
            all_queries=stack("all_queries"),
        ))
        self._pending = {}

    def flush(self) -> None:
        if self._pending:
            self._finish_pass()

    @property
    def captures(self) -> list[Capture]:
        self.flush()
        return self._done

    @property
    def capture(self) -> Capture:
        captures = self.captures
        if not captures:
            raise RuntimeError("no forward pass ran while recording")
        return captures[-1]


@contextmanager
def _active(model: nn.Module, session: Session) -> Iterator[Session]:
    """``session`` is the one the model's attention modules see inside (see attention.SessionSlot)."""
    slot = model._iclgd_slot
    previous, slot.session = slot.session, session
    try:
        yield session
    finally:
        slot.session = previous


@contextmanager
def _output_hooks(lm: LoadedModel, buffer: CaptureBuffer) -> Iterator[None]:
    handles = []
    for layer, attention in enumerate(attention_modules(lm.model, lm.family)):
        def hook(module, args, output, layer=layer):
            buffer.on_output(layer, output)
        handles.append(get_module(attention, lm.family.o_proj).register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def recording(lm: LoadedModel, request: CaptureRequest) -> Iterator[CaptureBuffer]:
    """Capture during any forward pass of ``lm.model`` run inside (gradients unchanged; captures detached)."""
    prepare(lm.model)
    buffer = CaptureBuffer(request, lm.n_layers)
    with _active(lm.model, Session(buffer=buffer)), _output_hooks(lm, buffer):
        yield buffer
    buffer.flush()


def _base_model(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


def _check_positions(lm: LoadedModel, n_positions: int) -> None:
    if n_positions > _context(lm):
        raise ValueError(f"prefix + query = {n_positions} positions, more than the model's {_context(lm)}")


def _check_request(request: CaptureRequest, attention_mask: torch.Tensor, prefix: Prefix | None) -> None:
    analysis, start = request.analysis_index.cpu(), request.test_start.cpu()
    lengths = attention_mask.sum(1).cpu()
    if analysis.shape != lengths.shape or start.shape != lengths.shape:
        raise ValueError("analysis_index and test_start need one entry per example")
    if bool((analysis >= lengths).any() or (start > analysis).any() or (start < 0).any()):
        raise ValueError("need 0 <= test_start <= analysis_index < the example's length")
    if request.demo_key_index is not None:
        if prefix is None:
            raise ValueError("demo_key_index needs a prefix")
        if bool((request.demo_key_index < 0).any() or (request.demo_key_index >= prefix.length).any()):
            raise ValueError("demo_key_index must be positions in the prefix")


@torch.no_grad()
def encode_prefix(lm: LoadedModel, prefix_ids: torch.Tensor) -> Prefix:
    """Run the prefix once (positions 0..P-1) and keep each layer's post-rotary K/V ``[1, H_kv, P, D]``."""
    prepare(lm.model)
    ids = prefix_ids.reshape(-1).to(lm.device)
    _check_positions(lm, ids.shape[0])
    session = Session(encoding={})
    with _active(lm.model, session):
        _base_model(lm.model)(
            input_ids=ids[None], attention_mask=torch.ones_like(ids)[None],
            position_ids=torch.arange(ids.shape[0], device=ids.device)[None], use_cache=False,
        )
    layers = range(lm.n_layers)
    return Prefix(
        keys=[session.encoding[i][0] for i in layers], values=[session.encoding[i][1] for i in layers],
        ids=ids.cpu(), model_id=id(lm.model),
    )


@torch.no_grad()
def forward(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, prefix: Prefix | None = None,
            request: CaptureRequest | None = None,
            logits_at: torch.Tensor | None = None) -> tuple[torch.Tensor, Capture | None]:
    """One batched pass of the query block (on top of ``prefix`` if given).

    Returns float32 logits ``[B, n, V]`` at the positions ``logits_at [B, n]`` (all T positions if None; the model's
    final soft cap applied, as its own forward does) and the :class:`Capture` if ``request`` is given.
    """
    prepare(lm.model)
    if prefix is not None and prefix.model_id != id(lm.model):
        raise ValueError("this prefix was encoded by another model")
    device = lm.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    offset = prefix.length if prefix is not None else 0
    length = input_ids.shape[1]
    exact = BATCH_EXACT and device.type == "cpu"
    if exact and length < EXACT_MIN_ROWS:  # masked trailing positions: every product in the blocks has enough rows
        extra = min(EXACT_MIN_ROWS - length, max(0, _context(lm) - offset - length))
        input_ids = torch.nn.functional.pad(input_ids, (0, extra), value=0)
        attention_mask = torch.nn.functional.pad(attention_mask, (0, extra), value=0)
    batch, padded_length = input_ids.shape
    _check_positions(lm, offset + padded_length)
    position_ids = (torch.arange(padded_length, device=device) + offset)[None].expand(batch, padded_length)
    if request is not None:
        _check_request(request, attention_mask, prefix)
    buffer = CaptureBuffer(request, lm.n_layers) if request is not None else None
    session = Session(prefix=prefix, buffer=buffer)
    with _active(lm.model, session):
        if buffer is not None:
            with _output_hooks(lm, buffer):
                hidden = _base_model(lm.model)(input_ids=input_ids, attention_mask=attention_mask,
                                               position_ids=position_ids, use_cache=False)[0]
        else:
            hidden = _base_model(lm.model)(input_ids=input_ids, attention_mask=attention_mask,
                                           position_ids=position_ids, use_cache=False)[0]
    hidden = hidden[:, :length]
    if buffer is not None and length < padded_length:  # the padded positions' queries are not the caller's
        for capture in buffer.captures:
            if capture.all_queries is not None:
                capture.all_queries = capture.all_queries[:, :, :length]
    if logits_at is not None:
        hidden = hidden[torch.arange(batch, device=device)[:, None], logits_at.to(device)]
    if exact and hidden.shape[0] * hidden.shape[1] < EXACT_MIN_ROWS:  # zero rows: the unembedding has enough rows
        rows = hidden.reshape(-1, hidden.shape[-1])
        padded = torch.cat([rows, rows.new_zeros(EXACT_MIN_ROWS - rows.shape[0], rows.shape[1])])
        logits = readout(lm.model, lm.family, padded)[: rows.shape[0]].reshape(*hidden.shape[:2], -1).float()
    else:
        logits = readout(lm.model, lm.family, hidden).float()
    return logits, (buffer.capture if buffer is not None else None)


def _context(lm: LoadedModel) -> int:
    """The positions the model has (:func:`iclgd.models.families.model_context`; no limit where its config gives
    none)."""
    return model_context(lm.model.config, default=2**62)
