"""The one training loop shared by every objective.

Each epoch: a seeded permutation, one `Objective.step` per batch, an evaluation (clean accuracy and
PGD robust accuracy on a fixed test subset) appended to a CSV log, and a resume state written
atomically. Every random draw is keyed by (seed, epoch, step) or by sample id, so training killed
at any point and started again with the same arguments ends with bit-identical weights on CPU.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.atomic import lock_file, remove_stale_temps, write_bytes, write_text
from harness.data.base import ImageDataset
from harness.environment import resolve_device
from harness.errors import CheckpointError, UsageError
from harness.faults import kill_point
from harness.models.checkpoint import CheckpointMeta, read_meta, save_checkpoint, sidecar_path, weights_path
from harness.registry import ATTACKS, OBJECTIVES
from harness.rng import stream_seed, torch_generator

from .augment import Augment, check_augment, default_augment
from .objective import Objective, StepState, TrainContext

STATE_SCHEMA = 1
SCHEDULES = ("cosine", "step", "piecewise", "constant")


@dataclass
class TrainConfig:
    """Optimisation settings; objective parameters live on the objective itself."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    # schedule="piecewise": the lr is lr * lr_factors[i] from epoch milestones[i] on (default factors 0.1^(i+1)).
    milestones: tuple[int, ...] = ()
    lr_factors: tuple[float, ...] = ()
    warmup_epochs: int = 0  # linear warm-up, per step, over the first epochs (any schedule)
    seed: int = 0
    device: str = "auto"
    eval_samples: int = 256
    eval_steps: int = 10
    progress: bool = True
    # Plain momentum, as the official repositories of the seed papers use; Nesterov stays an option.
    nesterov: bool = False
    # Data augmentation before the objective (defenses.augment); None: the dataset's default.
    augment: str | None = None
    augment_pad: int | None = None  # crop padding; None: round(H / 8)
    # Set by `harness train --recipe` (defenses.recipes): the recipe's name and the hash of its content.
    recipe: str | None = None
    recipe_hash: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not (self.lr > 0):
            raise UsageError("epochs, batch_size and lr must be positive")
        if self.augment is not None or self.augment_pad is not None:
            check_augment("none" if self.augment is None else self.augment, self.augment_pad)
        if not isinstance(self.nesterov, bool):
            raise UsageError(f"nesterov = {self.nesterov!r} is not a boolean", "use true or false")
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"unknown optimizer {self.optimizer!r}", "use 'sgd' or 'adam'")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}", f"use one of {', '.join(SCHEDULES)}")
        self._check_piecewise()

    def _check_piecewise(self) -> None:
        ms, fs = self.milestones, self.lr_factors
        if not isinstance(ms, (list, tuple)) or not all(isinstance(m, int) and not isinstance(m, bool) for m in ms):
            raise UsageError(f"milestones = {ms!r} is not a list of epochs", "e.g. [100, 150]")
        if not isinstance(fs, (list, tuple)) or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0 for f in fs
        ):
            raise UsageError(f"lr_factors = {fs!r} is not a list of positive numbers", "e.g. [0.1, 0.01]")
        self.milestones, self.lr_factors = tuple(ms), tuple(float(f) for f in fs)
        # A milestone past the last epoch is never reached (as in TRADES's own code); it is not an error,
        # so `--recipe X --epochs 5` shortens a recipe without editing its schedule.
        if any(not 1 <= m <= 1_000_000 for m in ms) or list(ms) != sorted(set(ms)):
            raise UsageError(f"milestones = {list(ms)} must be increasing epochs >= 1", "e.g. [100, 150]")
        if fs and len(fs) != len(ms):
            raise UsageError(f"lr_factors has {len(fs)} values for {len(ms)} milestones", "give one per milestone")
        if self.schedule == "piecewise" and not ms:
            raise UsageError("schedule 'piecewise' needs milestones", "e.g. milestones = [100, 150]")
        w = self.warmup_epochs
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 1_000_000:
            raise UsageError(f"warmup_epochs = {w!r} is not an integer >= 0", "e.g. 5")


@dataclass
class TrainResult:
    """A trained model, where its checkpoint is, and the per-epoch log."""

    model: nn.Module
    checkpoint: Path | None
    meta: CheckpointMeta
    log: list[dict[str, Any]] = field(default_factory=list)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov and cfg.momentum > 0,
    )


