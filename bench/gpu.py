"""The GPU rows of issue 23 in one run: AutoAttack side by side, the bf16 gate, one rank vs one process,
CERTIFY and corruption throughput; under a time budget, writing one JSON file and printing a table.

Run through ``bench/gpu.sh`` (it installs the carried wheels first). Parts run in order of value; before
each one the script estimates its cost from bare forward/backward timings of the model (and, once a
backend has run, from what that backend really took), and records ``skipped: time budget`` when the
estimate does not fit in what is left of ``--budget-s``. A part whose package is missing is recorded
``not available: ...``; a part that raises is recorded ``failed: ...`` and the rest still run. The JSON
is rewritten after every part, so a run killed at its limit keeps what it finished.

    bench/gpu.sh                              # CUDA: PreActResNet-18 and WRN-28-10, 500 images, 420 s
    bench/gpu.sh --device cpu --tiny          # the same code paths on CPU in well under a minute
    bench/gpu.sh --parts aa:wrn-28-10:native,aa:wrn-28-10:pyautoattack --budget-s 500   # a second run

Models (full profile): PreActResNet-18 and WRN-28-10 built by the harness, briefly fitted with the
harness's ``ce`` objective (``--epochs``, default 5, seed 0) on digits upsampled to 3x32x32
(CIFAR-shaped; the 539-image test split supplies the 500 evaluation images), evaluated at the L-inf eps
where PGD-20 leaves about half robust (bisection on the first 100 images), so that every AutoAttack
stage has work. The tiny profile uses the digits ``cnn`` and a WRN-10-1 at 8x8 with small budgets.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
# The repository root first and this folder last: bench/attacks.py is named like the `attacks` package.
sys.path = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (BENCH, ROOT)] + [str(BENCH)]

import torch  # noqa: E402


def _load(name: str, file: str) -> Any:
    """A sibling bench script as a module under another name (bench/attacks.py would shadow `attacks`)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


