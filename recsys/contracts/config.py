"""Configuration as frozen dataclasses read from TOML; unknown keys are rejected by name.

The resolved config is saved beside every model so that a model can be rebuilt from its folder alone.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.contracts.errors import ConfigError

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = DEFAULT_ENCODER  # hub name, used to find the weights offline (docs/ARCHITECTURE.md, "Offline resources")
    encoder_path: str | None = None  # a local Hugging Face folder; wins over every other source
    max_length: int = 48  # tokens per item text (title + description), truncated by the tokenizer
    dim: int = 128  # width of item / user vectors
    history_length: int = 20  # most recent clicked items that make a user's interest
    heads: int = 4  # attention heads of the user-interest pooling
    user_tower: str = "attention"  # "attention": pooling with a learned query; "transformer": layers over the history (recsys/model.py)
    user_layers: int = 2  # Transformer layers of user_tower = "transformer"
    scorer_hidden: int = 64  # width of the shared click/purchase MLP; it runs per (user, candidate) pair
    dropout: float = 0.1
    word_bag: bool = False  # add a trainable bag of the text's token embeddings to the item vector (recsys/model.py)
    freeze_layers: int = 0  # lower encoder layers kept frozen (parameter-efficient fine-tuning); -1 = all


@dataclass(frozen=True)
class TaskConfig:
    name: str  # "click" or "purchase"
    weight: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 7
    head_epochs: int = 16  # epochs on a frozen encoder first (fast: pooled outputs are cached)
    epochs: int = 1  # then epochs of full fine-tuning (minus model.freeze_layers)
    items_per_batch: int = 64  # distinct items encoded per step: the encoder runs once per item per batch
    exposures_per_item: int = 24  # impressions of an item sampled per epoch; a log without them keeps every click
    negatives_per_positive: int = 4  # sampled exposures per click when the log has no impressions
    encoder_lr: float = 3e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    retrieval_weight: float = 0.5  # in-batch softmax that makes user·item similarity a retrieval score
    temperature: float = 0.07
    # the retrieval softmax's negatives: the other items of the step's batch ("batch", 63 of them), or every
    # item of the catalog ("catalog": the full softmax of sequential recommenders, exact and affordable up to
    # tens of thousands of items, since item vectors come from the memory bank)
    retrieval_negatives: str = "batch"
    task_weighting: str = "fixed"  # "fixed" (weights of [[tasks]]) or "uncertainty" (learned, Kendall et al.)
    mlm_epochs: int = 0  # domain-adaptive masked-language-model pretraining on the catalog text first
    # domain-adaptive contrastive pretraining first: title ↔ description, consecutive clicks (recsys.pretrain)
    contrastive_epochs: int = 0
    keep: str = "best"  # epoch kept: "best" by validation over all epochs, or "best-fine-tuned" (over the fine-tuning ones)
    threads: int = 0  # torch threads; 0 = all cores


@dataclass(frozen=True)
class RankerConfig:
    num_leaves: int = 15
    learning_rate: float = 0.05
    n_estimators: int = 200
    min_data_in_leaf: int = 40
    cv_folds: int = 4  # user-level folds that choose the number of trees (up to n_estimators)
    lambda_l2: float = 1.0
    seed: int = 7
    # rankers with seeds seed, seed + 1, … averaged into one model (serving.ranking.average_boosters): less
    # of one ranker's training noise, at `bag` times the trees to score
    bag: int = 1


RETRIEVALS = ("auto", "exact", "ann")
USER_TOWERS = ("attention", "transformer")
RETRIEVAL_NEGATIVES = ("batch", "catalog")
KEEP_RULES = ("best", "best-fine-tuned")


@dataclass(frozen=True)
class CandidateConfig:
    text: int = 100  # nearest items to the user's interest vector
    covisit: int = 50  # items co-visited with the user's recent items
    popular: int = 50  # most popular recent items (also what a user without history gets)
    new: int = 30  # the newest items of the catalog (cold-start items get a chance on day one)
    fresh: int = 30  # the items created in the last fresh_days nearest to the user's interest vector
    fresh_days: float = 7.0
    popularity_days: int = 7
    exclude_seen: bool = True  # never recommend an item the user already clicked or bought
    retrieval: str = "auto"  # the text neighbours: "exact", "ann" (faiss IVF), or "auto" = ann from ann_min_items items on
    ann_min_items: int = 1_000_000  # where exact retrieval passes ~10 ms per user on one core
    ann_nprobe: int = 128  # inverted lists searched per user: recall@100 0.98 at 1M items, 10.6x faster than exact (RESULTS.md)


@dataclass(frozen=True)
class WindowConfig:
    ranker_days: float = 7.0  # the ranker learns from the window after the text model's (docs/ARCHITECTURE.md, "Time")
    # rolling cutoffs in that window: each is one set of queries (candidates and features as of it, labels
    # from the label_days after it); 1 = one cutoff at the window's start, labelled by the whole window
    ranker_cutoffs: int = 1
    label_days: float = 0.0  # 0 = ranker_days (one cutoff) or ranker_days / ranker_cutoffs (several)

    def cutoff_offsets(self) -> list[tuple[float, float]]:
        """(days after the window's start of each cutoff, its label days), evenly spread so the last label
        window ends with the ranker window (docs/ARCHITECTURE.md, "Time")."""
        count = self.ranker_cutoffs
        label = self.label_days or self.ranker_days / count
        step = (self.ranker_days - label) / (count - 1) if count > 1 else 0.0
        return [(k * step, label) for k in range(count)]


@dataclass(frozen=True)
class RetrainConfig:
    test_days: float = 1.0  # newest days held out from the challenger, on which it and the champion are compared
    tolerance: float = 0.01  # promote unless the challenger's NDCG@10 is more than this below the champion's
    precision: str = "fp32"  # export precision of the models compared and registered


@dataclass(frozen=True)
class EngineConfig:
    """Where `recsys score --engine ray` runs (README, "Running on a cluster"); defaults fit a laptop."""

    address: str = ""  # a Ray cluster ("ray://host:10001", "host:6379", "auto"); "" = $RAY_ADDRESS, else Ray in this process
    workers: int = 2  # scoring actors, each with its own ONNX Runtime sessions
    cpus_per_worker: int = 1  # Ray CPUs per actor, and its ONNX Runtime / LightGBM threads
    gpus_per_worker: float = 0.0  # > 0: actors run on GPU nodes, ONNX Runtime on CUDA
    batch_users: int = 2000  # users per block: one Parquet part, one unit of retry and resume
    # ≥ 2: `recsys train --engine ray` fits the ranker's final model with LightGBM's data-parallel learner on
    # this many Ray workers, queries sharded by user (for ranker frames too large for one machine); 0: on
    # the job's machine, byte for byte the local model (its cross-validation folds run on Ray either way)
    ranker_workers: int = 0
    object_store_mb: int = 0  # the object store of a Ray started in this process; 0 = Ray's default


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: tuple[TaskConfig, ...] = (TaskConfig("click", 1.0), TaskConfig("purchase", 1.0))
    train: TrainConfig = field(default_factory=TrainConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tasks"] = [dataclasses.asdict(t) for t in self.tasks]
        return _drop_none(data)

    def with_seed(self, seed: int | None) -> Config:
        """The same config with every random seed (text model, ranker) set to `seed`; unchanged for None."""
        return self if seed is None else self.replace(train={"seed": int(seed)}, ranker={"seed": int(seed)})

    def replace(self, **sections: Any) -> Config:
        """A copy with some fields of some sections changed: `cfg.replace(train={"epochs": 1})`."""
        data = self.to_dict()
        for name, values in sections.items():
            if name == "tasks":
                data["tasks"] = values
            else:
                data.setdefault(name, {}).update(values)
        return config_from_dict(data)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, found {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(known)})")
    values = {}
    for key, value in data.items():
        expected = known[key].type
        default = known[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: expected true/false, found {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigError(f"{where}.{key}: expected an integer, found {value!r}")
        if isinstance(default, float) and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
            raise ConfigError(f"{where}.{key}: expected a number, found {value!r}")
        if isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{where}.{key}: expected a string, found {value!r}")
        values[key] = float(value) if isinstance(default, float) else value
        del expected
    return cls(**values)


def config_from_dict(data: dict[str, Any]) -> Config:
    sections = {
        "model": ModelConfig,
        "train": TrainConfig,
        "ranker": RankerConfig,
        "candidates": CandidateConfig,
        "windows": WindowConfig,
        "retrain": RetrainConfig,
        "engine": EngineConfig,
    }
    for key in data:
        if key not in sections and key != "tasks":
            raise ConfigError(f"config: unknown section '{key}' (known: {', '.join([*sections, 'tasks'])})")
    built = {name: _build(cls, data.get(name, {}), name) for name, cls in sections.items()}
    tasks = Config().tasks
    if "tasks" in data:
        if not isinstance(data["tasks"], list) or not data["tasks"]:
            raise ConfigError("tasks: expected a non-empty array of tables ([[tasks]])")
        tasks = tuple(_build(TaskConfig, t, f"tasks[{i}]") for i, t in enumerate(data["tasks"]))
    names = [t.name for t in tasks]
    if "click" not in names or any(n not in ("click", "purchase") for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"tasks: expected 'click' and optionally 'purchase', each once; found {names}")
    cfg = Config(tasks=tasks, **built)
    _check(cfg)
    return cfg


def _check(cfg: Config) -> None:
    if cfg.train.keep not in KEEP_RULES:
        raise ConfigError(f"train.keep: expected one of {', '.join(map(repr, KEEP_RULES))}, found {cfg.train.keep!r}")
    if cfg.train.task_weighting not in ("fixed", "uncertainty"):
        raise ConfigError(f"train.task_weighting: expected 'fixed' or 'uncertainty', found {cfg.train.task_weighting!r}")
    for name, value in (
        ("model.max_length", cfg.model.max_length),
        ("model.dim", cfg.model.dim),
        ("model.history_length", cfg.model.history_length),
        ("train.epochs", cfg.train.epochs + 1),
    ):
        if value <= 0:
            raise ConfigError(f"{name}: must be positive, found {value}")
    if cfg.retrain.test_days <= 0 or cfg.retrain.tolerance < 0:
        raise ConfigError(
            f"retrain: test_days must be positive and tolerance not negative, found {cfg.retrain.test_days} and {cfg.retrain.tolerance}"
        )
    if cfg.retrain.precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"retrain.precision: expected 'fp32', 'fp16' or 'int8', found {cfg.retrain.precision!r}")
    if cfg.engine.workers < 1 or cfg.engine.cpus_per_worker < 1 or cfg.engine.batch_users < 1 or cfg.engine.gpus_per_worker < 0:
        raise ConfigError(
            "engine: workers, cpus_per_worker and batch_users must be at least 1 and gpus_per_worker not negative, found "
            f"{cfg.engine.workers}, {cfg.engine.cpus_per_worker}, {cfg.engine.batch_users}, {cfg.engine.gpus_per_worker}"
        )
    if cfg.ranker.bag < 1:
        raise ConfigError(f"ranker.bag: at least 1 (one ranker), found {cfg.ranker.bag}")
    if cfg.engine.ranker_workers < 0 or cfg.engine.ranker_workers == 1:
        raise ConfigError(f"engine.ranker_workers: 0 (the job's machine) or at least 2, found {cfg.engine.ranker_workers}")
    windows = cfg.windows
    if windows.ranker_days <= 0 or windows.ranker_cutoffs < 1 or not 0 <= windows.label_days <= windows.ranker_days:
        raise ConfigError(
            "windows: ranker_days must be positive, ranker_cutoffs at least 1 and label_days between 0 and ranker_days, found "
            f"{windows.ranker_days}, {windows.ranker_cutoffs}, {windows.label_days}"
        )
    if cfg.candidates.retrieval not in RETRIEVALS:
        raise ConfigError(f"candidates.retrieval: expected one of {', '.join(RETRIEVALS)}, found {cfg.candidates.retrieval!r}")
    if cfg.train.retrieval_negatives not in RETRIEVAL_NEGATIVES:
        raise ConfigError(
            f"train.retrieval_negatives: expected one of {', '.join(map(repr, RETRIEVAL_NEGATIVES))}, found {cfg.train.retrieval_negatives!r}"
        )
    if cfg.model.user_tower not in USER_TOWERS:
        raise ConfigError(f"model.user_tower: expected one of {', '.join(map(repr, USER_TOWERS))}, found {cfg.model.user_tower!r}")
    if cfg.model.user_layers < 1:
        raise ConfigError(f"model.user_layers: must be at least 1, found {cfg.model.user_layers}")
    if cfg.model.dim % cfg.model.heads:
        raise ConfigError(f"model.dim ({cfg.model.dim}) must be divisible by model.heads ({cfg.model.heads})")


def load_config(path: str | Path | None) -> Config:
    """Read a TOML config; `None` gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def dump_toml(cfg: Config) -> str:
    """Serialise a config as TOML (flat tables and an array of task tables; no extra dependency)."""
    lines: list[str] = []
    data = cfg.to_dict()
    for section, values in data.items():
        if section == "tasks":
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for task in data["tasks"]:
        lines.append("[[tasks]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in task.items()]
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
