"""Loading models the harness did not train: RobustBench offline, users' factories, TorchScript, and refusals."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from harness.api import load_dataset, load_model
from harness.errors import CheckpointError, HarnessError, ModelError, UsageError
from harness.models import zoo

FACTORY = "tests.harness._user_models:small_net"


def cli(args: list, capsys) -> tuple[int, str]:
    from harness.cli.app import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out + out.err


def _one_error_line(text: str) -> None:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines[0].startswith("error:") and len(lines) <= 2 and "Traceback" not in text, text


# ---- RobustBench, offline ---------------------------------------------------------------------------
def _zoo_model(name: str, threat: str, seed: int) -> torch.nn.Module:
    entry = zoo.resolve(name, "cifar10", threat, "unused")
    torch.manual_seed(seed)
    m = zoo.build_architecture(entry)
    with torch.no_grad():  # non-trivial BN statistics, so a buffer mix-up would show in the outputs
        for k, b in m.named_buffers():
            if k.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif k.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    return m.eval()


@pytest.mark.parametrize(
    ("name", "threat", "convention"),
    [
        ("Ding2020MMA", "Linf", "model-prefix"),  # WRN-28-4, Chen2020Efficient-style `model.` keys
        ("Ding2020MMA", "L2", "state_dict+module"),  # Carmon2019Unlabeled-style {'state_dict': {'module.x'}}
        ("Hendrycks2020AugMix_WRN", "corruptions", "no-mu-sigma"),  # WRN-40-2, checkpoint lacks mu/sigma
    ],
)
def test_robustbench_model_loads_offline_from_its_layout(tmp_path, name, threat, convention):
    src = _zoo_model(name, threat, seed=len(convention))
    state = src.state_dict()
    if convention == "model-prefix":
        obj = {f"model.{k}": v for k, v in state.items()}
    elif convention == "state_dict+module":
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 100}
    else:
        obj = {k: v for k, v in state.items() if k not in ("mu", "sigma")}
    path = tmp_path / "cifar10" / threat / f"{name}.pt"  # robustbench/utils.py: model_dir/dataset/threat/Name.pt
    path.parent.mkdir(parents=True)
    torch.save(obj, path)
    model, info = load_model(f"robustbench:{name}", dataset="cifar10", threat_model=threat, model_dir=tmp_path)
    assert info["weights"] == [str(path)] and info["threat_model"] == threat and not model.training
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), src(x))


def test_robustbench_missing_file_names_path_and_model(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_model("robustbench:Ding2020MMA", dataset="cifar10", threat_model="linf", model_dir=tmp_path)
    assert str(tmp_path / "cifar10" / "Linf" / "Ding2020MMA.pt") in e.value.what and "'Ding2020MMA'" in e.value.what
    assert "never downloads" in e.value.hint
    # A dataset spec naming its data (imagefolder:...,name=imagenet) picks RobustBench's dataset by that name.
    with pytest.raises(CheckpointError, match="'Standard_R50' \\(imagenet, Linf\\)"):
        load_model(
            "robustbench:Standard_R50", dataset="imagefolder:name=imagenet", threat_model="Linf", model_dir=tmp_path
        )


def test_robustbench_name_dataset_and_threat_errors(tmp_path):
    with pytest.raises(UsageError, match="Did you mean 'Ding2020MMA'"):
        load_model("robustbench:Ding2020MM", dataset="cifar10", threat_model="Linf", model_dir=tmp_path)
    with pytest.raises(UsageError, match=r"which threat model.*Linf, L2"):
        load_model("robustbench:Ding2020MMA", dataset="cifar10", model_dir=tmp_path)
    with pytest.raises(UsageError, match="no models for dataset 'digits'"):
        load_model("robustbench:Standard", dataset="digits", model_dir=tmp_path)
    with pytest.raises(UsageError, match="which dataset"):
        load_model("robustbench:Standard", model_dir=tmp_path)


def test_robustbench_checkpoint_conventions_unit():
    t = torch.zeros(2)
    # Kireev2021Effectiveness* / Andriushchenko2020Understanding keep {'last', 'best'}: robustbench takes 'last'.
    got = zoo._checkpoint_state({"last": {"a": t}, "best": {"a": t + 1}}, "Andriushchenko2020Understanding", "f")
    assert torch.equal(got["a"], t)
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    net.register_buffer("mu", torch.full((1,), 0.5))
    state = {f"module.{k}": v for k, v in net.state_dict().items() if k != "mu"}
    state["0.scores"] = torch.ones(1)  # pruning scores robustbench ignores
    assert zoo.fit_state(net, state, "f") == ["0.scores"]
    assert float(net.mu) == 0.5
    with pytest.raises(CheckpointError, match=r"unexpected: 0\.extra"):
        zoo.fit_state(net, {**net.state_dict(), "0.extra": t}, "f")


# ---- users' own models ------------------------------------------------------------------------------
def _trained_state(seed: int = 0) -> dict[str, torch.Tensor]:
    from tests.harness._user_models import small_net

    torch.manual_seed(seed)
    return small_net().state_dict()


def test_factory_with_safetensors_and_pt_weights(tmp_path):
    from tests.harness._user_models import small_net

    state = _trained_state()
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")
    ref = small_net()
    ref.load_state_dict(state)
    x = torch.rand(3, 1, 8, 8)
    ds = load_dataset("digits")
    for w in ("w.safetensors", "w.pt"):
        m, info = load_model(FACTORY, weights=tmp_path / w, dataset=ds)
        assert info["source"] == FACTORY and info["weights"].endswith(w)
        with torch.no_grad():
            assert torch.equal(m(x), ref(x))


def test_mean_std_wrapper_normalises_inside(tmp_path):
    from tests.harness._user_models import small_net

    state = _trained_state(1)
    save_file(state, tmp_path / "w.safetensors")
    m, info = load_model(FACTORY, weights=tmp_path / "w.safetensors", mean=[0.5], std=[0.25])
    ref = small_net()
    ref.load_state_dict(state)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m(x), ref((x - 0.5) / 0.25), atol=1e-6)
    assert info["normalize"] == {"mean": [0.5], "std": [0.25]}
    with pytest.raises(UsageError, match="go together"):
        load_model(FACTORY, weights=tmp_path / "w.safetensors", mean=[0.5])


def test_python_module_with_and_without_weights(tmp_path):
    from tests.harness._user_models import small_net

    net = small_net()
    m, info = load_model(net)
    assert m is net and info["source"] == "python"
    save_file(_trained_state(2), tmp_path / "w.safetensors")
    m, _ = load_model(small_net(), weights=tmp_path / "w.safetensors")
    assert torch.equal(m[1].weight, _trained_state(2)["1.weight"])


def test_torchscript_needs_explicit_trust(tmp_path):
    from tests.harness._user_models import small_net

    net = small_net().eval()
    path = tmp_path / "net.pt"
    torch.jit.script(net).save(str(path))
    with pytest.raises(CheckpointError, match="TorchScript") as e:
        load_model(path)
    assert "--trust-torchscript" in e.value.hint
    m, info = load_model(path, trust_torchscript=True, dataset=load_dataset("digits"))
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(m(x), net(x))
    assert info["format"] == "torchscript"


def test_output_shape_checked_against_the_dataset(tmp_path):
    from tests.harness._user_models import seven_classes

    torch.manual_seed(0)
    save_file(seven_classes().state_dict(), tmp_path / "w.safetensors")
    spec = "tests.harness._user_models:seven_classes"
    with pytest.raises(ModelError, match="7 logits but the dataset has 10 classes"):
        load_model(spec, weights=tmp_path / "w.safetensors", dataset=load_dataset("digits"))
    with pytest.raises(ModelError, match=r"fails on a batch of shape \(2, 3, 32, 32\)"):
        load_model(spec, weights=tmp_path / "w.safetensors", dataset=load_dataset("digits:size=32,channels=3"))
    with pytest.raises(UsageError, match=r"not a torch\.nn\.Module"):
        load_model("tests.harness._user_models:not_a_module", weights=tmp_path / "w.safetensors")
    with pytest.raises(UsageError, match="needs --weights"):
        load_model(spec)


# ---- untrusted input is refused, not executed --------------------------------------------------------
class _Dropper:
    """Unpickling this calls open(target, 'w'): a stand-in for arbitrary code in a pickle."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (builtins.open, (str(self.target), "w"))


