"""The training recipes: ``--recipe paper`` against the official table (``data/paper_recipe.csv``,
transcribed from the official ``main.py`` / ``dist_train.sh``) field by field and under every model
spelling, the schedules (lr values against the closed-form cosine / linear warmup), the EMA (against
``d * w0 + (1 - d) * w1``), distillation, linear lr scaling, top-1 / top-5 against a hand count on known
logits, and weight decay kept off the parameters that must not decay.
"""
import json

import pytest
import timm
import torch
from helpers import write_image_folder
from test_train import _env  # noqa: F401  (autouse: a private cache, one torch thread)
from test_train_faults import CPU, ROOT, WNIDS, _kw
from timm.data.random_erasing import RandomErasing
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import swiftlib.train as T
from swiftlib.io import read_csv
from swiftlib.models import SwiftFormer, create_model, resolve_name
from swiftlib.train.setup import build_optimizer, settle


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x 8 JPEGs per split: 24 training images, 3 steps of 8 an epoch."""
    return write_image_folder(tmp_path_factory.mktemp("tree"), WNIDS, 8)


# --------------------------------------------------------------------------- recipes and metrics
def test_paper_recipe_matches_facts():
    xs = T.resolve_config(recipe="paper", model="swiftformer_xs")
    s = T.resolve_config(recipe="paper", model="swiftformer_s")
    l1 = T.resolve_config(recipe="paper", model="swiftformer_l1")
    for c in (xs, s, l1):  # facts file §4 (lr 2e-3 at any batch: no linear scaling, lr_batch 0)
        assert (c.epochs, c.lr, c.lr_batch, c.weight_decay, c.warmup_epochs) == (300, 2e-3, 0, 0.025, 5)
        assert (c.warmup_lr, c.min_lr, c.smoothing, c.re_prob, c.repeated_aug) == (1e-6, 1e-5, 0.1, 0.25, 3)
        assert (c.ema_decay, c.clip_grad, c.clip_mode, c.img_size, c.color_jitter) == (0.99996, 0.01, "agc", 224, 0.4)
        assert (c.re_mode, c.re_count, c.sched_on, c.amp, c.eval_every) == ("pixel", 1, "epoch", False, 20)
        assert (c.teacher, c.distill_alpha, c.distillation) == ("regnety_160", 0.5, True)
        assert c.crop_pct == pytest.approx(224 / 256)
    assert (l1.auto_augment, l1.mixup, l1.cutmix) == ("rand-m9-mstd0.5-inc1", 0.8, 1.0)
    assert (s.auto_augment, s.mixup, s.cutmix) == ("rand-m9-mstd0.5-inc1", 0.0, 0.0)  # S: no mixup / cutmix
    assert (xs.auto_augment, xs.mixup, xs.cutmix) == ("none", 0.0, 0.0)             # XS: no RandAugment either
    assert T.resolve_config(recipe="paper", model="swiftformer_xs", mixup=0.3).mixup == 0.3  # flags win


#: facts §4: (RandAugment, mixup, cutmix) of the paper recipe; XS disables all three, S mixup and cutmix
PAPER_AUGMENTATION = {"xs": ("none", 0.0, 0.0), "s": ("rand-m9-mstd0.5-inc1", 0.0, 0.0),
                      "l1": ("rand-m9-mstd0.5-inc1", 0.8, 1.0), "l3": ("rand-m9-mstd0.5-inc1", 0.8, 1.0)}


@pytest.mark.parametrize("variant", sorted(PAPER_AUGMENTATION))
def test_paper_recipe_exceptions_hold_under_every_model_spelling(variant):
    spellings = [variant, variant.upper(), f"swiftformer_{variant}", f"SwiftFormer-{variant.upper()}",
                 f"SwiftFormer_{variant.upper()}", f"swiftformer {variant}", f"  SWIFTFORMER-{variant}  ",
                 f"Swiftformer__{variant.capitalize()}"]
    for name in spellings:
        assert resolve_name(name) == f"swiftformer_{variant}"  # create_model accepts this spelling
        cfg = T.resolve_config(model=name, recipe="paper")
        assert (cfg.auto_augment, cfg.mixup, cfg.cutmix) == PAPER_AUGMENTATION[variant], name
        assert cfg.model == f"swiftformer_{variant}"  # config.json records the model, not the spelling


def test_evaluate_counts_top1_top5_by_hand():
    logits = torch.tensor([[9., 8, 7, 6, 5, 4], [0, 9, 8, 7, 6, 5], [1, 2, 3, 4, 5, 9], [9, 0, 1, 2, 3, 4]])
    labels = torch.tensor([0, 5, 0, 1])  # top-1 hit, top-5 hit (rank 5), top-5 miss (rank 6), top-5 miss
    model = nn.Identity()
    ev = T.evaluate(model, DataLoader(TensorDataset(logits, labels), batch_size=3), torch.device("cpu"))
    assert ev["count"] == 4 and ev["top1"] == 25.0 and ev["top5"] == 50.0
    ce = nn.functional.cross_entropy(logits, labels).item()
    assert ev["loss"] == pytest.approx(ce)


def test_teacher_hard_distillation_runs(tree, tmp_path):
    torch.set_num_threads(1)
    teacher = timm.create_model("resnet10t", num_classes=3)
    ck = tmp_path / "teacher.pth"
    torch.save(teacher.state_dict(), ck)
    res = T.fit(data="folder", data_dir=str(tree), epochs=1, batch_size=8, img_size=32, teacher="resnet10t",
                teacher_checkpoint=str(ck), out=str(tmp_path / "kd"), progress=False)
    assert res["status"] == "done" and 0 < res["history"][0]["train_loss"] < 10
    with pytest.raises(FileNotFoundError, match="--teacher-checkpoint .*missing.pth: no such file"):
        T.fit(data="folder", data_dir=str(tree), epochs=1, batch_size=8, img_size=32, teacher="resnet10t",
              teacher_checkpoint=str(tmp_path / "missing.pth"), out=str(tmp_path / "kd2"), progress=False)


# --------------------------------------------------------------------------- the paper recipe is the official one
def _table():
    """data/paper_recipe.csv: {variant: {field: value}}, typed by its 'type' column."""
    cast = {"int": int, "float": float, "str": str, "bool": lambda v: {"True": True, "False": False}[v]}
    out = {}
    for row in read_csv(ROOT / "data" / "paper_recipe.csv"):
        assert row["source"] in ("main.py", "dist_train.sh") and row["official"], row
        out.setdefault(row["variant"], {})[row["field"]] = cast[row["type"]](row["value"])
    return out


def _spellings(variant):
    return [variant, variant.upper(), f"swiftformer_{variant}", f"SwiftFormer-{variant.upper()}",
            f"SwiftFormer_{variant.upper()}", f"swiftformer {variant}", f"  SWIFTFORMER-{variant}  "]


@pytest.mark.parametrize("variant", ["xs", "s", "l1", "l3"])
def test_paper_recipe_equals_the_official_table_field_by_field(variant):
    table = _table()
    assert set(table) == {"xs", "s", "l1", "l3"}
    assert set(T.RECIPES["paper"]) <= set(table[variant])  # every recipe value has its official source
    for name in _spellings(variant):
        assert resolve_name(name) == f"swiftformer_{variant}"  # create_model accepts this spelling
        cfg = T.resolve_config(recipe="paper", model=name)
        got = {field: getattr(cfg, field) for field in table[variant]}
        assert got == table[variant], (name, {k: (v, table[variant][k]) for k, v in got.items()
                                              if v != table[variant][k]})


def test_paper_recipe_random_erasing_is_pixel_mode_count_1(tree):
    cfg = T.resolve_config(recipe="paper", model="l1", data="folder", data_dir=str(tree), img_size=32)
    erasing = [t for t in T.build_train_dataset(cfg).transform.transforms if isinstance(t, RandomErasing)]
    assert len(erasing) == 1
    assert (erasing[0].mode, erasing[0].per_pixel, erasing[0].max_count, erasing[0].probability) == \
        ("pixel", True, 1, 0.25)


def test_linear_lr_scaling_is_opt_in(tmp_path):
    model = create_model("swiftformer_xs", num_classes=3)
    paper = T.resolve_config(recipe="paper", batch_size=8)
    subset = T.resolve_config(recipe="subset", batch_size=8)
    assert {g["lr"] for g in build_optimizer(paper, model, 2, CPU).param_groups} == {2e-3}  # any batch
    assert {g["lr"] for g in build_optimizer(subset, model, 2, CPU).param_groups} == {2e-3 * 16 / 256}


def test_paper_schedule_is_per_epoch_and_subset_per_step(tree, tmp_path):
    lrs = {}
    for recipe in ("paper", "subset"):
        seen = []
        T.fit(**_kw(tree, tmp_path / recipe, recipe=recipe, epochs=3, teacher="none", ema_decay=0.0, mixup=0.0,
                    cutmix=0.0, auto_augment="none", re_prob=0.0, repeated_aug=1, warmup_epochs=2, lr_batch=0),
              callback=lambda e, i: seen.append((i["epoch"], i["lr"])) if e == "step" else None)
        lrs[recipe] = seen
    paper = lrs["paper"]  # main.py: lr_scheduler.step(epoch) after epoch e sets lr(t=e) for epoch e+1
    warm = [1e-6, 1e-6, 1e-6 + (2e-3 - 1e-6) / 2]  # linear warmup over 2 epochs from 1e-6
    for epoch, lr in paper:
        assert lr == pytest.approx(warm[epoch], rel=1e-9)
    assert len({lr for e, lr in lrs["subset"] if e == 0}) == 3  # a new lr every step


def test_paper_recipe_is_fp32_and_warns_once_without_a_teacher(tree, tmp_path):
    gpu = torch.device("cuda")  # only the device's kind is read: no GPU needed
    assert settle(T.resolve_config(recipe="paper", teacher="none"), gpu).amp is False
    assert settle(T.resolve_config(recipe="subset"), gpu).amp is True
    assert settle(T.resolve_config(recipe="paper", teacher="none", amp=True), gpu).amp is True
    with pytest.warns(UserWarning) as caught:
        res = T.fit(**_kw(tree, tmp_path / "p", recipe="paper", epochs=2, auto_augment="none", re_prob=0.0,
                          repeated_aug=1, mixup=0.0, cutmix=0.0))
    about_teacher = [w for w in caught if "not the paper's" in str(w.message)]
    assert len(about_teacher) == 1 and "regnety_160" in str(about_teacher[0].message)
    assert json.loads((tmp_path / "p" / "config.json").read_text())["teacher"] == "none"  # what was used
    # evaluation every 20 epochs (and the last): epoch 1 of 2 is not evaluated
    assert [row["val_top1"] is None for row in res["history"]] == [True, False]


def test_ema_starts_from_the_initial_weights(tree, tmp_path):
    decay = 0.75
    torch.manual_seed(1)  # fit seeds the model the same way: these are its initial weights
    w0 = create_model("swiftformer_xs", num_classes=3).state_dict()
    res = T.fit(**_kw(tree, tmp_path, batch_size=24, ema_decay=decay))  # 24 images: one step
    w1, ema = res["model"].state_dict(), res["ema"].state_dict()
    for k in ("head.weight", "stem.0.weight", "stages.3.blocks.3.attn.w_g"):
        assert torch.allclose(ema[k], decay * w0[k] + (1 - decay) * w1[k], atol=1e-7), k
        assert not torch.equal(w0[k], w1[k])


# --------------------------------------------------------------------------- no weight decay on temperatures
class _SwiftFormerNoWD(SwiftFormer):
    def no_weight_decay(self):
        return {n for n, _ in self.named_parameters() if n.endswith("attn.temperature")}


def _decay_of(optimizer, model) -> dict:
    by_id = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters()}


def test_optimizer_honours_no_weight_decay(monkeypatch):
    cfg = T.resolve_config(recipe="paper", attention="transposed")
    plain = create_model("xs", num_classes=3, attention="transposed")
    temps = [n for n, _ in plain.named_parameters() if n.endswith("attn.temperature")]
    assert len(temps) == 4 and all(p.ndim == 3 for n, p in plain.named_parameters() if n in temps)
    decay = _decay_of(build_optimizer(cfg, plain, 1, CPU), plain)
    if not callable(getattr(plain, "no_weight_decay", None)):
        assert {decay[n] for n in temps} == {0.025}  # [h, 1, 1]: not a norm or bias, decayed by default
    model = _SwiftFormerNoWD(widths=(48, 56, 112, 220), depths=(3, 3, 6, 4), num_classes=3, attention="transposed")
    decay = _decay_of(build_optimizer(cfg, model, 1, CPU), model)
    assert {decay[n] for n in temps} == {0.0} and decay["head.weight"] == 0.025
    # declared by the attention module itself (XCiT / EdgeNeXt style): honoured too
    attn_cls = type(plain.get_submodule(temps[0].rsplit(".", 1)[0]))
    monkeypatch.setattr(attn_cls, "no_weight_decay", lambda self: {"temperature"}, raising=False)
    decay = _decay_of(build_optimizer(cfg, plain, 1, CPU), plain)
    assert {decay[n] for n in temps} == {0.0} and decay["stem.0.weight"] == 0.025
