"""The gallery side file: the same samples for any batch size and after a resume, bounded in size, its
adversarial images inside the ε-ball and misclassified as the record says, left out when tampered
with, and not written with --no-gallery."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import harness.engine.evaluation
from harness.api import load_dataset
from harness.atomic import sha256_bytes
from harness.engine import EvalConfig, Evaluation
from harness.engine.gallery import GalleryCollector, choose
from harness.records.gallery import GALLERY_DIR, MAX_IMAGE_ELEMENTS, POOL, SHOWN, fits, read_gallery
from harness.suites import Suite
from harness.threat import TOLERANCE, lp_norm
from tests.harness.gallery_helpers import EPS, N, evaluate_digits, linear_model


class _Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same evaluation with batch sizes 7 and 16, and with 16 interrupted after its first chunk, then resumed."""
    tmp = tmp_path_factory.mktemp("gallery")
    out = {"b7": evaluate_digits(tmp, "b7", 7), "b16": evaluate_digits(tmp, "b16", 16)}
    mp = pytest.MonkeyPatch()

    def interrupt(point: str) -> None:
        if point == "eval:chunk":
            raise _Interrupt

    mp.setattr(harness.engine.evaluation, "kill_point", interrupt)
    with pytest.raises(_Interrupt):
        evaluate_digits(tmp, "resumed", 16)
    mp.undo()
    assert len(list((tmp / "resumed" / "records" / GALLERY_DIR).glob("part-*.json"))) >= 1
    out["resumed"] = evaluate_digits(tmp, "resumed", 16)
    return tmp, out


def _gallery(tmp, name, result):
    g = read_gallery(tmp / name / "records", result.config["config_hash"])
    assert g is not None and g.notes == []
    return g


def test_side_file_is_the_same_for_batch_sizes_7_and_16_and_after_a_resume(runs):
    tmp, res = runs
    ref = _gallery(tmp, "b16", res["b16"])
    assert set(ref.threat) == {"linf-0.1", "l2-0.5"}
    for name in ("b7", "resumed"):
        g = _gallery(tmp, name, res[name])
        assert list(g.threat) == list(ref.threat)
        for key, shown in ref.threat.items():
            other = g.threat[key]
            # Verdict level: the same samples, verdicts, predictions and breaking entries ...
            assert [(s.id, s.broken, s.adv_pred, s.entry) for s in other] == [
                (s.id, s.broken, s.adv_pred, s.entry) for s in shown
            ]
            for a, b in zip(shown, other):
                np.testing.assert_array_equal(a.clean, b.clean)
                # ... the images within float tolerance (kernels differ across batch sizes; 1e-4 is
                # far below one 8-bit level, 0.0039, and a bit-identical resume passes it trivially).
                np.testing.assert_allclose(a.adv, b.adv, atol=1e-4)
        assert g.sample[0] == ref.sample[0]
        assert [(c.key, c.pred) for c in g.corrupted] == [(c.key, c.pred) for c in ref.corrupted]
        assert [(n.key, n.base_pred, n.pred) for n in g.noisy] == [(n.key, n.base_pred, n.pred) for n in ref.noisy]
    # The resumed run wrote the same parts (the same chunks) as the uninterrupted one, with equal bytes.
    parts = sorted(p.name for p in (tmp / "b16" / "records" / GALLERY_DIR).glob("part-*.npz"))
    assert parts == sorted(p.name for p in (tmp / "resumed" / "records" / GALLERY_DIR).glob("part-*.npz"))
    for p in parts:
        with (
            np.load(tmp / "b16" / "records" / GALLERY_DIR / p) as a,
            np.load(tmp / "resumed" / "records" / GALLERY_DIR / p) as b,
        ):
            assert sorted(a.files) == sorted(b.files)
            for f in a.files:
                np.testing.assert_array_equal(a[f], b[f])


def test_choice_is_keyed_by_sample_id_not_by_position():
    ids = torch.arange(1000, 1100)
    pool = choose(ids, seed=0)
    assert len(pool) == POOL and len(set(pool.tolist())) == POOL
    shuffled = ids[torch.randperm(100, generator=torch.Generator().manual_seed(1))]
    np.testing.assert_array_equal(choose(shuffled, seed=0), pool)
    assert set(choose(ids, seed=1).tolist()) != set(pool.tolist())
    # A subset holding the chosen samples chooses them again.
    np.testing.assert_array_equal(choose(torch.as_tensor(np.sort(pool)), seed=0), pool)