def test_pickle_needing_arbitrary_objects_is_refused_not_executed(tmp_path):
    live = tmp_path / "live.pt"
    torch.save({"weights": torch.zeros(1), "x": _Dropper(tmp_path / "proof")}, live)
    # The pickle is real: an unsafe load creates the file...
    torch.load(live, weights_only=False)["x"].close()  # the unpickled object is the opened file
    assert (tmp_path / "proof").exists()
    # ...the harness refuses it without creating anything.
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": _Dropper(tmp_path / "pwned")}}, evil)
    with pytest.raises(CheckpointError, match="arbitrary Python objects") as e:
        load_model(FACTORY, weights=evil)
    assert not (tmp_path / "pwned").exists()
    assert "state dict" in e.value.hint


def test_weights_that_do_not_fit_list_the_keys(tmp_path):
    state = _trained_state()
    bad = {k: v for k, v in state.items() if k != "3.bias"}
    bad["1.weight"] = torch.zeros(16, 65)
    bad["head.weight"] = torch.zeros(1)
    save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_model(FACTORY, weights=tmp_path / "bad.safetensors")
    msg = e.value.what
    assert "missing: 3.bias" in msg and "unexpected: head.weight" in msg
    assert "1.weight: file (16, 65) vs model (16, 64)" in msg