aa_bench = _load("bench_attacks", "attacks.py")
scale_bench = _load("bench_scale", "scale.py")
STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
# The backends of the AutoAttack comparison (names as in bench/attacks.py); torchattacks at the reference 100 steps.
AA_BACKENDS = ("native", "pyautoattack", "native-bf16", "torchattacks")
NEEDS = {"pyautoattack": ("pyautoattack", "autoattack"), "torchattacks": ("torchattacks",)}
# Wall seconds per second of bare passes assumed before any run measured it (1 / efficiency).
PRIOR_FACTOR = 2.0
BF16_GATE_PP = 0.2
SPEEDUP_GOAL = 1.5
EFFICIENCY_GOAL = 0.9
CORRUPTION_SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark architecture: a label for the tables, the registry name and its arguments."""

    key: str
    label: str
    arch: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """Sizes of one run: the full GPU profile, or the tiny CPU one that exercises the same code."""

    name: str
    data: str
    n: int
    models: tuple[ModelSpec, ...]
    epochs: int
    eps_n: int
    eps_iters: int
    budgets: dict[str, dict[str, int]]  # stage -> budget overrides (empty: reference budgets)
    rank_steps: int
    certify_n: int
    certify_images: int
    corrupt_ours: int
    corrupt_ref: int


FULL = Profile(
    name="full",
    data="digits:size=32,channels=3",
    n=500,
    models=(
        ModelSpec("preact-resnet18", "PreActResNet-18", "preact-resnet18"),
        ModelSpec("wrn-28-10", "WRN-28-10", "wrn", {"depth": 28, "widen": 10}),
    ),
    epochs=5,
    eps_n=100,
    eps_iters=7,
    budgets={},
    rank_steps=50,
    certify_n=100_000,
    certify_images=8,
    corrupt_ours=500,
    corrupt_ref=8,
)
TINY = Profile(
    name="tiny",
    data="digits:size=8,channels=3",
    n=12,
    models=(
        ModelSpec("preact-resnet18", "PreActResNet-18 (tiny: digits cnn)", "cnn"),
        ModelSpec("wrn-28-10", "WRN-28-10 (tiny: WRN-10-1)", "wrn", {"depth": 10, "widen": 1}),
    ),
    epochs=2,
    eps_n=12,
    eps_iters=3,
    budgets={"apgd-t": {"n_target_classes": 1}, "fab-t": {"n_target_classes": 1}, "square": {"n_queries": 20}},
    rank_steps=5,
    certify_n=500,
    certify_images=2,
    corrupt_ours=4,
    corrupt_ref=1,
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def version_of(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def missing_package(backend: str) -> str | None:
    """Why ``backend`` cannot run here (its package is not importable), or None."""
    need = NEEDS.get(backend.removesuffix("-bf16"), ())
    if need and not any(importlib.util.find_spec(m) for m in need):
        return f"not available: {need[0]} is not installed (bench/gpu.sh --fetch, then carry bench/wheels)"
    return None


@dataclass
class Prepared:
    """A benchmark model ready for the AutoAttack parts: weights, eps, bare pass timings."""

    spec: ModelSpec
    model: torch.nn.Module
    checkpoint: Path
    eps: float
    pgd20_robust: float
    clean: float
    costs: Any  # bench_attacks.PassCosts, fp32
    info: dict[str, Any]
    bf16_costs: Any = None


class Bench:
    """Runs the parts in order under the time budget; keeps the JSON document and rewrites it after each part."""

    def __init__(self, args: argparse.Namespace, profile: Profile) -> None:
        self.args, self.p = args, profile
        self.device = torch.device(args.device)
        self.t0 = time.perf_counter()
        self.budget = float(args.budget_s)
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.out = Path(args.out)
        self.probes: dict[str, dict[str, Any]] = {}  # model key -> random-init pass timings
        self.prepared: dict[str, Prepared] = {}
        self.factor: dict[tuple[str, str], float] = {}  # (model, backend) -> wall s per s of fp32 bare passes
        self.aa: dict[str, dict[str, dict[str, Any]]] = {}  # model key -> backend -> run
        self.doc: dict[str, Any] = {}
        self.data: Any = None

    # ---- bookkeeping ------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()

    def write(self) -> None:
        self.doc["elapsed_s"] = round(self.elapsed(), 2)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1) + "\n")
        os.replace(tmp, self.out)

    def dataset(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.data is None:
            from harness import api

            ds = api.load_dataset(self.p.data)
            x, y = ds.batch(slice(0, self.p.n))
            self.data = (x.to(self.device), y.to(self.device), ds.ids[: self.p.n].to(self.device))
        return self.data

    # ---- models -----------------------------------------------------------------------------------------
    def probe(self, spec: ModelSpec) -> dict[str, Any]:
        """Bare fwd+bwd / fwd seconds per image, timed once per architecture on a random-init copy.

        The cost of these dense networks does not depend on their weights, so the same timings price the
        passes of the trained model (efficiencies) and the estimates made before it exists.
        """
        if spec.key not in self.probes:
            from harness.registry import MODELS

            x, y, _ = self.dataset()
            torch.manual_seed(0)
            m = MODELS.create(spec.arch, num_classes=10, in_channels=x.shape[1], input_size=x.shape[-1], **spec.args)
            m = m.to(self.device).eval()
            t = time.perf_counter()
            costs = aa_bench.PassCosts(m, x, y, reps=3)
            fb, f = costs.per_image()
            probe_s = time.perf_counter() - t
            self.probes[spec.key] = {"fwd_bwd_s_per_image": fb, "fwd_s_per_image": f, "probe_s": probe_s}
            self.probes[spec.key]["costs"] = costs
            del m
        return self.probes[spec.key]

    def prepare_estimate(self, spec: ModelSpec) -> float:
        if spec.key in self.prepared:
            return 0.0
        pr = self.probe(spec)
        n_train = 1258  # digits train split
        train = self.p.epochs * n_train * 3 * pr["fwd_bwd_s_per_image"]
        bisect = self.p.eps_iters * 21 * self.p.eps_n * pr["fwd_bwd_s_per_image"]
        return PRIOR_FACTOR * (train + bisect) + 5.0

    def prepare(self, spec: ModelSpec) -> Prepared:
        if spec.key in self.prepared:
            return self.prepared[spec.key]
        from harness import api
        from harness.models.checkpoint import load_checkpoint, weights_path

        x, y, ids = self.dataset()
        t = time.perf_counter()
        safe = re.sub(r"[^A-Za-z0-9.-]+", "_", f"ce-{spec.key}-{spec.arch}-{self.p.data}-e{self.p.epochs}")
        stem = self.work / "models" / safe
        ckpt = weights_path(stem)
        if not ckpt.is_file():  # trained once per work folder; no end-of-training robust evaluation
            api.train(
                "ce", spec.arch, self.p.data, out=stem, model_args=spec.args or None, epochs=self.p.epochs, seed=0,
                device=str(self.device), progress=False, eval_samples=0,
            )  # fmt: skip
        train_s = time.perf_counter() - t
        model = load_checkpoint(ckpt)[0].to(self.device).eval()
        t = time.perf_counter()
        k = self.p.eps_n
        eps, pgd = aa_bench.find_eps(model, x[:k], y[:k], ids[:k], iters=self.p.eps_iters)
        eps_s = time.perf_counter() - t
        costs = self.probe(spec)["costs"]
        clean = aa_bench.robust_flags(model, x, y).float().mean().item()
        info = {
            "label": spec.label,
            "arch": spec.arch,
            "model_args": spec.args,
            "weights": f"harness `ce`, {self.p.epochs} epochs, seed 0, on {self.p.data} (train split)",
            "checkpoint": ckpt.name,
            "train_s": round(train_s, 2),
            "eps_search_s": round(eps_s, 2),
            "pass_timing_s": round(self.probes[spec.key]["probe_s"], 2),
            "pass_timing": "bare passes of a random-init copy (median of 3 per batch size)",
            "clean_acc": round(clean, 4),
            "eps_linf": eps,
            "pgd20_robust_acc_on_eps_images": round(pgd, 4),
            "pass_seconds_by_batch": {"sizes": costs.sizes, "fwd_bwd": costs.fb, "fwd": costs.f},
        }
        self.doc["models"][spec.key] = info
        self.prepared[spec.key] = Prepared(spec, model, ckpt, eps, pgd, clean, costs, info)
        return self.prepared[spec.key]

    # ---- the AutoAttack parts ---------------------------------------------------------------------------
    def predicted_bare_s(self, spec: ModelSpec) -> float:
        """Seconds of bare passes AutoAttack standard should ask for (about half the points robust after APGD-CE)."""
        pr = self.probe(spec)
        b = self.p.budgets
        t_apgd = b.get("apgd-t", {}).get("n_target_classes", 9)
        t_fab = b.get("fab-t", {}).get("n_target_classes", 9)
        q = b.get("square", {}).get("n_queries", 5000)
        r = self.prepared[spec.key].pgd20_robust if spec.key in self.prepared else 0.5
        n = self.p.n
        fb = n * 100 + r * n * (t_apgd + t_fab) * 100
        f = r * n * (q + 2 * t_fab * 100)
        return fb * pr["fwd_bwd_s_per_image"] + f * pr["fwd_s_per_image"]

    def backend_prior(self, backend: str) -> float:
        """Cost of ``backend`` relative to native fp32 before any run measured it."""
        if backend == "native-bf16":
            return 1.0 if self.device.type == "cuda" else 12.0  # CPUs without bf16 instructions emulate it
        return 1.0 if backend == "native" else 1.5

    def aa_estimate(self, spec: ModelSpec, backend: str) -> float:
        """Predicted bare-pass seconds times the measured (else assumed) wall seconds per bare-pass second."""
        f, key = self.factor, spec.key
        if (key, backend) in f:
            factor = f[key, backend]
        else:
            native = f.get((key, "native"), PRIOR_FACTOR)
            other = [f[k, backend] / f[k, "native"] for k, b in f if b == backend and (k, "native") in f]
            factor = native * (other[0] if other else self.backend_prior(backend))
        return self.predicted_bare_s(spec) * factor + self.prepare_estimate(spec)

    def aa_run(self, spec: ModelSpec, backend: str) -> dict[str, Any]:
        prep = self.prepare(spec)
        x, y, ids = self.dataset()
        costs = prep.costs
        if backend == "native-bf16":
            from harness.precision import SearchModel

            if prep.bf16_costs is None:
                prep.bf16_costs = aa_bench.PassCosts(SearchModel(prep.model, "bf16"), x, y)
                prep.info["bf16_pass_seconds_by_batch"] = {
                    "sizes": prep.bf16_costs.sizes,
                    "fwd_bwd": prep.bf16_costs.fb,
                    "fwd": prep.bf16_costs.f,
                }
            costs = prep.bf16_costs
        r = aa_bench.run_backend(backend, prep.model, x, y, ids, prep.eps, list(STAGES), costs, self.p.budgets)
        ideal = sum(s["efficiency"] * s["wall_s"] for s in r["stages"] if s["efficiency"])
        if backend == "native-bf16":  # priced in fp32 passes, as the estimates are
            ideal *= prep.costs.per_image()[0] / prep.bf16_costs.per_image()[0]
        if ideal > 0:  # wall seconds per second of fp32 bare passes, for the next estimates
            self.factor[spec.key, backend] = r["wall_s"] / ideal
        self.aa.setdefault(spec.key, {})[backend] = r
        out = {
            "wall_s": round(r["wall_s"], 3),
            "robust_acc": round(r["robust"].float().mean().item(), 4),
            "budgets": "reference" if not self.p.budgets else self.p.budgets,
            "efficiency_against": "bf16 bare passes" if backend == "native-bf16" else "fp32 bare passes",
            "stages": r["stages"],
        }
        if backend == "torchattacks":
            out["note"] = "torchattacks at the reference 100 steps for APGD/APGD-T/FAB (its default is 10)"
        out.update(self.agreement(spec.key, backend))
        return out

    def agreement(self, key: str, backend: str) -> dict[str, Any]:
        runs = self.aa.get(key, {})
        me = runs[backend]["robust"]
        out: dict[str, Any] = {}
        for ref in ("native", "pyautoattack"):
            if ref != backend and ref in runs:
                out[f"agreement_vs_{ref}"] = round((me == runs[ref]["robust"]).float().mean().item(), 4)
        return out

    # ---- one rank vs one process ------------------------------------------------------------------------
    def rank_estimate(self) -> float:
        spec = self.p.models[0]
        pr = self.probe(spec)
        startup = 25.0 if self.device.type == "cuda" else 12.0
        work = self.p.n * (1 + self.p.rank_steps) * pr["fwd_bwd_s_per_image"] * PRIOR_FACTOR
        return startup + 2 * work + self.prepare_estimate(spec)  # one torchrun job, one run in this process

    def rank_run(self) -> dict[str, Any]:
        """The same evaluation in this process and as rank 0 of a one-rank torchrun job; records compared."""
        from harness import api

        prep = self.prepare(self.p.models[0])
        suite = self.work / "rank-suite.toml"
        suite.write_text(
            'summary = "bench/gpu.py: FGSM then PGD (CE) at the benchmark eps"\n'
            f'[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = {prep.eps}\n'
            f'[[attack]]\nname = "pgd"\nnorm = "linf"\neps = {prep.eps}\nparams = {{ steps = {self.p.rank_steps} }}\n'
        )
        runs = self.work / "rank-runs"
        dev = "cuda" if self.device.type == "cuda" else "cpu"
        out: dict[str, Any] = {"suite": suite.read_text(), "model": prep.spec.label, "images": self.p.n}
        # The single process with the ranks' one CPU thread (a rank of --nproc gets OMP_NUM_THREADS=1).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        t = time.perf_counter()
        try:
            res = api.evaluate(str(prep.checkpoint), self.p.data, str(suite), out=runs, name="single", device=dev,
                               max_samples=self.p.n, progress=False, overwrite=True).to_dict()  # fmt: skip
        finally:
            torch.set_num_threads(threads)
        out["single"] = {"command_s": round(time.perf_counter() - t, 2), **summary(res)}
        cmd = [sys.executable, "-m", "harness", "evaluate", str(prep.checkpoint), "--suite", str(suite)]
        cmd += ["--dataset", self.p.data, "--out", str(runs), "--device", dev, "--max-samples", str(self.p.n)]
        cmd += ["--no-progress", "--overwrite", "--name", "rank1", "--nproc", "1"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        t = time.perf_counter()
        p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"--nproc 1: exit {p.returncode}: {(p.stderr or p.stdout).strip()[-600:]}")
        res = json.loads((runs / "rank1" / "result.json").read_text())
        out["rank1"] = {"command_s": round(time.perf_counter() - t, 2), **summary(res)}
        dist = out["rank1"]["distributed"]
        out["process_group"] = (
            dist["backend"]
            if dist
            else "none: with world size 1 the harness runs the rank as a single process "
            "(no process group, so no NCCL/gloo call); torchrun's launch and environment are what this exercises"
        )
        out["identical_records"] = scale_bench.same_record(runs / "single", runs / "rank1")
        return out

    # ---- CERTIFY throughput -----------------------------------------------------------------------------
    def certify_estimate(self) -> float:
        spec = self.p.models[0]
        pr = self.probe(spec)
        k, n = self.p.certify_images, self.p.certify_n
        return k * (n + 100) * pr["fwd_s_per_image"] * PRIOR_FACTOR + self.prepare_estimate(spec) + 2.0

    def certify_run(self) -> dict[str, Any]:
        from attacks.smoothing import BLOCK
        from harness.registry import CERTIFIERS

        prep = self.prepare(self.p.models[0])
        x, y, ids = self.dataset()
        k = self.p.certify_images
        cert = CERTIFIERS.create("smoothing-l2", sigma=0.25, n0=100, n=self.p.certify_n, alpha=0.001, radii=[0.0])
        cert.run(prep.model, x[:1], y[:1], index=ids[:1], seed=1, num_classes=10)  # warm-up (kernels, allocator)
        sync(self.device)
        t = time.perf_counter()
        res = cert.run(prep.model, x[:k], y[:k], index=ids[:k], seed=0, num_classes=10)
        sync(self.device)
        wall = time.perf_counter() - t
        batch = min(k, max(1, cert.max_images // BLOCK)) * BLOCK  # noisy images per forward, as counts() batches them
        bare = aa_bench.PassCosts._time(lambda: aa_bench.PassCosts._f(prep.model, x[:1].expand(batch, -1, -1, -1)),
                                        self.device, 3)  # fmt: skip
        forwards = k * (cert.n0 + cert.n)
        return {
            "model": prep.spec.label,
            "images": k,
            "n0": cert.n0,
            "n": cert.n,
            "sigma": cert.sigma,
            "max_images_per_forward": cert.max_images,
            "wall_s": round(wall, 3),
            "images_per_s": round(k / wall, 4),
            "noisy_forwards_per_s": round(forwards / wall, 1),
            "bare_forwards_per_s": round(batch / bare, 1),
            "efficiency": round(forwards / wall / (batch / bare), 3),
            "abstained": int((res["pred"] < 0).sum()),
        }

    # ---- corruption throughput --------------------------------------------------------------------------
    def corruptions_estimate(self) -> float:
        per = 0.002 if self.device.type == "cuda" else 0.003
        return 95 * (self.p.corrupt_ref * 0.02 + self.p.corrupt_ours * per) + 3.0

    def corruptions_run(self) -> dict[str, Any]:
        from harness.registry import CORRUPTIONS
        from tests.attacks.corruption_oracle import coloured_digits, shimmed_imagecorruptions

        n, m = self.p.corrupt_ours, self.p.corrupt_ref
        imgs, _ = coloured_digits(max(n, m), seed=0)
        x = (torch.from_numpy(imgs[:n]).permute(0, 3, 1, 2).float() / 255).to(self.device)
        ids = torch.arange(n, device=self.device)
        names = CORRUPTIONS.names()
        for name in names:  # warm-up: imports, first-call and kernel-compile costs are not generation time
            with contextlib.suppress(Exception):  # a corruption that fails is recorded below
                CORRUPTIONS.create(name, severity=3, preset="imagenet", scale=1.0)(x[:2], index=ids[:2], seed=0)
        rows: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        for name in names:
            try:
                sync(self.device)
                t = time.perf_counter()
                for s in CORRUPTION_SEVERITIES:
                    CORRUPTIONS.create(name, severity=s, preset="imagenet", scale=1.0)(x, index=ids, seed=s)
                sync(self.device)
                rows[name] = {"ours_s": time.perf_counter() - t}
            except Exception as e:  # recorded per corruption; the others are still timed
                failed[name] = f"{type(e).__name__}: {str(e)[:200]}"
        names = [k for k in names if k in rows]
        ours = sum(r["ours_s"] for r in rows.values())
        out: dict[str, Any] = {
            "size": [32, 32, 3],
            "corruptions": len(names),
            "severities": len(CORRUPTION_SEVERITIES),
            "parameters": "preset imagenet, scale 1 (imagecorruptions' table) for both",
            "ours_device": str(self.device),
            "ours_images": n,
            "ours_s": round(ours, 3),
            "ours_failed": failed,
            "ours_images_per_s": round(n * len(names) * len(CORRUPTION_SEVERITIES) / ours, 1),
        }
        why = None if importlib.util.find_spec("imagecorruptions") else "not available: imagecorruptions"
        if why is None:
            try:
                import imagecorruptions
                import numpy as np

                np.random.seed(0)
                with shimmed_imagecorruptions():
                    for name in names:
                        t = time.perf_counter()
                        for s in CORRUPTION_SEVERITIES:
                            for im in imgs[:m]:
                                imagecorruptions.corrupt(im, corruption_name=name, severity=s)
                        rows[name]["imagecorruptions_s"] = time.perf_counter() - t
            except Exception as e:  # an import-time or numpy-2 incompatibility: the reference is not usable here
                why = f"not available: imagecorruptions failed: {type(e).__name__}: {e}"
        if why is None:
            ref = sum(r["imagecorruptions_s"] for r in rows.values())
            ref_rate = m * len(names) * len(CORRUPTION_SEVERITIES) / ref
            out |= {
                "imagecorruptions_device": "cpu, image by image",
                "imagecorruptions_images": m,
                "imagecorruptions_s": round(ref, 3),
                "imagecorruptions_images_per_s": round(ref_rate, 1),
                "speedup": round(out["ours_images_per_s"] / ref_rate, 2),
            }
        else:
            out["imagecorruptions"] = why
        out["rows"] = {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in rows.items()}
        return out

    # ---- the plan -----------------------------------------------------------------------------------------
    def plan(self) -> list[tuple[str, Callable[[], float], Callable[[], dict[str, Any]], str | None]]:
        """(name, estimate, run, why-not) by value: the first model's goals, the cheap GPU rows, then the rest."""
        first, *rest = self.p.models
        aa = lambda spec, b: (
            f"aa:{spec.key}:{b}",
            lambda: self.aa_estimate(spec, b),
            lambda: self.aa_run(spec, b),
            missing_package(b),
        )
        parts = [aa(first, b) for b in ("native", "pyautoattack", "native-bf16")]
        parts += [
            ("rank", self.rank_estimate, self.rank_run, None),
            ("certify", self.certify_estimate, self.certify_run, None),
            ("corruptions", self.corruptions_estimate, self.corruptions_run, None),
        ]
        for spec in rest:
            parts += [aa(spec, b) for b in ("native", "pyautoattack", "native-bf16")]
        parts += [aa(spec, "torchattacks") for spec in self.p.models]
        return parts

    def run(self) -> None:
        a = self.args
        wanted = set(a.parts.split(",")) if a.parts else None
        self.doc = {
            "schema": "bench-gpu/1",
            "command": " ".join(sys.argv),
            "profile": self.p.name,
            "device": device_name(self.device),
            "budget_s": self.budget,
            "environment": environment(self.device),
            "data": f"{self.p.data}, first {self.p.n} test images",
            "weights": "briefly fitted (harness `ce` objective, seed 0), not random-init; see models",
            "goals": {},
            "models": {},
            "parts": [],
        }
        plan = self.plan()
        if wanted:
            unknown = wanted - {name for name, *_ in plan}
            if unknown:
                raise SystemExit(f"error: unknown part(s) {sorted(unknown)}; parts: {', '.join(n for n, *_ in plan)}")
        for name, estimate, run, why in plan:
            row: dict[str, Any] = {"part": name}
            self.doc["parts"].append(row)
            if wanted is not None and name not in wanted:
                row["status"] = "skipped: not requested (--parts)"
                continue
            if why is not None:
                row["status"] = why
                continue
            if self.left() <= 0:
                row |= {"status": "skipped: time budget", "estimate_s": None, "left_s": round(self.left(), 1)}
                print(f"[{self.elapsed():6.1f} s] {name}: skipped (time budget spent)", flush=True)
                self.write()
                continue
            try:
                est = estimate()
            except Exception as e:
                row["status"] = f"failed: while estimating: {type(e).__name__}: {e}"
                traceback.print_exc()
                self.write()
                continue
            row["estimate_s"] = round(est, 1)
            if est > self.left():
                row |= {"status": "skipped: time budget", "left_s": round(self.left(), 1)}
                print(f"[{self.elapsed():6.1f} s] {name}: skipped (estimate {est:.0f} s > {self.left():.0f} s left)")
                self.write()
                continue
            print(f"[{self.elapsed():6.1f} s] {name}: running (estimate {est:.1f} s)", flush=True)
            t = time.perf_counter()
            try:
                row["result"] = run()
                row["status"] = "ran"
            except Exception as e:
                row["status"] = f"failed: {type(e).__name__}: {str(e)[:500]}"
                traceback.print_exc()
            row["wall_s"] = round(time.perf_counter() - t, 2)
            print(f"[{self.elapsed():6.1f} s] {name}: {row['status']} in {row['wall_s']} s", flush=True)
            self.doc["goals"] = self.goals()
            self.write()
        self.doc["goals"] = self.goals()
        self.write()

    def goals(self) -> dict[str, Any]:
        """The issue's GPU goals from whatever ran: bf16 gate, speed-up over pyautoattack, stage efficiency."""
        out: dict[str, Any] = {}
        for key, runs in self.aa.items():
            g: dict[str, Any] = {}
            if "native" in runs and "native-bf16" in runs:
                fp, bf = runs["native"]["robust"], runs["native-bf16"]["robust"]
                delta = 100 * (bf.float().mean() - fp.float().mean()).item()
                g["bf16_gate"] = {
                    "delta_pp": round(delta, 2),
                    "limit_pp": BF16_GATE_PP,
                    "pass": abs(delta) <= BF16_GATE_PP + 1e-9,
                    "per_sample_agreement": round((fp == bf).float().mean().item(), 4),
                }
            else:
                g["bf16_gate"] = "not measured"
            if "native" in runs and "pyautoattack" in runs:
                nat, ref = runs["native"], runs["pyautoattack"]
                speed = ref["wall_s"] / nat["wall_s"] if nat["wall_s"] else None
                delta = 100 * (nat["robust"].float().mean() - ref["robust"].float().mean()).item()
                g["native_vs_pyautoattack"] = {
                    "speedup": round(speed, 3) if speed else None,
                    "goal": SPEEDUP_GOAL,
                    "delta_pp": round(delta, 2),
                    "pass": bool(speed and speed >= SPEEDUP_GOAL and abs(delta) <= BF16_GATE_PP + 1e-9),
                }
            else:
                g["native_vs_pyautoattack"] = "not measured"
            if "native" in runs:
                effs = {s["stage"]: s["efficiency"] for s in runs["native"]["stages"] if s["efficiency"] is not None}
                g["native_stage_efficiency"] = {
                    "by_stage": effs,
                    "goal": EFFICIENCY_GOAL,
                    "pass": bool(effs) and min(effs.values()) >= EFFICIENCY_GOAL,
                }
            out[key] = g
        return out


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the rank comparison keeps of a result.json: timings, the process group, accuracies."""
    return {
        "evaluation_s": round(result["timing"]["wall_s"], 3),
        "distributed": result.get("extra", {}).get("distributed"),
        "clean": result["clean"]["accuracy"],
        "robust": [g["accuracy"]["accuracy"] for g in result["groups"]],
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "packages": {
            d: version_of(d) or "not installed"
            for d in ("pyautoattack", "torchattacks", "robustbench", "imagecorruptions", "setuptools", "numpy")
        },
    }
    if device.type == "cuda":
        env |= {
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        }
    return env


def default_out(device: torch.device) -> Path:
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", device_name(device) if device.type == "cuda" else "cpu").strip("-").lower()
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"
    return folder / f"gpu-{tag}.json"


def table(doc: dict[str, Any]) -> str:
    """The printed summary: one line per part, then the goals."""
    lines = [f"device: {doc['device']}   profile: {doc['profile']}   elapsed {doc['elapsed_s']} s of {doc['budget_s']}"]
    lines.append(f"{'part':34s} {'status':34s} {'wall s':>8s} {'est s':>8s}  result")
    for row in doc["parts"]:
        r = row.get("result") or {}
        if row["part"].startswith("aa:"):
            effs = "/".join("-" if s["efficiency"] is None else f"{s['efficiency']:.2f}" for s in r.get("stages", ()))
            agree = r.get("agreement_vs_pyautoattack", r.get("agreement_vs_native"))
            what = f"robust {r['robust_acc']:.3f}  eff {effs}  agree {agree}" if r else ""
        elif row["part"] == "rank" and r:
            what = f"process group {str(r['process_group'])[:24]}; records identical {r['identical_records']}"
        elif row["part"] == "certify" and r:
            what = f"{r['images_per_s']} images/s at N={r['n']} (efficiency {r['efficiency']})"
        elif row["part"] == "corruptions" and r:
            what = f"ours {r['ours_images_per_s']} img/s vs imagecorruptions {r.get('imagecorruptions_images_per_s')}"
        else:
            what = ""
        wall = f"{row['wall_s']:.1f}" if "wall_s" in row else "-"
        est = f"{row['estimate_s']:.1f}" if row.get("estimate_s") is not None else "-"
        lines.append(f"{row['part']:34s} {row['status'][:34]:34s} {wall:>8s} {est:>8s}  {what}")
    for key, g in doc["goals"].items():
        lines.append(f"goals {key}: {json.dumps(g)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny models, images and budgets (CPU check of the script)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="seconds for the run; parts that won't fit skip")
    ap.add_argument("--out", default=None, help="JSON path (default: $OUT/gpu-DEVICE.json, else bench/results/)")
    ap.add_argument("--work", default="/tmp/harness-bench-gpu", help="models and run folders")
    ap.add_argument("--parts", default=None, help="comma-separated part names to run (default: all, in order)")
    ap.add_argument("--n", type=int, default=None, help="images for the AutoAttack parts (default 500; tiny 16)")
    ap.add_argument("--epochs", type=int, default=None, help="ce fitting epochs (default 5; tiny 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; tiny: 1)")
    args = ap.parse_args(argv)
    profile = TINY if args.tiny else FULL
    changes = {k: v for k, v in (("n", args.n), ("epochs", args.epochs)) if v is not None}
    if changes:
        profile = Profile(**{**profile.__dict__, **changes})
    if not (0 < profile.n <= 539 and profile.epochs >= 1 and math.isfinite(args.budget_s)):
        raise SystemExit("error: --n must be in 1..539 (the digits test split), --epochs >= 1, --budget-s finite")
    threads = args.threads or (1 if args.tiny else None)
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is visible — hint: --device cpu --tiny")
    args.out = args.out or str(default_out(device))
    bench = Bench(args, profile)
    bench.run()
    print()
    print(table(bench.doc))
    print(f"\nwrote {bench.out}")


if __name__ == "__main__":
    main()
