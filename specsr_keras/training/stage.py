"""One resumable training stage: `model.fit` over step-indexed batches with checkpoints.

A stage runs `steps` optimizer updates in fit-epochs of `checkpoint_every` steps; each
fit-epoch ends with a checkpoint (all variables + optimizer + RNG states), a CSV row and
TensorBoard scalars. Rerunning a stage resumes from its newest valid checkpoint, with
the same batches (see `batches.py`), so it finishes with the same weights as an
uninterrupted run. At the end the optimizer's EMA weights replace the raw ones and are
saved as `<stage>.weights.h5`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np

from specsr_keras.reporting import Reporter
from specsr_keras.training.batches import step_batches
from specsr_keras.training.checkpoints import CheckpointManager
from specsr_keras.training.config import TrainConfig


def make_optimizer(config: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """AdamW with linear warm-up then cosine decay, keeping an EMA copy of the weights."""
    warmup = min(config.warmup_steps, max(total_steps // 2, 1))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * 1e-2,
        decay_steps=max(total_steps - warmup, 1),
        alpha=0.05,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )
    return keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        global_clipnorm=1.0,
        use_ema=config.ema_momentum > 0,
        ema_momentum=config.ema_momentum,
    )


class _StageCallback(keras.callbacks.Callback):
    """Checkpoints at each fit-epoch end (with the stage's training seconds so far, summed
    over resumed invocations) and drives the reporter's progress bar."""

    def __init__(self, manager, steps_per_epoch, advance, start_step, elapsed):
        super().__init__()
        self.manager = manager
        self.steps_per_epoch = steps_per_epoch
        self.advance = advance
        self.step = start_step
        self.elapsed = elapsed  # () -> training seconds of the stage so far

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.advance(1, step=self.step, loss=float((logs or {}).get("loss", np.nan)))

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.steps_per_epoch
        self.manager.save(self.model, step, extra={"logs": {k: float(v) for k, v in (logs or {}).items()},
                                                   "train_seconds": round(self.elapsed(), 2)})


def train_stage(
    model: keras.Model,
    arrays: Mapping[str, np.ndarray],
    *,
    stage: str,
    steps: int,
    config: TrainConfig,
    run_dir: Path,
    reporter: Reporter | None = None,
    val_arrays: Mapping[str, np.ndarray] | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict:
    """Train `model` (a Keras model whose `compute_loss` takes the batch dict) for `steps`.

    Returns {"steps", "seconds", "final_loss", "val_loss", "resumed_from"}.
    """
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    steps_per_epoch = max(1, min(config.checkpoint_every, steps))
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    total_steps = epochs * steps_per_epoch

    first = next(step_batches(arrays, config.batch_size, config.seed))
    model(first)  # builds every layer
    model.compile(optimizer=make_optimizer(config, total_steps))
    model.optimizer.build(model.trainable_variables)

    manager = CheckpointManager(run_dir / "checkpoints" / stage)
    latest = manager.latest()
    start_step, earlier_seconds = 0, 0.0
    if latest is not None:
        earlier_seconds = float(latest.extra.get("train_seconds", 0.0))
        manager.restore(model, latest)
        start_step = latest.step
        reporter.info(f"{stage}: resuming from step {start_step} ({latest.weights_path.name})")
    initial_epoch = start_step // steps_per_epoch

    log_dir = run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def elapsed() -> float:
        return earlier_seconds + time.perf_counter() - started

    history = {}
    if initial_epoch < epochs:
        with reporter.task(f"train {stage}", total=total_steps) as advance:
            advance(start_step)
            callbacks = [
                _StageCallback(manager, steps_per_epoch, advance, start_step, elapsed),
                keras.callbacks.CSVLogger(str(log_dir / f"{stage}.csv"), append=True),
                keras.callbacks.TensorBoard(str(log_dir / "tensorboard" / stage), write_graph=False),
                *(callbacks or []),
            ]
            fit = model.fit(
                ((batch,) for batch in step_batches(arrays, config.batch_size, config.seed, start_step)),
                steps_per_epoch=steps_per_epoch,
                epochs=epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                shuffle=False,
                verbose=0,
            )
            history = fit.history
    else:  # finished before: the newest checkpoint holds raw weights; apply the EMA again
        model.optimizer.finalize_variable_values(model.trainable_variables)

    # The EMA swap makes weights and optimizer slots share buffers; a later stage's JAX
    # step donates (deletes) the weights' buffers, so give each variable its own copy.
    for variable in model.trainable_variables:
        variable.assign(np.array(keras.ops.convert_to_numpy(variable)))
    weights_path = run_dir / f"{stage}.weights.h5"
    model.save_weights(weights_path)
    summary = {
        "stage": stage,
        "examples": len(next(iter(arrays.values()))),
        "steps": total_steps,
        "resumed_from": start_step,
        "seconds": round(elapsed(), 2),  # summed over resumed invocations
        "final_loss": float(history["loss"][-1]) if history.get("loss") else None,
    }
    if val_arrays is not None:
        summary["val_loss"] = evaluate_loss(model, val_arrays, config.batch_size)
    (run_dir / f"{stage}.summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def evaluate_loss(model: keras.Model, arrays: Mapping[str, np.ndarray], batch_size: int) -> float:
    """Mean loss of `model` over `arrays` in order (weights as they are, e.g. EMA)."""
    n = len(next(iter(arrays.values())))
    losses = []
    for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in arrays.items()}
        y_pred = model(batch, training=False)
        loss = model.compute_loss(x=batch, y_pred=y_pred, training=False)
        losses.append(float(keras.ops.convert_to_numpy(loss)))
    return float(np.mean(losses))
