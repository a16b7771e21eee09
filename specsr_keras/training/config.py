"""Training configuration: one flat dataclass, named presets, TOML files.

Every field is also a `specsr train` option of the same name (underscores become
dashes), so a config file and the command line map 1:1. The resolved config is saved
as `config.toml` in the run directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from specsr_keras.models.samplers import parse_sampler_settings

STAGES = ("autoencoders", "contrastive", "decoders")


@dataclass
class TrainConfig:
    """All settings of one training run (steps count optimizer updates, batch = examples)."""

    data: str = "demo/data/train"  # shard directories, comma-separated; "DIR@WEIGHT" weights a mix
    val_data: str = ""  # held-out shard directory ("" = hold out val_fraction of data)
    val_fraction: float = 0.05
    model_preset: str = "tiny"  # see specsr_keras.models.presets
    seed: int = 0
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    ema_momentum: float = 0.995
    autoencoder_steps: int = 200
    contrastive_steps: int = 200
    superres_steps: int = 600
    stages: str = ",".join(STAGES)  # which stages to run, comma-separated, in order
    checkpoint_every: int = 100  # steps between checkpoints (and metrics rows); stage steps round up to a multiple
    val_examples: int = 128  # validation examples for SR line-ratio errors (0 = skip)
    val_ddim_steps: int = 10
    val_samples: int = 4
    mixed_precision: bool = False  # bfloat16/float16 compute on GPU
    devices: int = 0  # 0 = every visible accelerator
    init_from: str = ""  # run directory whose final weights initialise this run (fine-tuning)
    init_stages: str = ",".join(STAGES)  # stages whose weights init_from provides, comma-separated
    # Sampler settings saved with the super-resolver (models/samplers.py), "key=value,...";
    # chosen on the validation set after training (they change no weight).
    sampler: str = ""
    extra: dict = field(default_factory=dict)

    def stage_list(self) -> list[str]:
        return _stages(self.stages, "stages")

    def init_stage_list(self) -> list[str]:
        return _stages(self.init_stages, "init_stages")

    def to_toml(self) -> str:
        lines = []
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            lines.append(f"{f.name} = {_toml_value(getattr(self, f.name))}")
        return "\n".join(lines) + "\n"


def _stages(text: str, key: str) -> list[str]:
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"{key}: unknown stage(s) {unknown}; choose from {list(STAGES)}")
    return stages


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


# Named presets: `quick` fits the CPU demo (~10 min on 2 cores), `default` is the ~2 h CPU
# run behind the shipped model, `base` is for one GPU.
PRESETS: dict[str, dict] = {
    # Both: the posterior sampler measured best on the validation set (benchmarks/README.md):
    # the spectrum-conditioned denoiser, corrected toward the observed pixels at every step.
    "quick": {"autoencoder_steps": 100, "contrastive_steps": 100, "superres_steps": 400, "val_examples": 64,
              "sampler": "amortised=true,eta=1,posterior_draws=true"},
    "default": {
        # Data from `make shipped-data` (simulator 2.0.0, seeds 31-35, S/N-stratified, instrument mix).
        "data": "datasets/sim/train-euclid,datasets/sim/train-euclid-bright,datasets/sim/train-g141,"
                "datasets/sim/train-roman",
        "val_data": "datasets/sim/val",
        "model_preset": "tiny",
        "autoencoder_steps": 750,
        "contrastive_steps": 800,
        "superres_steps": 12000,
        "learning_rate": 1e-3,
        "warmup_steps": 300,
        "ema_momentum": 0.999,
        "checkpoint_every": 250,
        "val_examples": 512,
        "val_ddim_steps": 10,
        "val_samples": 8,
        "sampler": "amortised=true,eta=1,posterior_draws=true",
    },
    "base": {
        "model_preset": "base",
        "batch_size": 256,
        "autoencoder_steps": 20000,
        "contrastive_steps": 10000,
        "superres_steps": 100000,
        "learning_rate": 5e-4,
        "warmup_steps": 1000,
        "ema_momentum": 0.9995,
        "checkpoint_every": 1000,
        "val_examples": 2048,
        "val_ddim_steps": 20,
        "val_samples": 16,
        "mixed_precision": True,
    },
}


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name != "extra"]


def resolve_config(preset: str = "quick", config_file: str | Path | None = None, **overrides) -> TrainConfig:
    """Preset, then config file, then explicit overrides (None means "not given")."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    values = dict(PRESETS[preset])
    if config_file is not None:
        with open(config_file, "rb") as handle:
            loaded = tomllib.load(handle)
        unknown = sorted(set(loaded) - set(field_names()))
        if unknown:
            raise ValueError(f"{config_file}: unknown key(s) {unknown}")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(**values)
    config.stage_list()
    config.init_stage_list()
    parse_sampler_settings(config.sampler)
    return config
