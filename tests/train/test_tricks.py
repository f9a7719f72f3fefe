import math

import torch
import torch.nn.functional as F

from fgvc.data.transforms import Cutout, train_transform
from fgvc.train.mixing import build_mixing, soft_cross_entropy, soft_targets


def test_mixup_batch_is_the_convex_combination_its_lambda_says():
    torch.manual_seed(0)
    import numpy as np

    np.random.seed(0)
    mix = build_mixing(mixup_alpha=0.4, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=5)
    x = torch.rand(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    x_mixed, target = mix(x.clone(), y)
    # timm mixes each sample with the flipped batch: x' = lam x + (1 - lam) x.flip(0);
    # lambda is not exposed, so read it off sample 1's target (its partner has another label)
    lam = target[1, 1].item()
    assert 0 < lam < 1
    assert torch.allclose(x_mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(6))
    assert torch.allclose(target[1, y.flip(0)[1]], torch.tensor(1 - lam))


def test_cutmix_targets_follow_the_pasted_area():
    import numpy as np

    np.random.seed(1)
    mix = build_mixing(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=4)
    x0 = torch.zeros(4, 1, 16, 16)
    x0[0] = 1.0  # only sample 0 is white, so the area pasted into sample 3 (its flipped partner) is white
    y = torch.tensor([0, 1, 2, 3])
    mixed, target = mix(x0.clone(), y)
    pasted_share = mixed[3].mean().item()
    assert math.isclose(target[3, 0].item(), pasted_share, abs_tol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(4))


def test_label_smoothing_matches_the_closed_form():
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    y = torch.randint(7, (5,))
    s = 0.1
    target = soft_targets(y, 7, s)
    assert torch.allclose(target.sum(1), torch.ones(5))
    # closed form: (1 - s) * CE(y) + s * mean_c(-log p_c)
    logp = F.log_softmax(logits, 1)
    closed = ((1 - s) * -logp.gather(1, y[:, None]).squeeze(1) + s * -logp.mean(1)).mean()
    assert torch.allclose(soft_cross_entropy(logits, target), closed, atol=1e-6)
    assert torch.allclose(soft_cross_entropy(logits, target), F.cross_entropy(logits, y, label_smoothing=s), atol=1e-6)


def test_mixup_with_label_smoothing_keeps_the_smoothing():
    import numpy as np

    np.random.seed(0)
    mix = build_mixing(0.4, 0.0, 0.1, num_classes=10)
    _, target = mix(torch.rand(4, 3, 8, 8), torch.tensor([1, 2, 3, 4]))
    assert torch.allclose(target.sum(1), torch.ones(4))
    assert target.min() >= 0.1 / 10 - 1e-6  # every class keeps at least s/C


def test_cutout_hole_has_the_requested_size_and_is_zero():
    torch.manual_seed(3)
    image = torch.rand(3, 64, 64) * 0.5 + 0.5  # no zeros to begin with
    out = Cutout(holes=1, size=16)(image)
    zero = (out == 0).all(0)
    rows, cols = zero.any(1).nonzero(), zero.any(0).nonzero()
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    centre_inside = 8 <= rows.min() + 8 <= 56  # holes clipped at the border are smaller
    if centre_inside and rows.min() > 0 and cols.min() > 0 and rows.max() < 63 and cols.max() < 63:
        assert height == 16 and width == 16
    assert zero.sum() == height * width  # one solid square
    assert torch.equal(out[:, ~zero], image[:, ~zero])


def test_cutout_holes_are_full_size_away_from_the_border():
    sizes = []
    for seed in range(20):
        torch.manual_seed(seed)
        zero = (Cutout(1, 10)(torch.ones(3, 100, 100)) == 0).all(0)
        sizes.append(int(zero.sum()))
    assert max(sizes) == 100 and all(s <= 100 for s in sizes)


def test_geometric_pipeline_returns_unit_range_images_of_the_right_size():
    from PIL import Image

    image = Image.new("RGB", (80, 50), (200, 30, 30))
    out = train_transform(32, geometric=True, cutout=1)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1


def test_every_aug_and_adv_key_belongs_to_exactly_one_registered_trick():
    # adding a key without a registry entry (or two entries reading one key) fails here
    import dataclasses

    from fgvc.config import AdvConfig, AugConfig, LossConfig
    from fgvc.train.tricks import TRICKS

    keys = [f"aug.{f.name}" for f in dataclasses.fields(AugConfig)] + [
        f"adv.{f.name}" for f in dataclasses.fields(AdvConfig)] + [f"loss.{f.name}" for f in dataclasses.fields(LossConfig)]
    owners = {k: [name for name, t in TRICKS.items() if k in t.keys] for k in keys}
    assert {k: v for k, v in owners.items() if len(v) != 1} == {}
    assert {t.where for t in TRICKS.values()} <= {"input", "batch", "loss"}


def test_the_registry_says_which_tricks_a_config_turns_on():
    from fgvc import config as config_mod
    from fgvc.train.tricks import active

    cfg = config_mod.apply(config_mod.Config(), {"aug.geometric": True, "aug.label_smoothing": 0.1,
                                                 "adv.attack": "fgsm"})
    assert active(cfg) == ["geometric", "label_smoothing", "adversarial"]
    assert active(config_mod.Config()) == []


def test_tricks_targets_are_one_hot_smoothed_or_mixed_as_configured():
    from fgvc import config as config_mod
    from fgvc.train.tricks import build_tricks

    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    plain = build_tricks(config_mod.Config(), 3)
    assert torch.equal(plain.targets(x, y)[1], F.one_hot(y, 3).float())
    smooth = build_tricks(config_mod.apply(config_mod.Config(), {"aug.label_smoothing": 0.3}), 3)
    assert torch.allclose(smooth.targets(x, y)[1], soft_targets(y, 3, 0.3))
    mixed = build_tricks(config_mod.apply(config_mod.Config(), {"aug.mixup_alpha": 1.0}), 3)
    assert mixed.even_batches and not torch.equal(mixed.targets(x.clone(), y)[0], x)