# ---- CLI ---------------------------------------------------------------------------------------------
def test_cli_evaluates_a_factory_model(tmp_path, capsys):
    save_file(_trained_state(), tmp_path / "w.safetensors")
    rc, text = cli(
        ["evaluate", "--model", FACTORY, "--weights", tmp_path / "w.safetensors", "--mean", "0.5", "--std", "0.5",
         "--max-samples", "16", "--out", tmp_path / "runs", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert rc == 0, text
    res = json.loads((tmp_path / "runs" / "small_net-quick" / "result.json").read_text())
    assert res["model"]["source"] == FACTORY and res["model"]["normalize"]["mean"] == [0.5]


def _fake_cifar10(root: Path, n: int = 4) -> None:
    rng = np.random.default_rng(0)
    rec = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], 1).astype(np.uint8)
    (root / "cifar-10-batches-bin").mkdir(parents=True)
    rec.tofile(root / "cifar-10-batches-bin" / "test_batch.bin")


@pytest.mark.slow
def test_cli_evaluates_a_robustbench_model(tmp_path, capsys):
    src = _zoo_model("Hendrycks2020AugMix_WRN", "corruptions", seed=0)
    path = tmp_path / "models" / "cifar10" / "corruptions" / "Hendrycks2020AugMix_WRN.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": src.state_dict()}, path)
    _fake_cifar10(tmp_path / "data")
    suite = tmp_path / "fgsm.toml"
    suite.write_text('[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = 0.03\n')
    args = ["evaluate", "robustbench:Hendrycks2020AugMix_WRN", "--dataset", f"cifar10:root={tmp_path / 'data'}"]
    args += ["--threat-model", "corruptions", "--model-dir", tmp_path / "models", "--suite", suite]
    args += ["--out", tmp_path / "runs", "--no-progress", "--batch-size", "4"]
    rc, text = cli(args, capsys)
    assert rc == 0, text
    res = json.loads((tmp_path / "runs" / "Hendrycks2020AugMix_WRN-fgsm" / "result.json").read_text())
    assert res["model"]["weights"] == [str(path)]
    assert res["model"]["threat_model"] == "corruptions"
    assert res["clean"]["n"] == 4


def test_cli_failures_exit_2_with_one_line(tmp_path, capsys):
    torch.save({"x": _Dropper(tmp_path / "pwned")}, tmp_path / "evil.pt")
    torch.jit.script(torch.nn.Flatten()).save(str(tmp_path / "ts.pt"))
    save_file(_trained_state(), tmp_path / "w.safetensors")
    cases = [
        (["robustbench:Ding2020MMA", "--dataset", "cifar10", "--threat-model", "Linf", "--model-dir", tmp_path],
         str(tmp_path / "cifar10" / "Linf" / "Ding2020MMA.pt")),
        (["--model", FACTORY, "--weights", tmp_path / "evil.pt"], "arbitrary Python objects"),
        ([tmp_path / "ts.pt"], "TorchScript"),
        (["--model", "no_such_pkg.mod:build", "--weights", tmp_path / "w.safetensors"], "cannot import"),
        (["--model", FACTORY, "--weights", tmp_path / "w.safetensors", "--mean", "a,b", "--std", "1"], "--mean"),
        ([tmp_path / "w.safetensors", "--model", FACTORY], "give the model once"),
        ([tmp_path / "nothing.safetensors"], "no model at"),
        ([tmp_path / "w.safetensors", "--threat-model", "Linf"], "apply only to robustbench"),
        (["--model", "tests.harness._user_models:seven_classes", "--weights", tmp_path / "w.safetensors"],
         "do not fit"),
    ]  # fmt: skip
    for args, needle in cases:
        rc, text = cli(["evaluate", *args, "--out", tmp_path / "runs", "--no-progress"], capsys)
        assert rc == 2, (args, text)
        _one_error_line(text)
        assert needle in text.splitlines()[0] or needle in text, (needle, text)
    assert not (tmp_path / "pwned").exists()
    assert issubclass(CheckpointError, HarnessError)
