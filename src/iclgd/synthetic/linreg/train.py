"""Training an LSA on fresh regression tasks, the official recipe of von Oswald et al. 2023.

Adam (lr 1e-3, betas (0.9, 0.98); lr 5e-4 above 3 layers), 2048 fresh tasks per step, loss
0.5·MSE on the query, init truncated-normal fan-in variance scaling with scale 0.002/K.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from iclgd.checks import check_output_dir
from iclgd.errors import UserError
from iclgd.synthetic.linreg.config import TrainConfig
from iclgd.synthetic.linreg.data import generator, sample_tasks, squared_loss, stream_seeds, torch_generator
from iclgd.synthetic.linreg.lsa import LSA, variance_scaling_init_
from iclgd.synthetic.linreg.run import build_model, check_out, eval_tasks, load_run, read_curve, write_run


@dataclass
class TrainResult:
    model: LSA
    curve: dict[str, list]  # step, train_loss, eval_loss (NaN between eval points)
    eval_loss: float
    seconds: float
    out: Path | None = None
    already_done: bool = False  # the folder held this very run: nothing was trained

    @property
    def steps_per_second(self) -> float:
        return (len(self.curve["step"]) - 1) / self.seconds if self.seconds > 0 else math.inf


def progress_bar(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)


def train_model(config: TrainConfig, progress: bool = True, description: str = "train LSA",
                diverged: str | None = None) -> TrainResult:
    """Train the configured LSA; returns the float32 model and its curve (step 0 is the initial model).
    ``diverged``: what a diverged run's error tells the user to do (default: lower --lr, or clip gradients)."""
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, progress, description, diverged)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: TrainConfig, progress: bool, description: str, diverged: str | None) -> TrainResult:
    """The training loop: fresh tasks every step, eval loss on the fixed set every `eval_every` steps."""
    seeds = stream_seeds(config.seed)
    model = variance_scaling_init_(build_model(config), config.init_scale, torch_generator(seeds["init"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    evaluation = eval_tasks(config, torch.float32)
    data = generator(seeds["train"])

    def eval_loss() -> float:
        with torch.no_grad():
            return float(squared_loss(model(evaluation.x, evaluation.y, evaluation.x_query), evaluation.y_query))

    curve = {"step": [0], "train_loss": [math.nan], "eval_loss": [eval_loss()]}
    start = time.perf_counter()
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=config.steps, info="")
        for step in range(1, config.steps + 1):
            batch = sample_tasks(config.batch_size, config.d, config.m, config.n_context, config.input_range,
                                 config.weight_scale, gen=data)
            loss = squared_loss(model(batch.x, batch.y, batch.x_query), batch.y_query)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            at_eval = step % config.eval_every == 0 or step == config.steps
            curve["step"].append(step)
            curve["train_loss"].append(loss.item())
            curve["eval_loss"].append(eval_loss() if at_eval else math.nan)
            check_finite_loss(step, curve["train_loss"][-1], curve["eval_loss"][-1] if at_eval else 0.0, config,
                              diverged)
            if at_eval:
                bar.update(task, completed=step, info=f"eval loss {curve['eval_loss'][-1]:.4f}")
    seconds = time.perf_counter() - start
    return TrainResult(model, curve, curve["eval_loss"][-1], seconds)


def check_finite_loss(step: int, train_loss: float, eval_loss: float, config: TrainConfig,
                      diverged: str | None = None) -> None:
    """A diverged run fails where it diverges, and no run folder is written: a NaN model is no result to compare.
    ``diverged``: what to do about it, where the run's lr is not the user's to lower (default: lower --lr)."""
    if not (math.isfinite(train_loss) and math.isfinite(eval_loss)):
        bad = f"training loss {train_loss}" if not math.isfinite(train_loss) else f"eval loss {eval_loss}"
        fix = diverged or f"lower --lr{'' if config.grad_clip else ' or set --grad-clip'}; nothing was written"
        raise UserError(f"linreg training diverged at step {step} ({bad}) at lr {config.lr:g}: {fix}")


def train(config: TrainConfig, out: str | Path | None = None, overwrite: bool = False,
          progress: bool = True) -> TrainResult:
    """Train and write the run folder (config.yaml, weights.safetensors, curve.parquet) to `out`.

    A folder that already holds this very run is left as it is (rerun = nothing to do); one holding another run is
    refused unless ``overwrite``.
    """
    out = Path(out if out is not None else config.out or "runs/linreg")
    check_output_dir(out)
    config = config.model_copy(update={"out": str(out)})
    if check_out(out, config, overwrite):  # checked before training, not after
        curve = read_curve(out)
        _, model = load_run(out, torch.float32)
        return TrainResult(model, curve, curve["eval_loss"][-1], 0.0, out, already_done=True)
    result = train_model(config, progress)
    result.out = write_run(out, config, result.model, result.curve)
    return result