def make_schedule(
    opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps_per_epoch))


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of ``cfg.lr`` at optimiser step ``s`` (counted from 0)."""
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch
    factors = cfg.lr_factors or tuple(0.1 ** (i + 1) for i in range(len(cfg.milestones)))

    def base(s: int) -> float:
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        if cfg.schedule == "step":  # x0.1 at 50 % and 75 % of training (Madry/TRADES style)
            return 0.1 ** ((s >= total // 2) + (s >= 3 * total // 4))
        if cfg.schedule == "piecewise":
            k = sum(s // steps_per_epoch >= m for m in cfg.milestones)
            return factors[k - 1] if k else 1.0
        return 1.0

    return lambda s: base(s) * (min(1.0, (s + 1) / warm) if warm else 1.0)


def robust_eval(
    model: nn.Module, data: ImageDataset, eps: float, steps: int, seed: int, device: torch.device, norm: str = "linf"
) -> tuple[float, float]:
    """Clean and PGD-``steps`` robust accuracy on ``data`` (one batch at a time, eval mode)."""
    was = model.training
    model.eval()
    attack = ATTACKS.create("pgd", norm=norm, eps=eps, steps=steps, restarts=1, loss="ce")
    clean = robust = 0
    for s in range(0, len(data), 256):
        x, y = data.batch(slice(s, s + 256))
        x, y = x.to(device), y.to(device)
        ids = data.ids[s : s + 256].to(device)  # type: ignore[index]
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        xa = attack(model, x, y, index=ids, seed=seed)
        with torch.no_grad():
            rob = (model(xa).argmax(1) == y) & ok
        clean += int(ok.sum())
        robust += int(rob.sum())
    model.train(was)
    return clean / len(data), robust / len(data)


class Trainer:
    """Trains one model with one objective; resumable from ``<out>.state.pt``."""

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        train_data: ImageDataset,
        test_data: ImageDataset | None = None,
        config: TrainConfig | None = None,
        *,
        out: str | Path | None = None,
        arch: tuple[str, dict[str, Any]] | None = None,
        objective_name: str | None = None,
        condition: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        cfg = config or TrainConfig()
        if cfg.augment is None:  # resolved here, so the fingerprint and the sidecar name what was done
            cfg = dataclasses.replace(cfg, augment=default_augment(train_data.name))
        self.cfg = cfg
        self.augment = Augment(cfg.augment or "none", train_data.shape[1], cfg.augment_pad)
        self.overwrite = bool(overwrite)
        self.device = resolve_device(self.cfg.device)
        self.model = model.to(self.device)
        self.objective = objective
        self.objective_name = objective_name or getattr(type(objective), "registry_name", type(objective).__name__)
        self.train_data = train_data
        self.test_data = test_data
        self.out = Path(out) if out else None
        self.arch = arch
        self.condition = condition or {}
        self.extra = extra or {}
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.steps_per_epoch = math.ceil(len(train_data) / self.cfg.batch_size)
        self.schedule = make_schedule(self.optimizer, self.cfg, self.steps_per_epoch)
        self.log: list[dict[str, Any]] = []
        self.start_epoch = 0

    # ---- resume --------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path | None:
        return self.out.with_name(self.out.name + ".state.pt") if self.out else None

    def _fingerprint(self) -> str:
        return json.dumps(
            {
                "cfg": {k: v for k, v in dataclasses.asdict(self.cfg).items() if k != "progress"},
                "objective": self.objective_name,
                "params": self.objective.params(),
                "arch": self.arch,
                "data": self.train_data.content_hash(),
                "condition": self.condition,
            },
            sort_keys=True,
            default=str,
        )

    def _save_state(self, epoch: int) -> None:
        if not self.state_path:
            return
        buf = io.BytesIO()
        torch.save(
            {
                "schema": STATE_SCHEMA,
                "fingerprint": self._fingerprint(),
                "epoch": epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "objective": self.objective.state_dict(),
                "log": self.log,
                "torch_rng": torch.get_rng_state(),
            },
            buf,
        )
        write_bytes(self.state_path, buf.getvalue())

    def _try_resume(self) -> None:
        sp = self.state_path
        if not sp or not sp.is_file():
            return
        try:
            st = torch.load(sp, map_location=self.device, weights_only=True)
        except Exception:
            return
        if st.get("schema") != STATE_SCHEMA or st.get("fingerprint") != self._fingerprint():
            if self.overwrite:
                return  # start afresh; the first epoch's state replaces this one
            raise UsageError(
                f"{sp} belongs to a different training run (config, objective or data differ)",
                "pass --overwrite to start afresh there, or choose another --out",
            )
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.schedule.load_state_dict(st["schedule"])
        self.objective.load_state_dict(st["objective"])
        self.log = list(st["log"])
        if isinstance(st.get("torch_rng"), torch.Tensor):
            torch.set_rng_state(st["torch_rng"])
        self.start_epoch = int(st["epoch"]) + 1

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train (resuming from ``<out>.state.pt`` if present) under a lock on ``<out>.lock``."""
        if not self.out:
            return self._fit()
        lock = self.out.with_name(self.out.name + ".lock")
        with lock_file(lock, f"another process is training into {self.out}"):
            suffixes = (".state.pt", ".train.csv", ".safetensors", ".json")
            remove_stale_temps(self.out.parent, [self.out.name + x for x in suffixes])
            self._guard_existing()
            return self._fit()

    def _digest(self) -> str:
        """A short hash of the training fingerprint, kept in the sidecar to recognise the same training."""
        return hashlib.sha256(self._fingerprint().encode()).hexdigest()[:16]

    def _guard_existing(self) -> None:
        """Refuse to replace a checkpoint of another training at ``out`` unless ``overwrite``.

        Allowed without it: no checkpoint there yet; a checkpoint of this same training (same
        config, objective, parameters, architecture, data; retraining gives the same weights);
        or a resume state of this training (an interrupted run of this command, which is how an
        earlier ``--overwrite`` continues).
        """
        assert self.out is not None
        wp, sp = weights_path(self.out), sidecar_path(self.out)
        if self.overwrite or not (wp.exists() or sp.exists()):
            return
        try:
            old = read_meta(self.out)
        except CheckpointError:
            old = None
        if old is not None and old.train_config.get("fingerprint") == self._digest():
            return
        if self.state_path is not None and self.state_path.is_file():
            try:
                st = torch.load(self.state_path, map_location="cpu", weights_only=True)
            except Exception:  # an unreadable state is no evidence of this training
                st = {}
            if isinstance(st, dict) and st.get("fingerprint") == self._fingerprint():
                return
        what = "a checkpoint whose sidecar is unreadable"
        if old is not None:
            what = f"a checkpoint of objective {old.objective!r} ({old.architecture}, seed {old.seed})"
            if old.objective == self.objective_name:
                what += " trained with other settings"
        raise UsageError(
            f"{wp} already holds {what}; training {self.objective_name!r} there would replace it",
            "choose another --out, or pass --overwrite to replace it",
        )

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        ctx = TrainContext(
            model=self.model,
            train_data=self.train_data,
            num_classes=self.train_data.num_classes,
            class_counts=self.train_data.class_counts(),
            epochs=cfg.epochs,
            steps_per_epoch=self.steps_per_epoch,
            device=self.device,
            make_optimizer=lambda: make_optimizer(self.model, cfg),
            default_eps=dict(self.train_data.train_eps),
            extra=self.extra,
        )
        self.objective.setup(ctx)
        self._try_resume()
        eval_eps = self.train_data.train_eps.get("linf", 8 / 255)
        eval_set = None
        if self.test_data is not None and cfg.eval_samples > 0:
            eval_set = self.test_data.subset(slice(0, min(cfg.eval_samples, len(self.test_data))))
        x_all, y_all = self.train_data.batch(slice(None))
        x_all, y_all = x_all.to(self.device), y_all.to(self.device)
        ids_all = self.train_data.ids.to(self.device)  # type: ignore[union-attr]
        with _progress(cfg.progress, cfg.epochs, self.objective_name, self.start_epoch) as bar:
            for epoch in range(self.start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                torch.manual_seed(stream_seed(cfg.seed, "epoch", epoch))  # dropout etc., resume-exact
                perm = torch.randperm(len(y_all), generator=torch_generator(cfg.seed, "perm", epoch)).to(self.device)
                sums: dict[str, torch.Tensor] = {}
                self.model.train()
                for step in range(self.steps_per_epoch):
                    rows = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                    key = stream_seed(cfg.seed, "step", epoch, step)
                    state = StepState(
                        epoch,
                        step,
                        cfg.epochs,
                        ids_all[rows],
                        key,
                        torch_generator(key, device=self.device),
                        self.train_data.num_classes,
                    )
                    xb = self.augment(x_all[rows], state.index, cfg.seed, epoch)  # before the objective's own
                    info = self.objective.step(self.model, xb, y_all[rows], self.optimizer, state)
                    self.schedule.step()
                    kill_point("train:step")
                    for k, v in info.items():
                        v = v.detach().float().mean() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                        sums[k] = sums.get(k, 0) + v
                row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
                row.update({k: float(v) / self.steps_per_epoch for k, v in sums.items()})
                if not all(math.isfinite(v) for k, v in row.items() if isinstance(v, float)):
                    raise UsageError(
                        f"training diverged at epoch {epoch + 1} (non-finite loss)",
                        "lower --lr or check the objective's parameters",
                    )
                # The float() above waited for the device, so this times the epoch's training work.
                images_per_s = len(y_all) / max(time.perf_counter() - t0, 1e-9)
                if eval_set is not None:
                    clean, robust = robust_eval(
                        self.model, eval_set, eval_eps, cfg.eval_steps, stream_seed(cfg.seed, "eval"), self.device
                    )
                    row.update(test_clean=clean, test_pgd=robust, eval_eps=eval_eps)
                row["seconds"] = time.perf_counter() - t0
                self.log.append(row)
                self._write_log()
                self._save_state(epoch)
                kill_point("train:epoch")
                bar(row, images_per_s)
        self.model.eval()
        return self._finish()

    def _write_log(self) -> None:
        if not self.out:
            return
        keys: list[str] = []
        for r in self.log:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.log)
        write_text(self.out.with_name(self.out.name + ".train.csv"), buf.getvalue())

    def _finish(self) -> TrainResult:
        arch_name, arch_args = self.arch or ("unknown", {})
        last = self.log[-1] if self.log else {}
        meta = CheckpointMeta(
            architecture=arch_name,
            arch_args=arch_args,
            dataset=self.train_data.name,
            num_classes=self.train_data.num_classes,
            input_shape=list(self.train_data.shape),
            objective=self.objective_name,
            objective_params=_jsonable(self.objective.params()),
            condition=self.condition,
            seed=self.cfg.seed,
            clean_accuracy=last.get("test_clean"),
            train_config={
                **{k: v for k, v in dataclasses.asdict(self.cfg).items() if k != "progress"},
                "augmentation": self.augment.record(),
                "score_to_prob": self.objective.score_to_prob(),
                "fingerprint": self._digest(),
            },
        )
        path = None
        if self.out:
            path = save_checkpoint(self.out, self.model, meta)
            if self.state_path and self.state_path.exists():
                self.state_path.unlink()
        return TrainResult(self.model, path, meta, self.log)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


