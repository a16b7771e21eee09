"""Learning curve of the shared space: retrieval and probes while the aligner trains.

Starts from a run's encoders (`--init RUN`, its `models/contrastive.keras`), builds a
`ContrastiveAligner` with the chosen settings (amplitudes into the heads, dihedral image
augmentation, property heads) and trains it with InfoNCE on the training shards; every `--every` steps it
embeds a held-out set and records image<->spectrum retrieval top-1/top-5 in pools of 256
and 1,000 and out-of-fold kNN / linear probes (z, log M*, log SFR, N2, AGN) of both
modalities (`evaluation.crossmodal`). Writes benchmarks/results/aligner_<label>.json: the
curve that sets the contrastive stage's step budget.

    python -m benchmarks.bench_aligner --init runs/default --steps 1500 --batch 128 \\
        --data datasets/sim/train-euclid,datasets/sim/train-g141 --heldout datasets/sim/heldout-euclid

With `--checkpoints DIR --run RUN` it trains nothing: it scores `--init` (step 0) and then
RUN's aligner with the weights of each checkpoint in DIR (copies of RUN's
`checkpoints/contrastive/ckpt-*` taken while `specsr train` ran: a run keeps its newest 3),
the held-out curve of a real training run -> results/aligner_curve.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, machine
from specsr_keras.training.config import PRESETS as TRAIN_PRESETS


def curve_point(aligner, inputs: dict, truth: dict) -> dict:
    from specsr_keras.evaluation.crossmodal import RETRIEVAL_POOLS, pooled_retrieval, probe_metrics
    from specsr_keras.training.validation import shared_space_embeddings

    image, spectrum = shared_space_embeddings(aligner, inputs)
    point = {f"pool{pool}": pooled_retrieval(image, spectrum, pool) for pool in RETRIEVAL_POOLS}
    point["probes"] = probe_metrics({"image": image, "spectrum": spectrum}, truth)
    return point


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default="runs/default", help="run whose encoders start the aligner")
    parser.add_argument("--data", default=TRAIN_PRESETS["default"]["data"])
    parser.add_argument("--heldout", default="datasets/sim/heldout-euclid")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--no-amplitude", action="store_true")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--property-weight", type=float, default=0.0,
                        help="teach the shared space z and catalogue M* (models/contrastive.py); 0: InfoNCE only")
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default=None, help="result file (default benchmarks/results/aligner_<label>.json)")
    parser.add_argument("--quick", action="store_true", help="50 steps on 1,000 examples (smoke run)")
    parser.add_argument("--checkpoints", default=None, help="score these checkpoints of --run instead of training")
    parser.add_argument("--run", default=None, help="the run whose checkpoints --checkpoints holds")
    args = parser.parse_args(argv)
    if args.checkpoints:
        return checkpoint_curve(args)

    import keras

    from specsr_keras.embeddings import load_aligner
    from specsr_keras.models.contrastive import ContrastiveAligner
    from specsr_keras.models.preprocessor import STAGE_KEYS
    from specsr_keras.reporting import Reporter
    from specsr_keras.training.batches import stage_arrays, step_batches
    from specsr_keras.training.pipeline import load_examples

    steps, every = (50, 25) if args.quick else (args.steps, args.every)
    keras.utils.set_random_seed(0)
    train, _ = load_examples(args.data, 0, Reporter())
    train = stage_arrays(train, STAGE_KEYS["contrastive"])
    if args.quick:
        train = {k: v[:1000] for k, v in train.items()}
    held_inputs, held = heldout_inputs(args.heldout, 300 if args.quick else 1500)
    start = load_aligner(args.init)
    settings = {"amplitude": not args.no_amplitude, "augment": not args.no_augment,
                "property_weight": args.property_weight}
    aligner = ContrastiveAligner(start.image_encoder, start.spectrum_encoder, embedding_dim=start.embedding_dim,
                                 hidden_dim=start.hidden_dim, **settings)
    schedule = keras.optimizers.schedules.CosineDecay(1e-5, max(steps - every, 1), alpha=0.05, warmup_target=1e-3,
                                                      warmup_steps=min(200, steps // 4))
    aligner.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4, global_clipnorm=1.0))
    batches = ((batch, None) for batch in step_batches(train, args.batch, seed=0))
    curve = [{"step": 0, **curve_point(aligner, held_inputs, held)}]
    started = time.perf_counter()
    for done in range(every, steps + 1, every):
        history = aligner.fit(batches, steps_per_epoch=every, epochs=1, verbose=0)
        curve.append({"step": done, "loss": float(history.history["loss"][-1]),
                      "seconds": round(time.perf_counter() - started, 1), **curve_point(aligner, held_inputs, held)})
        print(json.dumps({"step": done, "top1@256": round(curve[-1]["pool256"]["top1"], 3),
                          "loss": round(curve[-1]["loss"], 3)}), flush=True)
    label = args.label or "_".join(k for k, v in settings.items() if v) or "plain"
    result = {"benchmark": "aligner learning curve", "init": args.init, "data": args.data, "heldout": args.heldout,
              "batch": args.batch, "settings": settings, "examples": len(train["image"]), "curve": curve,
              "machine": machine(), "quick": args.quick}
    path = Path(args.out) if args.out else RESULTS_DIR / f"aligner_{label}{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {path}")
    return result


def heldout_inputs(directory: str, max_examples: int) -> tuple[dict, dict]:
    """(model inputs, truth) of the first max_examples of a held-out shard directory."""
    from specsr_keras.data.shards import load_shards, read_manifest
    from specsr_keras.instruments import get_instrument
    from specsr_keras.models.preprocessor import chunked_model_inputs

    held = load_shards(directory, max_examples=max_examples)
    instrument = get_instrument(read_manifest(directory)["instrument"])
    return chunked_model_inputs(held, instrument, noiseless_hires=True), held


def checkpoint_curve(args) -> dict:
    """Held-out retrieval and probes of --init, then of each checkpoint of --run (see the module doc)."""
    from specsr_keras.embeddings import load_aligner
    from specsr_keras.training.checkpoints import CheckpointManager

    if not args.run:
        raise SystemExit("--checkpoints needs --run (the run they were saved from)")
    inputs, held = heldout_inputs(args.heldout, 1500)
    curve = [{"step": 0, "run": args.init, **curve_point(load_aligner(args.init), inputs, held)}]
    aligner = load_aligner(args.run)
    manager = CheckpointManager(args.checkpoints)
    for checkpoint in manager.checkpoints():
        manager.restore_weights(aligner, checkpoint)
        curve.append({"step": checkpoint.step, "loss": checkpoint.extra.get("logs", {}).get("loss"),
                      **curve_point(aligner, inputs, held)})
        print(json.dumps({"step": checkpoint.step, "top1@256": round(curve[-1]["pool256"]["top1"], 3)}), flush=True)
    result = {"benchmark": "aligner learning curve from a run's checkpoints", "init": args.init, "run": args.run,
              "heldout": args.heldout, "curve": curve, "machine": machine()}
    path = Path(args.out) if args.out else RESULTS_DIR / "aligner_curve.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
