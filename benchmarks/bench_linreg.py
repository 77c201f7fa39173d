"""Training speed of the linear-regression LSA: steps per second at batch 2048, one layer, on 2 CPU threads.

    python -m benchmarks.bench_linreg            # prints one line, returns a dict from main()
The default run (`iclgd linreg train --layers 1 --steps 5000`) takes 5000 / (this figure) seconds plus ~2 s of
start-up. Timings on a shared machine are approximate.
"""

from __future__ import annotations

import argparse

from iclgd.synthetic.linreg.config import TrainConfig
from iclgd.synthetic.linreg.train import train_model


def steps_per_second(steps: int, threads: int, layers: int = 1) -> float:
    """Training steps per second of the default recipe (batch 2048) with `threads` torch threads."""
    warm_up = TrainConfig(steps=20, layers=layers, eval_tasks=100, eval_every=20, threads=threads)
    train_model(warm_up, progress=False)
    config = TrainConfig(steps=steps, layers=layers, eval_every=steps, threads=threads)
    return train_model(config, progress=False).steps_per_second


def main(argv: list[str] | None = None) -> dict:
    """One line: steps/s with the default single training thread and with 2 threads (2 CPU cores)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--layers", type=int, default=1)
    args = parser.parse_args(argv)
    steps, layers = args.steps, args.layers
    one, two = steps_per_second(steps, 1, layers), steps_per_second(steps, 2, layers)
    default_steps = TrainConfig(layers=layers).steps
    print(f"linreg train (batch 2048, {layers} layer(s), 2 CPU cores): {one:.1f} steps/s with 1 thread (default), "
          f"{two:.1f} with 2 threads; the default {default_steps} steps take ≈ {default_steps / one:.0f} s")
    return {"name": "linreg_train", "steps_per_second": one, "steps_per_second_2_threads": two, "batch_size": 2048,
            "layers": layers, "steps": steps, "default_run_seconds": default_steps / one}


if __name__ == "__main__":
    main()