class _progress:
    """A rich progress bar over epochs showing the latest loss and accuracies."""

    def __init__(self, enabled: bool, epochs: int, label: str, start: int) -> None:
        self.enabled, self.epochs, self.label, self.start = enabled, epochs, label, start

    def __enter__(self):
        if not self.enabled:
            return lambda row, images_per_s: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.prog = Progress(
            TextColumn("[bold]train {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
        )
        self.prog.__enter__()
        self.task = self.prog.add_task(self.label, total=self.epochs, completed=self.start, status="")

        def advance(row: dict[str, Any], images_per_s: float) -> None:
            status = f"{images_per_s:,.0f} img/s  loss {row.get('loss', float('nan')):.3f}"
            if "test_clean" in row:
                status += f"  clean {100 * row['test_clean']:.1f}%  pgd {100 * row['test_pgd']:.1f}%"
            self.prog.update(self.task, advance=1, status=status)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.prog.__exit__(*exc)  # type: ignore[arg-type]


def train(
    objective: str | Objective = "ce",
    model: str | nn.Module = "cnn",
    train_data: ImageDataset | None = None,
    test_data: ImageDataset | None = None,
    *,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    objective_params: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    condition: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``model`` (an architecture name or module) with ``objective`` on ``train_data``.

    An existing checkpoint at ``out`` of another training is replaced only with ``overwrite``.
    """
    from harness.models import create_model

    cfg = config or TrainConfig()
    if train_data is None:
        raise UsageError("train() needs train_data")
    obj = OBJECTIVES.create(objective, **(objective_params or {})) if isinstance(objective, str) else objective
    arch = None
    if isinstance(model, str):
        torch.manual_seed(stream_seed(cfg.seed, "init"))
        args = dict(model_args or {})
        net = create_model(model, train_data, **args)
        arch = (model, _arch_args(model, train_data, args))
    else:
        net = model
    return Trainer(
        net,
        obj,
        train_data,
        test_data,
        cfg,
        out=out,
        arch=arch,
        objective_name=objective if isinstance(objective, str) else None,
        condition=condition,
        overwrite=overwrite,
    ).fit()


def _arch_args(name: str, data: ImageDataset, args: dict[str, Any]) -> dict[str, Any]:
    from harness.registry import MODELS

    params = MODELS.get(name).parameters()
    c, h, _ = data.shape
    full = dict(args)
    for key, value in (("num_classes", data.num_classes), ("in_channels", c), ("input_size", h)):
        if key in params:
            full.setdefault(key, value)
    return _jsonable(full)