def test_gallery_images_are_inside_the_ball_and_misclassified_as_the_record_says(runs):
    tmp, res = runs
    g = _gallery(tmp, "b16", res["b16"])
    model = linear_model()
    broken = 0
    for key, shown in g.threat.items():
        e = g.threat_entries[key]
        assert 1 <= len(shown) <= SHOWN
        assert [s.broken for s in shown] == sorted((s.broken for s in shown), reverse=True)  # broken first
        for s in shown:
            x, xa = torch.from_numpy(s.clean)[None], torch.from_numpy(s.adv)[None]
            assert float(lp_norm(xa - x, e["norm"])[0]) <= e["eps"] + TOLERANCE
            assert 0 <= float(xa.min()) and float(xa.max()) <= 1
            with torch.no_grad():
                pred = int(model(xa).argmax(1)[0])
            assert pred == s.adv_pred
            assert (pred != s.label) == s.broken
            broken += s.broken
    assert broken > 0  # the test exercises broken samples, not only robust ones


def test_corruptions_and_smoothing_are_shown_on_one_sample(runs):
    tmp, res = runs
    g = _gallery(tmp, "b16", res["b16"])
    assert [(c.name, c.severity) for c in g.corrupted] == [("gaussian_noise", s) for s in range(1, 6)] + [
        ("contrast", 1),
        ("contrast", 5),
    ]
    shape = tuple(res["b16"].dataset["shape"])
    assert all(c.image.dtype == np.uint8 and c.image.shape == shape for c in g.corrupted)
    assert len(g.noisy) == 1 and g.noisy[0].sigma == 0.25 and g.noisy[0].image.shape == shape
    # The heavier the noise, the further the image from the clean one.
    clean8 = np.round(g.sample[2] * 255)
    dist = [np.abs(c.image - clean8).mean() for c in g.corrupted[:5]]
    assert dist[0] < dist[-1]


def test_side_file_size_is_bounded(runs):
    tmp, res = runs
    gdir = tmp / "b16" / "records" / GALLERY_DIR
    stored = sum(len(np.load(p)["ids"]) for p in gdir.glob("part-*.npz"))
    assert stored == min(POOL, N)
    image = 4 * int(np.prod(res["b16"].dataset["shape"]))
    threat_models, display = 2, 7 + 1  # 7 corrupted and 1 noisy 8-bit image of one sample
    bound = POOL * (1 + threat_models) * image + display * image // 4
    total = sum(p.stat().st_size for p in gdir.glob("part-*.npz"))
    assert total <= bound + 4096 * len(list(gdir.glob("part-*.npz")))  # npz headers
    assert fits((3, 224, 224)) and not fits((3, 256, 256)) and not fits((4, 8, 8))
    assert 3 * 224 * 224 == MAX_IMAGE_ELEMENTS
    huge = GalleryCollector(torch.arange(4), 0, [], (3, 512, 512), enabled=True)
    assert not huge.on


def test_a_tampered_part_is_left_out_with_a_note(runs, tmp_path):
    import shutil

    src, res = runs
    run = tmp_path / "run"
    shutil.copytree(src / "b16", run)
    gdir = run / "records" / GALLERY_DIR
    part = next(p for p in sorted(gdir.glob("part-*.npz")) if np.load(p)["adv_entry"].max() >= 0)
    with np.load(part) as z:
        arrays = {k: z[k] for k in z.files}
    t, j = np.argwhere(arrays["adv_entry"] >= 0)[0]
    arrays["adv"][t, j] = np.clip(arrays["clean"][j] + 0.5, 0, 1)  # far outside either ball
    np.savez(part, **arrays)
    meta_path = part.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = sha256_bytes(part.read_bytes())  # a consistent forgery: only the ball check catches it
    meta_path.write_text(json.dumps(meta))
    g = read_gallery(run / "records", res["b16"].config["config_hash"])
    assert any(part.stem in n and "ball" in n for n in g.notes)
    assert all(s.id not in arrays["ids"].tolist() for shown in g.threat.values() for s in shown)
    # A torn part (bytes not matching its metadata) is left out too.
    part.write_bytes(part.read_bytes()[:100])
    g = read_gallery(run / "records", res["b16"].config["config_hash"])
    assert any("do not match" in n for n in g.notes)
    # A named pipe in place of a part is refused without opening it (a read would block forever).
    part.unlink()
    os.mkfifo(part)
    g = read_gallery(run / "records", res["b16"].config["config_hash"])
    assert any(part.stem in n and "named pipe" in n for n in g.notes)


def test_no_gallery_writes_none(tmp_path):
    ds = load_dataset("digits").subset(slice(0, 8))
    suite = Suite("tiny", attacks=[{"name": "fgsm", "norm": "linf", "eps": EPS}])
    cfg = EvalConfig(batch_size=8, chunk_size=8, progress=False, device="cpu", gallery=False)
    Evaluation(linear_model(), ds, suite, out=tmp_path, name="off", config=cfg).run()
    assert (tmp_path / "off" / "result.json").is_file()
    assert not (tmp_path / "off" / "records" / GALLERY_DIR).exists()
    assert "--no-gallery" in cfg.to_argv() and "--no-gallery" not in EvalConfig().to_argv()
