"""How often do per-sample verdicts change with the batch size or the CPU kernel path? (issue 19)

Runs the same evaluation under every (CPU capability, batch size) pair, each in its own process
(``ATEN_CPU_CAPABILITY`` is read once, at import), and compares the per-sample records:

- the digits CNNs of ``bench/models_cache.py`` trained with ``ce`` and ``pgd-at``, the ``standard``
  suite on the 539 test digits, and ``autoattack`` on the first 100 test digits for ``pgd-at``;
- batch sizes 7, 64 and 512; capabilities ``default`` and the machine's best
  (``torch.backends.cpu.get_cpu_capability()`` without the variable);
- every run with the same thread count (``--threads``, default 1), seed 0, chunks of 512.

For every threat model it counts the samples whose worst-case verdict is not the same in all runs,
the spread of robust accuracy, and the verdicts that rest on a float-level tie (the engine's
``|margin| <= tie tolerance``, harness/logits.py). It also measures the kernel noise the tie
tolerance must cover: the largest change of a logit, relative to the logit scale, between batch
sizes and capabilities on the same inputs.

    PYTHONPATH=. python bench/verdict_stability.py                       # ~1 h of CPU on 2 cores
    PYTHONPATH=. python bench/verdict_stability.py --out bench/results/verdict_stability.json
    PYTHONPATH=. python bench/verdict_stability.py --quick               # 64 samples, PGD only: minutes
    PYTHONPATH=. python bench/verdict_stability.py --cases pgd-at:autoattack:100 --no-ranks \
        --pairs default:7,default:64,default:512,avx2:64,avx2:512,avx512:64,avx512:512   # docs/reliability.md

The raw records go to ``bench/.cache/verdicts/`` (a rerun reuses them unless ``--fresh``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The script's folder must not shadow the `attacks` package; it goes last, for models_cache.
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

BATCH_SIZES = (7, 64, 512)
# (model, suite, samples)
CASES = (("ce", "standard", 539), ("pgd-at", "standard", 539), ("pgd-at", "autoattack", 100))
QUICK_CASES = (("pgd-at", "quick", 64),)
RAW = HERE / ".cache" / "verdicts"
PROBE_BATCHES = (1, 7, 64, 512)
RUN_META = ("capability", "threads", "wall_s", "config")


def best_capability() -> str:
    """The capability torch picks on this machine when ATEN_CPU_CAPABILITY is unset."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().lower()


# ---- one run (child process) --------------------------------------------------------------------------
def one_run(model_name: str, suite: str, n: int, batch_size: int, dest: Path) -> None:
    """Evaluate once in this process and save the record columns, the entries and a logit probe."""
    from models_cache import benchmark_model

    from harness import api
    from harness.records import open_record

    model = benchmark_model(model_name)
    ds = api.load_dataset("digits")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verdicts-") as tmp:
        res = api.evaluate(
            model, ds, suite, out=tmp, name="r", max_samples=n, batch_size=batch_size, progress=False, device="cpu"
        )
        wall = time.perf_counter() - t0
        store = open_record(Path(tmp) / "r" / "records")
        first = store.read(0)
        keep = ("label", "clean_pred", "clean_margin", "clean_tie", "batch")
        cols = {k: store.column(k) for k in first if k in keep or (k[0] in "smpt" and k[1:].isdigit())}
        entries = [{"key": e["key"], "group": e["group"], "kind": e["kind"]} for g in res.groups for e in g.entries]
        # Entry index k in the record follows the suite order; the result lists entries by group.
        order = json.loads((Path(tmp) / "r" / "records" / "index.json").read_text())["entries"]
        by_key = {e["key"]: e for e in entries}
        entries = [by_key[e["key"]] for e in order]
    # Kernel noise: the same inputs through the model at several batch sizes (test digits, and
    # uniform noise images, which sit far from the data and give larger logits).
    x, _ = ds.batch(slice(0, len(ds)))
    x = torch.cat([x, torch.rand(len(x), *x.shape[1:], generator=torch.Generator().manual_seed(0))])
    probes = {}
    with torch.no_grad():
        for b in PROBE_BATCHES:
            probes[f"logits_b{b}"] = torch.cat([model(x[s : s + b]) for s in range(0, len(x), b)]).numpy()
    meta = {
        "model": model_name,
        "suite": suite,
        "n": n,
        "batch_size": batch_size,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "wall_s": round(wall, 2),
        "entries": entries,
        "robust": {g.key: g.accuracy.correct for g in res.groups},
        "clean": res.clean.correct,
        "config": {k: res.config.get(k) for k in ("batch_plan", "final_batch_size", "tie_tolerance")},
        "ties": res.extra.get("ties"),
    }
    np.savez(dest, meta=np.array(json.dumps(meta)), **cols, **probes)


