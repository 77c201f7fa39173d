"""The unembedding only where it is read: Gemma-3-270M's 262 144-token vocabulary, CPU.

Gemma-3-270M (the real weights where `iclgd models fetch` cached them, else random weights of its config):
1. Scoring 32 prompts of 300 tokens (batches of 8), reading the last position: a plain forward that unembeds every
   position (``model(ids).logits``) vs iclgd's (:func:`iclgd.models.capture.forward` with ``logits_at``: the
   unembedding at the scored position only).
2. One epoch of whole-model training with Shen's label-token loss on 8 sequences of 48 tokens (batch 1, SGD): the
   loss read off every position's logits vs iclgd's :func:`iclgd.finetune.label_loss` (the label position only).
Reported: seconds of each, the ratio, and each side's own peak memory (the peak reset before it).

Run: python -m benchmarks.bench_unembedding [--random]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from benchmarks.measure import peak_mib, reset_peak

PROMPTS, PROMPT_LEN, BATCH = 32, 300, 8
SEQUENCES, SEQUENCE_LEN = 8, 48


def _full_label_loss(model: torch.nn.Module, input_ids: torch.Tensor, n_label: int) -> torch.Tensor:
    """The label-token loss with the unembedding at every position (what label_loss did before issue 11)."""
    logits = model(input_ids=input_ids, use_cache=False).logits
    return F.cross_entropy(logits[0, -n_label - 1:-1].float(), input_ids[0, -n_label:])


def _train_epoch(model: torch.nn.Module, sequences: list[torch.Tensor], loss_fn) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    start = time.perf_counter()
    for ids in sequences:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, ids[None], 1).backward()
        optimizer.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.bench_finetune import load
    from iclgd.finetune import label_loss
    from iclgd.models.capture import forward
    from iclgd.models.loading import loaded

    parser = argparse.ArgumentParser()
    parser.add_argument("--random", action="store_true", help="random weights even where real ones are cached")
    args = parser.parse_args(argv)
    model, source = load("gemma3-270m", None, args.random, "cpu")
    lm = loaded(model, None, name="gemma3-270m")
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, vocab, (PROMPTS, PROMPT_LEN), generator=generator)
    last = torch.full((BATCH, 1), PROMPT_LEN - 1)
    figures: dict = {"model": "gemma3-270m", "weights": source, "vocab": vocab,
                     "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    with torch.inference_mode():
        forward(lm, prompts[:BATCH], torch.ones_like(prompts[:BATCH]), logits_at=last)  # warm-up

        def every_position() -> None:
            for b in range(0, PROMPTS, BATCH):
                model(input_ids=prompts[b:b + BATCH], use_cache=False).logits[:, -1]

        def scored_position() -> None:
            for b in range(0, PROMPTS, BATCH):
                ids = prompts[b:b + BATCH]
                forward(lm, ids, torch.ones_like(ids), logits_at=last)

        every, every_peak = _phase(every_position)
        scored, scored_peak = _phase(scored_position)
    sequences = [torch.randint(1, vocab, (SEQUENCE_LEN,), generator=generator) for _ in range(SEQUENCES)]
    model.requires_grad_(True)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    _train_epoch(model, sequences[:1], _full_label_loss)  # warm-up: the first backward allocates
    model.load_state_dict(original)
    train_every, train_every_peak = _phase(lambda: _train_epoch(model, sequences, _full_label_loss))
    model.load_state_dict(original)
    train_scored, train_scored_peak = _phase(lambda: _train_epoch(model, sequences, label_loss))
    figures.update(
        scoring={"prompts": PROMPTS, "tokens": PROMPT_LEN, "every_position_s": round(every, 2),
                 "scored_position_s": round(scored, 2), "speedup": round(every / scored, 2),
                 "every_position_peak_mib": every_peak, "scored_position_peak_mib": scored_peak},
        training={"sequences": SEQUENCES, "tokens": SEQUENCE_LEN, "every_position_s": round(train_every, 2),
                  "label_positions_s": round(train_scored, 2), "speedup": round(train_every / train_scored, 2),
                  "every_position_peak_mib": train_every_peak, "label_positions_peak_mib": train_scored_peak},
        peak_resets=_RESETS)
    print(f"gemma3-270m ({source}), vocabulary {vocab}")
    print(f"  scoring {PROMPTS} prompts of {PROMPT_LEN} tokens: unembedding every position {every:.1f} s "
          f"(peak {every_peak:.0f} MiB), the scored one {scored:.1f} s (peak {scored_peak:.0f} MiB) -> "
          f"{every / scored:.2f}x")
    print(f"  whole-model label-loss epoch ({SEQUENCES} x {SEQUENCE_LEN} tokens): every position "
          f"{train_every:.1f} s (peak {train_every_peak:.0f} MiB), the label position {train_scored:.1f} s "
          f"(peak {train_scored_peak:.0f} MiB) -> {train_every / train_scored:.2f}x")
    return figures


_RESETS: list[bool] = []


def _phase(work) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of ``work()``, the peak reset first (so a phase's peak is its own where the
    kernel allows; ``peak_resets`` in the figures says whether it did)."""
    _RESETS.append(reset_peak())
    start = time.perf_counter()
    work()
    return time.perf_counter() - start, peak_mib()


if __name__ == "__main__":
    main()
