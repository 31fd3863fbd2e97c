"""Issue 24: the fast trainers' tricks, each a declared option that does what it says (tiny synthetic data, fast)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarnet.config import make_config
from cifarnet.data.augment import mix_batch, soft_targets, to_float
from cifarnet.data.cifar10 import CLASSES, Cifar10
from cifarnet.nets.models import ARCHS, build_model, count_params, stem_conv
from cifarnet.nets.norms import norm_layers
from cifarnet.nets.rules import check_rules
from cifarnet.runs.folders import create_run
from cifarnet.training.averaging import decay_at
from cifarnet.training.checkpoint import load_model, read_checkpoint, save_checkpoint
from cifarnet.training.engine import Trainer, evaluate, logits_of, train_run
from cifarnet.training.schedule import lr_at
from cifarnet.training.whitening import fit_whitening, patches, sample_index, whitening_filters

TRAIN, TEST = 40, 20  # images: four of each class, two of each class
BASE = {
    "arch": "s9",
    "subset": TRAIN // 10,
    "batch_size": 10,
    "epochs": 1,
    "eval_subset": 0,
    "lr": 0.05,
    "tta": False,
    "threads": 1,
    "precision": "fp32",
}


def tiny_data(seed: int = 0) -> Cifar10:
    """Random images (no two alike, none symmetric), labels 0-9 in turn."""
    gen = torch.Generator().manual_seed(seed)
    train_x, test_x = (torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8) for n in (TRAIN, TEST))
    return Cifar10(train_x, torch.arange(TRAIN) % 10, test_x, torch.arange(TEST) % 10, CLASSES, "synthetic")


def trainer(**values) -> Trainer:
    return Trainer(make_config({**BASE, **values}), tiny_data())


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_the_weight_average_is_the_hand_computed_ema_and_is_what_is_evaluated():
    t = trainer(ema=0.9)
    average = params(t.model)  # starts as the initial weights
    for step, (_, x, y) in enumerate(t.batches(0)):
        t.step(x, y)
        decay = decay_at(step, 0.9)
        average = [decay * a + (1 - decay) * w for a, w in zip(average, params(t.model))]
    assert decay_at(0, 0.9) == 0.1 and decay_at(1000, 0.9) == 0.9  # warmed up, then the decay asked for
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(average, t.final_model.parameters()))
    assert not all(torch.equal(a, w) for a, w in zip(average, t.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(t.final_model.buffers(), t.model.buffers()))  # BN statistics copied
    ours = t.evaluate(t.test_x, t.test_y)
    assert ours.loss == evaluate(t.final_model, t.test_x, t.test_y).loss != evaluate(t.model, t.test_x, t.test_y).loss
    plain = trainer()
    assert plain.average is None and plain.final_model is plain.model


def test_lookahead_pulls_the_trained_weights_back_to_the_average_every_five_steps():
    t = trainer(lookahead=0.9, epochs=2)
    start = params(t.model)
    steps = [batch for epoch in range(2) for batch in t.batches(epoch)]
    for _, x, y in steps[:4]:
        t.step(x, y)
    assert all(torch.equal(a, s) for a, s in zip(t.final_model.parameters(), start))  # no update yet
    trained, pull = [], t.slow.pull
    t.slow.pull = lambda model: (trained.extend(params(model)), pull(model))  # the weights before the jump
    _, x, y = steps[4]
    t.step(x, y)  # the fifth step: the average takes five steps' worth of decay towards them, then they jump
    decay = decay_at(4, 0.9) ** 5
    expected = [decay * s + (1 - decay) * w for s, w in zip(start, trained)]
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(t.final_model.parameters(), expected))
    assert all(torch.equal(a, w) for a, w in zip(t.final_model.parameters(), t.model.parameters()))
    for _, x, y in steps[5:9]:
        t.step(x, y)
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(t.final_model.parameters(), expected))
    both = trainer(lookahead=0.9, ema=0.5)
    assert both.final_model is both.average.model and both.slow.model is not both.average.model


def test_a_run_with_ema_saves_and_reports_the_average_and_resumes_it(runs_dir):
    data = tiny_data()
    path = create_run(make_config({**BASE, "ema": 0.8, "name": "ema"}), runs_dir)
    assert train_run(path, data=data) == "finished"
    last, saved = read_checkpoint(path / "last.pt"), read_checkpoint(path / "model.pt")
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in last["average"].items())
    assert not torch.equal(saved["state_dict"]["body.c1.0.0.weight"], last["state_dict"]["body.c1.0.0.weight"])
    results = json.loads((path / "results.json").read_text())
    assert results["test_acc"] == evaluate(load_model(path / "model.pt"), data.test_x, data.test_y).acc
    resumed = Trainer(make_config({**BASE, "ema": 0.8}), data)
    model = load_model(path / "last.pt").train()
    resumed.restore(model, last["optimizer"], last["step"], last["average"])
    assert all(torch.equal(resumed.final_model.state_dict()[k], v) for k, v in last["average"].items())


def test_alternating_flip_mirrors_a_fixed_half_then_each_image_the_other_way_every_epoch():
    t = trainer(crop=False, flip_mode="alternate", epochs=3)
    originals = to_float(t.train_x)
    flipped_by_epoch = []
    for epoch in range(3):
        order, _ = t.epoch_order(epoch)
        flipped = torch.zeros(TRAIN, dtype=torch.bool)
        for i, x, _y in t.batches(epoch):
            idx = order[i * 10 : (i + 1) * 10]
            mirrored = torch.tensor([torch.equal(a, b.flip(2)) for a, b in zip(x, originals[idx])])
            kept = torch.tensor([torch.equal(a, b) for a, b in zip(x, originals[idx])])
            assert bool((mirrored ^ kept).all())  # each image exactly itself or its mirror
            flipped[idx] = mirrored
        flipped_by_epoch.append(flipped)
    first = flipped_by_epoch[0]
    assert 0 < int(first.sum()) < TRAIN  # a random part in the first epoch
    assert torch.equal(first, t.first_flips)
    assert torch.equal(flipped_by_epoch[1], ~first) and torch.equal(flipped_by_epoch[2], first)


def test_a_resumed_epoch_gets_the_batches_it_would_have_had_with_every_random_draw_on():
    t = trainer(flip_mode="alternate", mixup=0.4, cutmix=1.0, cutout=True, affine="ssr")
    whole = list(t.batches(1))
    tail = list(t.batches(1, first=2))
    assert [i for i, _, _ in tail] == [2, 3]
    for (_, x, y), (_, xr, yr) in zip(whole[2:], tail):
        assert torch.equal(x, xr) and torch.equal(y, yr)


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixup_and_cutmix_blend_images_and_smoothed_labels_by_one_weight(mode):
    cfg = make_config({mode: 1.0, "label_smoothing": 0.1})
    x = torch.rand(6, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    mixed, targets = mix_batch(x, y, cfg, torch.Generator().manual_seed(3))
    assert targets.shape == (6, 10) and torch.allclose(targets.sum(1), torch.ones(6))
    lam = float((targets[0, 0] - 0.01) / 0.9)  # image 0's own label: lam (1 - 0.1) + 0.1 / 10
    assert 0 < lam < 1
    assert torch.allclose(targets, lam * soft_targets(y, 0.1) + (1 - lam) * soft_targets(y.flip(0), 0.1))
    partner = x.flip(0)
    if mode == "mixup":
        assert torch.allclose(mixed, lam * x + (1 - lam) * partner)
    else:
        own = (mixed == x).all(1)  # [N, H, W]: pixels kept, the rest pasted from the partner
        assert torch.equal(mixed, torch.where(own.unsqueeze(1), x, partner))
        assert torch.allclose(own.float().mean((1, 2)), torch.full((6,), lam))
    assert torch.equal(mix_batch(x, y, make_config({}), torch.Generator())[1], y)  # off: labels as they were


def test_training_steps_take_mixed_targets():
    t = trainer(mixup=0.4)
    _, x, y = next(t.batches(0))
    assert y.shape == (10, 10)
    loss, correct = t.step(x, y)
    assert torch.isfinite(loss) and 0 <= int(correct) <= 10


def test_the_whitening_filters_whiten_training_patches_to_unit_covariance():
    gen = torch.Generator().manual_seed(0)
    smooth = F.avg_pool2d(torch.randn(200, 3, 34, 34, generator=gen), 3, stride=1)  # neighbours correlated
    images = smooth + 0.5 * smooth.mean(1, keepdim=True)  # and the channels
    weight = whitening_filters(images, 32, 3)
    rows = patches(images, 3)
    out = (rows - rows.mean(0)) @ weight.view(32, -1).T
    cov = out.T @ out / len(out)
    assert torch.allclose(cov[:16, :16], torch.eye(16), atol=0.02)  # the 16 strongest directions, whitened
    assert torch.allclose(weight[16:], -weight[:16])  # and each the other way round
    raw = (rows - rows.mean(0)).T @ (rows - rows.mean(0)) / len(rows)
    assert (raw - torch.eye(27)).abs().max() > 0.1  # the patches themselves were far from white


@pytest.mark.parametrize("whiten", ["frozen", "trainable"])
def test_a_whitening_stem_is_fitted_from_the_data_kept_self_contained_and_within_the_rules(whiten, tmp_path):
    data = tiny_data()
    model = build_model("s9", "ln", whiten=whiten)
    stem = stem_conv(model)
    assert type(stem) is nn.Conv2d  # not weight-standardised, which would undo the whitening
    frozen = stem.weight.numel() if whiten == "frozen" else 0
    assert count_params(model) == count_params(build_model("s9", "ln")) - frozen
    fit_whitening(model, data.train_x, seed=1)
    again = build_model("s9", "ln", whiten=whiten)
    fit_whitening(again, data.train_x, seed=1)
    assert torch.equal(stem.weight, stem_conv(again).weight)  # deterministic per seed: the same sample
    assert torch.equal(sample_index(50_000, 1), sample_index(50_000, 1)) and len(sample_index(50_000, 1)) == 5_000
    assert not torch.equal(sample_index(50_000, 1), sample_index(50_000, 2))
    normalised = (to_float(data.train_x) - model.mean) / model.std
    rows = patches(normalised, 3)
    out = (rows - rows.mean(0)) @ stem.weight.view(32, -1).T
    assert (out[:, :16].var(0) - 1).abs().max() < 0.2  # unit variance on the training patches (40 images here)
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_model(tmp_path / "m.pt")
    x = torch.rand(2, 3, 32, 32)
    assert loaded.config["whiten"] == whiten and torch.equal(loaded(x), model.eval()(x))
    assert stem_conv(loaded).weight.requires_grad == (whiten == "trainable")
    for arch in ARCHS:
        for norm in ("bn", "ln", "gn"):
            assert all(rule.passed for rule in check_rules(build_model(arch, norm, whiten=whiten))), (arch, norm)
    assert "whiten" not in build_model("s9", "bn").config  # a plain network's record is the one it always had


def test_the_trainer_fits_the_stem_and_a_frozen_one_stays_put():
    for whiten in ("frozen", "trainable"):
        t = trainer(whiten=whiten)
        fitted = stem_conv(t.model).weight.detach().clone()
        reference = build_model("s9", "bn", whiten=whiten)
        fit_whitening(reference, t.train_x, seed=0)
        assert torch.equal(fitted, stem_conv(reference).weight)
        for _, x, y in t.batches(0):
            t.step(x, y)
        assert torch.equal(stem_conv(t.model).weight, fitted) == (whiten == "frozen")


def test_frozen_norm_scales_stay_at_one_and_norm_biases_train_at_their_own_learning_rate():
    t = trainer(freeze_norm_scales=True, norm_bias_lr=64.0, norm="gn")
    norms = norm_layers(t.model)
    biases_before = [m.bias.detach().clone() for m in norms]
    for _, x, y in t.batches(0):
        t.step(x, y)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert all(not torch.equal(m.bias, b) for m, b in zip(norms, biases_before))
    groups = t.optimizer.param_groups
    bias_group = next(g for g in groups if g.get("lr_scale") == 64.0)
    assert {id(p) for p in bias_group["params"]} == {id(m.bias) for m in norms} and bias_group["weight_decay"] == 0
    assert bias_group["lr"] == pytest.approx(64 * groups[0]["lr"]) and groups[0]["lr"] == lr_at(3, t.cfg)
    frozen = {id(m.weight) for m in norms}
    assert not frozen & {id(p) for g in groups for p in g["params"]}
    plain = trainer()  # the defaults: norm scales trained, one group for every undecayed parameter
    assert len(plain.optimizer.param_groups) == 2 and all(m.weight.requires_grad for m in norm_layers(plain.model))


def test_lr_scaling_scales_the_peak_to_the_batch():
    base = {"lr": 0.1, "batch_size": 512}
    assert make_config(base).peak_lr == 0.1
    assert make_config({**base, "lr_scaling": "linear"}).peak_lr == pytest.approx(0.4)
    assert make_config({**base, "lr_scaling": "sqrt"}).peak_lr == pytest.approx(0.2)
    cfg = make_config({**base, "batch_size": 1024, "lr_scaling": "linear", "warmup": 0.25})
    assert cfg.steps_per_epoch == 48
    assert max(lr_at(s, cfg) for s in range(cfg.total_steps)) == pytest.approx(0.8, rel=0.02)
    assert dataclasses.replace(cfg, lr_scaling="none").peak_lr == 0.1


def test_flip_and_translate_tta_averages_the_six_views_as_airbench_weighs_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    x = to_float(images)

    def pair(v: torch.Tensor) -> torch.Tensor:  # an image's and its mirror's probabilities, averaged
        return (model(v).softmax(1) + model(v.flip(3)).softmax(1)) / 2

    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    expected = pair(x) / 2 + (pair(padded[:, :, :32, :32]) + pair(padded[:, :, 2:, 2:])) / 4
    plain, augmented = logits_of(model, images, tta=True, translate=True)
    assert torch.allclose(plain, model(x)) and torch.allclose(augmented, expected, atol=1e-6)
    assert torch.allclose(logits_of(model, images, tta=True)[1], pair(x), atol=1e-6)  # flip only, as before
    labels = expected.argmax(1)
    assert evaluate(model, images, labels, tta=True, translate=True).tta_acc == 1.0