def run_child(case: tuple[str, str, int], cap: str, bs: int, threads: int, fresh: bool) -> Path:
    model_name, suite, n = case
    dest = RAW / f"{model_name}-{suite}-{n}-{cap}-b{bs}-t{threads}.npz"
    if dest.is_file() and not fresh:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ATEN_CPU_CAPABILITY": cap,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    cmd = [sys.executable, __file__, "--one", model_name, suite, str(n), str(bs), str(dest)]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=ROOT)
    print(f"  {model_name} {suite} n={n} {cap} bs={bs}: {time.perf_counter() - t0:.0f}s", flush=True)
    return dest


# ---- analysis -------------------------------------------------------------------------------------------
def load(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        cols = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    return meta, cols


def group_verdicts(meta: dict, cols: dict[str, np.ndarray], rule: str = "engine") -> dict[str, np.ndarray]:
    """Per threat model, per sample: robust (clean correct and not broken by any of its attacks).

    ``rule="engine"``: the recorded statuses (the engine's tie rule). ``rule="argmax"``: the argmax
    verdict at the same candidate points (prediction == label wherever the entry attacked), i.e. the
    verdict without the tie rule (later attacks of the group are not rerun for a sample the tie rule
    broke, so this is the argmax verdict of the candidates the engine produced).
    """
    lab = cols["label"]
    ok = cols["clean_pred"] == lab
    out: dict[str, np.ndarray] = {"clean": ok}
    for k, e in enumerate(meta["entries"]):
        g = e["group"]
        s = cols[f"s{k}"]
        if rule == "engine":
            robust = s == 1
        else:
            robust = np.where(s >= 0, cols[f"p{k}"] == lab, s == -1)
        out[g] = (out.get(g, ok) & robust) if e["kind"] == "attack" else out.get(g, np.ones(len(lab), bool)) & robust
    return out


def analyse(case: tuple[str, str, int], paths: dict[tuple[str, int], Path], rule: str = "engine") -> dict:
    """Verdict differences across all runs of one case, split by what changed."""
    runs = {key: load(p) for key, p in paths.items()}
    verdicts = {key: group_verdicts(*mc, rule=rule) for key, mc in runs.items()}
    keys = list(runs)
    groups = list(next(iter(verdicts.values())))
    n = case[2]
    per_group = {}
    any_flip = np.zeros(n, bool)
    for g in groups:
        stack = np.stack([verdicts[k][g] for k in keys])
        flips = ~(stack.all(0) | (~stack).all(0))
        any_flip |= flips
        counts = stack.sum(1)
        same_cap = [  # differences between batch sizes at one capability
            int((~(s.all(0) | (~s).all(0))).sum())
            for cap in {c for c, _ in keys}
            for s in [np.stack([verdicts[k][g] for k in keys if k[0] == cap])]
        ]
        same_bs = [
            int((~(s.all(0) | (~s).all(0))).sum())
            for bs in {b for _, b in keys}
            for s in [np.stack([verdicts[k][g] for k in keys if k[1] == bs])]
        ]
        per_group[g] = {
            "samples_differing": int(flips.sum()),
            "differing_ids": np.nonzero(flips)[0].tolist(),
            "across_batch_sizes": max(same_cap),
            "across_capabilities": max(same_bs),
            "robust_min": int(counts.min()),
            "robust_max": int(counts.max()),
            "robust_by_run": {f"{c}/b{b}": int(v) for (c, b), v in zip(keys, counts)},
        }
    # Where the flips are: per entry, the margins of the differing samples in each run.
    meta0 = runs[keys[0]][0]
    where = []
    for k, e in enumerate(meta0["entries"]):
        s = np.stack([runs[key][1][f"s{k}"] for key in keys])
        diff = np.nonzero(~(s == s[0]).all(0))[0]
        for i in diff.tolist():
            m = [float(runs[key][1][f"m{k}"][i]) for key in keys]
            where.append({"entry": e["key"], "sample": i, "status": s[:, i].tolist(), "margins": m})
    ties = {f"{c}/b{b}": runs[(c, b)][0].get("ties") for c, b in keys}
    # Floats: samples whose margin at some entry is not bit-identical in all runs, and the largest gap.
    float_rows = np.zeros(n, bool)
    max_gap = 0.0
    for k in range(len(meta0["entries"])):
        m = np.stack([runs[key][1][f"m{k}"].astype(np.float64) for key in keys])
        same = (m == m[0]) | (np.isnan(m) & np.isnan(m[0]))
        float_rows |= ~same.all(0)
        gap = np.abs(m - m[0])
        if np.isfinite(gap).any():
            max_gap = max(max_gap, float(np.nanmax(gap)))
    return {
        "case": {"model": case[0], "suite": case[1], "samples": n},
        "rule": rule,
        "runs": {f"{c}/b{b}": {k: runs[(c, b)][0][k] for k in RUN_META} for c, b in keys},
        "groups": per_group,
        "samples_with_any_difference": int(any_flip.sum()),
        "samples_with_margin_not_bit_identical": int(float_rows.sum()),
        "max_margin_gap": max_gap,
        "entry_differences": where,
        "ties": ties,
    }


def logit_noise(paths: list[Path]) -> dict:
    """Largest |logit change| between batch sizes and capabilities, absolute and relative to max |logit|.

    Each run probes its model on the same inputs; runs are compared with the first run of the same model.
    """
    refs: dict[str, np.ndarray] = {}
    worst_abs = worst_rel = 0.0
    scale = 0.0
    for p in paths:
        meta, cols = load(p)
        for b in PROBE_BATCHES:
            z = cols[f"logits_b{b}"].astype(np.float64)
            ref = refs.setdefault(meta["model"], z)
            if ref is z:
                continue
            d = np.abs(z - ref)
            s = np.maximum(np.abs(ref).max(1, keepdims=True), 1.0)
            worst_abs = max(worst_abs, float(d.max()))
            worst_rel = max(worst_rel, float((d / s).max()))
            scale = max(scale, float(np.abs(ref).max()))
    return {
        "max_abs_diff": worst_abs,
        "max_rel_diff": worst_rel,
        "max_rel_diff_in_eps32": worst_rel / float(np.finfo(np.float32).eps),
        "max_abs_logit": scale,
    }


def table(report: dict) -> str:
    lines = [
        "| model | suite | samples | threat model | robust (min–max of runs) | samples differing | "
        "of which across batch sizes / across capabilities |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in report["cases"]:
        c = a["case"]
        for g, r in a["groups"].items():
            lines.append(
                f"| {c['model']} | {c['suite']} | {c['samples']} | {g} | {r['robust_min']}–{r['robust_max']} | "
                f"{r['samples_differing']} | {r['across_batch_sizes']} / {r['across_capabilities']} |"
            )
    return "\n".join(lines)


# ---- ranks: one process vs --nproc 2 ---------------------------------------------------------------------
RANK_CONFIGS = {  # name -> (ranks, threads per process)
    "1proc-2threads": (1, 2),
    "1proc-1thread": (1, 1),
    "2ranks-1thread": (2, 1),
}


def rank_runs(cap: str, fresh: bool) -> dict:
    """pgd-at, standard suite, 539 test digits, batch 64, chunks of 128: one process (1 and 2 threads) vs 2 ranks."""
    from models_cache import CACHE, EPOCHS, trained

    trained("pgd-at")
    ckpt = CACHE / f"pgd-at-cnn-digits-e{EPOCHS}.safetensors"
    root = RAW / "ranks"
    out: dict = {"capability": cap, "runs": {}}
    for name, (ranks, threads) in RANK_CONFIGS.items():
        run_dir = root / name
        if fresh or not (run_dir / "result.json").is_file():
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "ATEN_CPU_CAPABILITY": cap,
                "OMP_NUM_THREADS": str(threads),
                "MKL_NUM_THREADS": str(threads),
            }
            cmd = [sys.executable, "-m", "harness", "evaluate", str(ckpt), "--suite", "standard", "--out", str(root)]
            cmd += ["--name", name, "--batch-size", "64", "--chunk-size", "128", "--device", "cpu", "--no-progress"]
            cmd += ["--overwrite"] + (["--nproc", str(ranks)] if ranks > 1 else [])
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            print(f"  ranks {name}: {time.perf_counter() - t0:.0f}s", flush=True)
        res = json.loads((run_dir / "result.json").read_text())
        out["runs"][name] = {
            "threads": res["environment"]["threads"],
            "robust": {g["key"]: g["accuracy"]["correct"] for g in res["groups"]},
            "clean": res["clean"]["correct"],
        }
    from harness.records import chunk_files

    recs = {name: chunk_files(root / name / "records") for name in RANK_CONFIGS}

    def compare(a: str, b: str) -> dict:
        ra, rb = recs[a], recs[b]
        same_bits = same_verdicts = True
        max_margin = 0.0
        differing = 0
        for chunk in ra:
            for col, va in ra[chunk].items():
                vb = rb[chunk][col]
                eq = np.array_equal(va, vb, equal_nan=True)
                same_bits &= eq
                if (col[0] in "sp" and col[1:].isdigit()) or col in ("clean_pred", "label", "id"):
                    same_verdicts &= eq
                if not eq and va.dtype.kind == "f":
                    d = np.abs(va.astype(np.float64) - vb.astype(np.float64))
                    max_margin = max(max_margin, float(np.nanmax(d)) if np.isfinite(d).any() else 0.0)
                    differing += int((d > 0).any(axis=tuple(range(1, d.ndim))).sum())
        return {
            "bit_identical": bool(same_bits),
            "verdicts_identical": bool(same_verdicts),
            "max_float_diff": max_margin,
            "float_cells_rows_differing": differing,
        }

    out["comparison"] = {
        "1proc-1thread vs 2ranks-1thread": compare("1proc-1thread", "2ranks-1thread"),
        "1proc-2threads vs 2ranks-1thread": compare("1proc-2threads", "2ranks-1thread"),
        "1proc-2threads vs 1proc-1thread": compare("1proc-2threads", "1proc-1thread"),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=5, metavar=("MODEL", "SUITE", "N", "BATCH", "DEST"), help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--capabilities", default=None, help="comma-separated (default: 'default' and the best)")
    ap.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    ap.add_argument("--quick", action="store_true", help="one small case (pgd-at, quick suite, 64 samples)")
    ap.add_argument("--fresh", action="store_true", help="recompute runs already in bench/.cache/verdicts")
    ap.add_argument("--no-ranks", action="store_true", help="skip the 1 process vs --nproc 2 comparison")
    ap.add_argument(
        "--cases", default=None, help="MODEL:SUITE:N,... instead of the default cases (e.g. ce:standard:539)"
    )
    ap.add_argument(
        "--pairs",
        default=None,
        help="CAP:BATCH,... instead of every capability x batch size (e.g. a slow batch size at one capability)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.one:
        model_name, suite, n, bs, dest = args.one
        one_run(model_name, suite, int(n), int(bs), Path(dest))
        return
    from models_cache import benchmark_model

    # Train (and cache) the models once, before the children read the cache.
    for m in {c.split(":")[0] for c in args.cases.split(",")} if args.cases else {c[0] for c in CASES}:
        benchmark_model(m)
    best = best_capability()
    caps = args.capabilities.split(",") if args.capabilities else list(dict.fromkeys(["default", best]))
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    cases = QUICK_CASES if args.quick else CASES
    if args.cases:
        cases = tuple((m, su, int(n)) for m, su, n in (c.split(":") for c in args.cases.split(",")))
    report: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "best_capability": best},
        "torch": torch.__version__,
        "threads": args.threads,
        "capabilities": caps,
        "batch_sizes": sizes,
        "pairs": args.pairs,
        "cases": [],
    }
    all_paths = []
    for case in cases:
        print(f"{case[0]} / {case[1]} / {case[2]} samples", flush=True)
        grid = itertools.product(caps, sizes)
        if args.pairs:
            grid = [(c, int(bs)) for c, bs in (p.split(":") for p in args.pairs.split(","))]
        paths = {(cap, bs): run_child(case, cap, bs, args.threads, args.fresh) for cap, bs in grid}
        all_paths += list(paths.values())
        report["cases"].append(analyse(case, paths))
        report.setdefault("argmax_cases", []).append(analyse(case, paths, rule="argmax"))
    report["logit_noise"] = logit_noise(all_paths)
    if not args.quick and not args.no_ranks:
        report["ranks"] = rank_runs(best, args.fresh)
    print(table(report))
    print("argmax rule at the same candidate points:")
    print(table({"cases": report["argmax_cases"]}))
    if "ranks" in report:
        print(json.dumps(report["ranks"]["comparison"], indent=1))
    print(json.dumps(report["logit_noise"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
