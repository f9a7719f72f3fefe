"""The attacks, the sweep and the probe on a CUDA device (random starts need a generator there)."""

import pytest
import torch
import torch.nn.functional as F
from robust_toys import blobs, tiny_cnn
from torch.utils.data import DataLoader, TensorDataset

import fgvc.robust as robust
from fgvc.robust.training import adversarial_loss, robust_accuracy_probe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_attacks_sweep_and_probe_run_on_cuda():
    torch.manual_seed(0)
    model = tiny_cnn().cuda().eval()
    x, y = blobs(64, seed=2)
    x, y = x.cuda(), y.cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    for x_adv in (robust.fgsm(model, x, y, 0.05), robust.ifgsm(model, x, y, 0.05),
                  robust.pgd(model, x, y, 0.05, generator=generator), *robust.fgsm_sweep(model, x, y, "seed").values()):
        assert x_adv.is_cuda and (x_adv - x).abs().max() <= 0.3 + 1e-6 and 0 <= x_adv.min() <= x_adv.max() <= 1
    loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=32)
    result = robust.evaluate_attack(model.cpu(), loader, "pgd", "standard", device="cuda", progress=False)
    assert result["total"] == 64 and next(model.parameters()).is_cuda
    assert set(robust_accuracy_probe(model, x, y, 8 / 255)) == {"clean", "fgsm", "pgd"}
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = adversarial_loss(model, x, y, F.cross_entropy, "pgd", eps=8 / 255, steps=3)
    loss.backward()
    assert torch.isfinite(loss) and model.training
