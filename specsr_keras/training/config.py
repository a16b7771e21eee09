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

from specsr_keras.models.presets import PRESETS as MODEL_PRESETS
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


# Named presets: `quick` is the CPU demo's training (~4 min on 2 cores), `default` is the
# ~2 h CPU run behind the shipped model (all stages), `base` is for one GPU.
PRESETS: dict[str, dict] = {
    # Both: the posterior sampler measured best on the validation set (benchmarks/README.md):
    # the spectrum-conditioned denoiser, corrected toward the observed pixels at every step,
    # with never less noise than the pixels show (noise_check, benchmarks/README.md).
    "quick": {"autoencoder_steps": 60, "contrastive_steps": 60, "superres_steps": 300, "val_examples": 64,
              "sampler": "amortised=true,eta=1,posterior_draws=true,noise_check=true"},
    "default": {
        # Data from `make shipped-data` (simulator 2.2.0, seeds 31-37, S/N-stratified, instrument mix).
        "data": "datasets/sim/train-euclid,datasets/sim/train-euclid-2,datasets/sim/train-euclid-bright,"
                "datasets/sim/train-g141,datasets/sim/train-roman",
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
        # G141's windows, in units of its low blended peak, need more steps than Euclid's
        # (benchmarks/README.md, "G141: the data step's covariance per instrument").
        "sampler": "amortised=true,eta=1,posterior_draws=true,steps.g141=50,noise_check=true",
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


# Allowed range of each numeric field: (lowest, highest, whether the lowest is allowed).
RANGES: dict[str, tuple[float, float | None, bool]] = {
    "val_fraction": (0.0, 1.0, True), "seed": (0, None, True), "batch_size": (1, None, True),
    "learning_rate": (0.0, None, False), "warmup_steps": (0, None, True),
    "weight_decay": (0.0, None, True), "ema_momentum": (0.0, 1.0, True),
    "autoencoder_steps": (0, None, True), "contrastive_steps": (0, None, True),
    "superres_steps": (0, None, True), "checkpoint_every": (1, None, True),
    "val_examples": (0, None, True), "val_ddim_steps": (1, None, True), "val_samples": (1, None, True),
    "devices": (0, None, True),
}
_TYPE_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def _checked(key: str, value, origin: str):
    """`value` of field `key` converted to its type and range-checked; ValueError naming
    `origin` (the config file or "command line") and the key otherwise."""
    kind = {f.name: f.type for f in dataclasses.fields(TrainConfig)}[key]
    accepted = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}[kind]
    if not isinstance(value, accepted) or (kind != "bool" and isinstance(value, bool)):
        raise ValueError(f"{origin}: {key} = {value!r}: expected {_TYPE_NAMES[kind]}")
    value = float(value) if kind == "float" else value
    low, high, low_ok = RANGES.get(key, (None, None, True))
    if low is not None and (value < low or (value == low and not low_ok) or
                            (high is not None and value >= high)):
        bounds = f"{'>=' if low_ok else '>'} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{origin}: {key} = {value!r}: must be {bounds}")
    if key == "model_preset" and value not in MODEL_PRESETS:
        raise ValueError(f"{origin}: model_preset = {value!r}: choose from {sorted(MODEL_PRESETS)}")
    return value


def _load_toml(config_file) -> dict:
    try:
        with open(config_file, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{config_file}: not valid TOML ({exc})") from None


def run_config(run_dir: str | Path, preset: str = "quick", config_file: str | Path | None = None, *,
               resume: bool = True, **overrides) -> TrainConfig:
    """The config of a run: a run directory that holds a `config.toml` resumes with it (a
    config file and explicit overrides still apply on top), a new run starts from `preset`."""
    saved = Path(run_dir) / "config.toml"
    return resolve_config(preset, saved if resume and saved.exists() else None, config_file, **overrides)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name != "extra"]


def resolve_config(preset: str = "quick", *config_files: str | Path | None, **overrides) -> TrainConfig:
    """Preset, then each config file in order, then explicit overrides (None means "not given").

    Every value is checked for type and range where it comes from (ValueError naming the
    file or the command line, and the key) before anything is trained.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    values = dict(PRESETS[preset])
    sources = [(str(config_file), _load_toml(config_file)) for config_file in filter(None, config_files)]
    sources.append(("command line", {k: v for k, v in overrides.items() if v is not None}))
    for origin, given in sources:
        unknown = sorted(set(given) - set(field_names()))
        if unknown:
            raise ValueError(f"{origin}: unknown key(s) {unknown}")
        values.update({key: _checked(key, value, origin) for key, value in given.items()})
    config = TrainConfig(**values)
    for key, text, check in (("stages", config.stages, config.stage_list),
                             ("init_stages", config.init_stages, config.init_stage_list),
                             ("sampler", config.sampler, lambda: parse_sampler_settings(config.sampler))):
        try:
            check()
        except ValueError as exc:
            origin = next((o for o, given in reversed(sources) if key in given), f"preset {preset}")
            raise ValueError(f"{origin}: {key} = {text!r}: {exc}") from None
    return config
