"""Loss family (cot, gce, hcot, logitnorm, logitclip, square): hand-computed formula checks.

Every expected value is written here from the paper's formula with plain ``math`` (or an
independent torch expression for gradients), never with the implementation's helpers.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from harness.errors import UsageError
from harness.registry import OBJECTIVES

from .objective_helpers import ParamLogits, make_ctx, make_state, onehot_images

Z = [[2.0, 1.0, 0.0], [0.5, 0.5, -1.0], [-1.0, 3.0, 0.5]]
Y = [0, 2, 1]


def softmax(row):
    e = [math.exp(v) for v in row]
    s = sum(e)
    return [v / s for v in e]


def ce(row, y):
    return -math.log(softmax(row)[y])


def complement_sum(row, y):
    """sum_{j != y} q_j log(q_j + 1e-10), q_j = p_j / (1 - p_y + 1e-7)."""
    p = softmax(row)
    q = [p[j] / (1 - p[y] + 1e-7) for j in range(len(row))]
    return sum(q[j] * math.log(q[j] + 1e-10) for j in range(len(row)) if j != y)


def setup(name, z=Z, y=Y, **params):
    model = ParamLogits(z)
    x = onehot_images(len(z))
    yt = torch.tensor(y)
    ctx_args = params.pop("_ctx", {})
    obj = OBJECTIVES.create(name, **params)
    ctx = make_ctx(model, x, yt, len(z[0]), **ctx_args)
    obj.setup(ctx)
    return obj, model, x, yt


# ---- COT ---------------------------------------------------------------------------------------


def test_cot_complement_value():
    from defenses.objectives.complement import complement_entropy

    z = torch.tensor(Z, dtype=torch.float64)
    expected = sum(complement_sum(r, t) for r, t in zip(Z, Y)) / (3 * 3)
    got = complement_entropy(z, torch.tensor(Y))
    assert got.item() == pytest.approx(expected, rel=1e-9)
    # complement entropy is maximal (most negative) when the wrong classes are uniform: -log(K-1)/K per sample
    flat = torch.tensor([[5.0, 1.0, 1.0]], dtype=torch.float64)
    got_flat = float(complement_entropy(flat, torch.tensor([0])))
    assert got_flat == pytest.approx(-math.log(2) / 3, rel=1e-4)  # up to the 1e-7


def test_cot_step_is_ce_step_then_complement_step():
    """Plain SGD (lr 0.1, no momentum): w1 = w0 - lr grad CE(w0); w2 = w1 - lr grad L_C(w1)."""
    lr = 0.1
    obj, model, x, y = setup("cot")
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    info = obj.step(model, x, y, opt, make_state(3, 3))

    w0 = torch.tensor(Z, dtype=torch.float64)
    p0 = w0.softmax(1)
    onehot = torch.nn.functional.one_hot(torch.tensor(Y), 3).double()
    w1 = w0 - lr * (p0 - onehot) / 3  # d mean CE / d z = (p - e_y) / B
    w1_ = w1.clone().requires_grad_(True)
    p = w1_.softmax(1)
    py = p.gather(1, torch.tensor(Y)[:, None])
    q = p / (1 - py + 1e-7)
    lc = (q * torch.log(q + 1e-10) * (1 - onehot)).sum() / 9
    (g,) = torch.autograd.grad(lc, w1_)
    w2 = w1 - lr * g
    assert torch.allclose(model.z.detach(), w2, atol=1e-12)
    assert float(info["loss"]) == pytest.approx(sum(ce(r, t) for r, t in zip(Z, Y)) / 3, rel=1e-9)
    assert float(info["complement"]) == pytest.approx(float(lc.detach()), rel=1e-9)


def test_cot_two_optimizers_both_move_weights_and_lr_follows_main():
    obj, model, x, y = setup("cot", _ctx={"momentum": 0.9})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ce_only = copy.deepcopy(model)
    opt_ce = torch.optim.SGD(ce_only.parameters(), lr=0.05, momentum=0.9)
    w0 = model.z.detach().clone()
    obj.step(model, x, y, opt, make_state(3, 3))
    loss = torch.nn.functional.cross_entropy(ce_only(x), y)
    opt_ce.zero_grad()
    loss.backward()
    opt_ce.step()
    assert obj.complement_optimizer is not opt
    assert obj.complement_optimizer.param_groups[0]["lr"] == 0.05  # follows the main optimizer, not its own 0.1
    assert not torch.equal(ce_only.z.detach(), w0)  # the CE step moves the weights
    assert not torch.allclose(model.z.detach(), ce_only.z.detach())  # and the complement step moves them further
    assert obj.complement_optimizer.state  # momentum buffers of the second optimizer exist


def test_cot_resume_restores_second_optimizer():
    """Two steps, save (through torch.save/load as the trainer does), resume, one more step == uninterrupted."""
    run, m_run, x, y = setup("cot", _ctx={"momentum": 0.9})
    opt_run = torch.optim.SGD(m_run.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        run.step(m_run, x, y, opt_run, make_state(3, 3))
    buf = io.BytesIO()
    torch.save({"model": m_run.state_dict(), "opt": opt_run.state_dict(), "obj": run.state_dict()}, buf)
    run.step(m_run, x, y, opt_run, make_state(3, 3))

    def resumed(load_objective: bool):
        buf.seek(0)
        st = torch.load(buf, weights_only=True)
        obj, model, _, _ = setup("cot", _ctx={"momentum": 0.9})
        model.load_state_dict(st["model"])
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.load_state_dict(st["opt"])
        if load_objective:
            obj.load_state_dict(st["obj"])
        obj.step(model, x, y, opt, make_state(3, 3))
        return model.z.detach()

    assert torch.equal(resumed(True), m_run.z.detach())
    assert not torch.allclose(resumed(False), m_run.z.detach())  # without the 2nd optimizer's momentum it differs


# ---- GCE ---------------------------------------------------------------------------------------


def test_gce_value_and_gradient():
    alpha = 1 / 3
    obj, model, x, y = setup("gce")
    assert obj.alpha == pytest.approx(1 / 3)
    loss, _ = obj.loss(model, x, y, make_state(3, 3))
    expected = sum((softmax(r)[t] + 1e-7) ** alpha * complement_sum(r, t) for r, t in zip(Z, Y)) / 3 / math.log(3)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    (g,) = torch.autograd.grad(loss, model.z)
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    p = z.softmax(1)
    py = p[torch.arange(3), torch.tensor(Y)]
    mask = 1 - torch.nn.functional.one_hot(torch.tensor(Y), 3).double()
    q = p / (1 - py[:, None] + 1e-7)
    ref = ((py + 1e-7) ** alpha * (q * torch.log(q + 1e-10) * mask).sum(1)).mean() / math.log(3)
    (g_ref,) = torch.autograd.grad(ref, z)
    assert torch.allclose(g, g_ref, atol=1e-12)


# ---- HCOT (5 classes: 3 classes make both inner and outer terms trivial) ------------------------

Z5 = [[2.0, 1.0, 0.0, 0.5, -0.5], [0.0, 1.5, -1.0, 2.5, 0.3]]
Y5 = [0, 3]
H5 = [0, 0, 0, 1, 1]


def test_hcot_inner_outer_values():
    obj, model, x, y = setup("hcot", z=Z5, y=Y5, hierarchy=H5)
    got = obj.complement_loss(model(x), y)
    total = 0.0
    for row, t in zip(Z5, Y5):
        group = [j for j in range(5) if H5[j] == H5[t]]
        pg = softmax([row[j] for j in group])
        pyg = pg[group.index(t)]
        inner = sum(
            pg[a] / (1 - pyg + 1e-7) * math.log(max(pg[a] / (1 - pyg + 1e-7), 1e-10))
            for a, j in enumerate(group)
            if j != t
        )
        p = softmax(row)
        mass = sum(p[j] for j in group)
        qo = [p[j] / (1 - mass + 1e-7) for j in range(5)]
        outer = sum(qo[j] * math.log(max(qo[j], 1e-10)) for j in range(5) if j not in group)
        total += inner / len(group) + outer / 5
    assert got.item() == pytest.approx(total / 2, rel=1e-9)
    # sample 0: group {0,1,2}, inner over {1,2}; sample 1: group {3,4}, inner over {4} only (q = 1, term 0)


def test_hcot_without_hierarchy_raises_usage_error():
    with pytest.raises(UsageError, match="hierarchy"):
        setup("hcot")


def test_hcot_reads_hierarchy_from_dataset_info_and_checks_length():
    model = ParamLogits(Z5)
    x, y = onehot_images(2), torch.tensor(Y5)
    obj = OBJECTIVES.create("hcot")
    obj.setup(make_ctx(model, x, y, 5, info={"coarse_labels_of_fine": H5}))
    assert obj._coarse.tolist() == H5
    with pytest.raises(UsageError, match="5 classes"):
        OBJECTIVES.create("hcot", hierarchy=[0, 1]).setup(make_ctx(model, x, y, 5))


# ---- LogitNorm ---------------------------------------------------------------------------------


def test_logitnorm_value_and_scale_invariant_gradient():
    z = [[3.0, 4.0, 0.0], [0.3, -0.4, 1.2]]
    y = [1, 0]
    obj, model, x, yt = setup("logitnorm", z=z, y=y)
    assert obj.tau == 0.04
    loss, _ = obj.loss(model, x, yt, make_state(2, 3))
    # sample 0: ||z|| = 5, so z / ((5 + 1e-7) * 0.04) = [15, 20, 0] (up to 1e-7)
    s0 = [v / ((5 + 1e-7) * 0.04) for v in z[0]]
    assert s0[1] == pytest.approx(20.0, rel=1e-6)
    n1 = math.sqrt(0.09 + 0.16 + 1.44) + 1e-7
    s1 = [v / (n1 * 0.04) for v in z[1]]
    assert loss.item() == pytest.approx((ce(s0, 1) + ce(s1, 0)) / 2, rel=1e-9)
    (g,) = torch.autograd.grad(loss, model.z)
    # the loss depends on the direction of z only: the gradient is orthogonal to z (up to the 1e-7)
    dots = (g * model.z.detach()).sum(1)
    assert torch.allclose(dots, torch.zeros(2, dtype=torch.float64), atol=1e-6)


# ---- LogitClip ---------------------------------------------------------------------------------


def test_logitclip_paper_form_and_official_variant():
    z = [[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]]  # norms 5 (> tau = 1.5, clipped) and 0.5 (kept)
    y = [0, 2]
    obj, model, x, yt = setup("logitclip", z=z, y=y, official_code_compat=False)
    assert (obj.tau, obj.p) == (1.5, 2.0)
    loss, info = obj.loss(model, x, yt, make_state(2, 3))
    clipped = [1.5 * v / (5 + 1e-7) for v in z[0]]  # norm 1.5: [0.9, 1.2, 0]
    assert clipped[1] == pytest.approx(1.2, rel=1e-6)
    assert loss.item() == pytest.approx((ce(clipped, 0) + ce(z[1], 2)) / 2, rel=1e-9)
    assert float(info["clipped_fraction"]) == 0.5
    # gradient of the unclipped sample is plain CE's: (p - e_y) / B
    (g,) = torch.autograd.grad(loss, model.z)
    p1 = softmax(z[1])
    assert g[1].tolist() == pytest.approx([p1[0] / 2, p1[1] / 2, (p1[2] - 1) / 2], rel=1e-9)

    off, model2, _, _ = setup("logitclip", z=z, y=y)  # the default: the official code's form
    loss2, _ = off.loss(model2, x, yt, make_state(2, 3))
    rescaled = [v / (5 + 1e-7) / 1.5 for v in z[0]]  # official code: norm 1 / tau = 0.667
    assert loss2.item() == pytest.approx((ce(rescaled, 0) + ce(z[1], 2)) / 2, rel=1e-9)


def test_logitclip_default_is_the_official_pair():
    """Default = official code form with its README tau: ||z|| > 1.5 -> norm 2/3; ||z|| <= 1.5 kept."""
    obj = OBJECTIVES.create("logitclip")
    assert (obj.tau, obj.p, obj.official_code_compat) == (1.5, 2.0, True)
    z = torch.tensor([[3.0, 4.0, 0.0], [0.72, 0.96, 0.0], [0.3, 0.4, 0.0]])  # norms 5, 1.2, 0.5
    out = obj.clip(z)
    assert out[0].norm().item() == pytest.approx(2 / 3, rel=1e-6)
    assert torch.equal(out[1], z[1]) and torch.equal(out[2], z[2])
    # The paper form at tau = 2/3 agrees above 1.5 but also clips the norm-1.2 row: no paper tau is equal.
    paper = OBJECTIVES.create("logitclip", tau=2 / 3, official_code_compat=False).clip(z)
    assert torch.allclose(paper[0], out[0]) and paper[1].norm().item() == pytest.approx(2 / 3, rel=1e-6)


# ---- Square loss -------------------------------------------------------------------------------


def test_square_simplex_value_and_gradient():
    obj, model, x, y = setup("square")
    assert obj.coding == "simplex"
    loss, _ = obj.loss(model, x, y, make_state(3, 3))
    c = math.sqrt(3 / 2)
    v = [[c * (2 / 3), -c / 3, -c / 3], [-c / 3, c * (2 / 3), -c / 3], [-c / 3, -c / 3, c * (2 / 3)]]
    for a in range(3):  # unit vectors, pairwise inner product -1/(K-1) = -1/2
        for b in range(3):
            assert sum(v[a][i] * v[b][i] for i in range(3)) == pytest.approx(1.0 if a == b else -0.5)
    expected = sum(sum((zr[i] - v[t][i]) ** 2 for i in range(3)) for zr, t in zip(Z, Y)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    (g,) = torch.autograd.grad(loss, model.z)
    g_ref = [[2 * (zr[i] - v[t][i]) / 3 for i in range(3)] for zr, t in zip(Z, Y)]
    assert torch.allclose(g, torch.tensor(g_ref, dtype=torch.float64), atol=1e-12)


def test_square_onehot_rescaled():
    obj, model, x, y = setup("square", coding="onehot", rescale_k=2.0, rescale_m=3.0)
    loss, _ = obj.loss(model, x, y, make_state(3, 3))
    expected = (
        sum((2.0 * (zr[t] - 3.0) ** 2 + sum(zr[j] ** 2 for j in range(3) if j != t)) / 3 for zr, t in zip(Z, Y)) / 3
    )
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(UsageError):
        OBJECTIVES.create("square", coding="bogus")
    with pytest.raises(UsageError, match="rescale_m"):
        OBJECTIVES.create("square", coding="onehot", rescale_m=0.0)


def test_square_onehot_follows_hui_belkin_rule_by_class_count():
    """Unset (k, M): (1, 1) below 42 classes, (1, 15) from 42, (15, 30) from 1000 (Hui & Belkin 2021)."""
    from defenses.objectives.logit_losses import hui_belkin_rescale

    table = {2: (1, 1), 10: (1, 1), 41: (1, 1), 42: (1, 15), 100: (1, 15), 999: (1, 15), 1000: (15, 30)}
    assert {k: hui_belkin_rescale(k) for k in table} == table
    # K = 3 (< 42): k = 1, M = 1, the plain one-hot square loss; hand-computed from Z, Y.
    obj, model, x, y = setup("square", coding="onehot")
    assert (obj.rescale_k, obj.rescale_m) == (1.0, 1.0)  # resolved in setup: the sidecar records them
    loss, _ = obj.loss(model, x, y, make_state(3, 3))
    # row 0: ((2-1)^2 + 1 + 0) / 3 = 2/3; row 1: ((-1-1)^2 + 0.25 + 0.25) / 3 = 1.5;
    # row 2: ((3-1)^2 + 1 + 0.25) / 3 = 1.75
    assert loss.item() == pytest.approx((2 / 3 + 1.5 + 1.75) / 3, rel=1e-12)
    # One value given, the other from the rule; K = 100 uses M = 15 with the given k.
    obj = OBJECTIVES.create("square", coding="onehot", rescale_k=2.0)
    assert obj.rescale(100) == (2.0, 15.0) and obj.rescale(10) == (2.0, 1.0)
    # The simplex coding (the default) does not use (k, M): nothing is resolved for it.
    obj, *_ = setup("square")
    assert (obj.rescale_k, obj.rescale_m) == (None, None)


@pytest.mark.slow
def test_logitclip_beats_ce_once_ce_memorises_symmetric_label_noise():
    """Measured by bench/claims.py (mlp, 150 epochs, sym:0.4): clean test accuracy 84.2 % vs CE's 70.3 %."""
    import harness.api as api

    torch.set_num_threads(1)
    acc = {}
    for name in ("ce", "logitclip"):
        res = api.train(
            name, "mlp", "digits", epochs=150, progress=False, eval_samples=0, seed=0, label_noise="sym:0.4"
        )
        x, y = api.load_dataset("digits:split=test").batch(slice(0, None))
        with torch.no_grad():
            acc[name] = (res.model.eval()(x).argmax(1) == y).float().mean().item()
    assert acc["logitclip"] > acc["ce"] + 0.05, acc
