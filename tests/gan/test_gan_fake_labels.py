"""The discriminator scores each fake image with the class it was generated for (projection cGAN,
Miyato & Koyama 2018): labelled otherwise, D learns nothing about class-conditional realism."""

import torch

from fgvc.gan.networks import Discriminator, Generator
from fgvc.gan.train import train_iteration


def test_the_discriminator_scores_fakes_with_the_labels_they_were_generated_for():
    torch.manual_seed(0)
    G, D = Generator(3, image_size=32, ch=8, z_dim=16), Discriminator(3, image_size=32, ch=8)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-4), torch.optim.Adam(D.parameters(), 1e-4)
    generated, scored = [], []
    real_g, real_d = G.forward, D.forward

    def g_forward(z, y):
        out = real_g(z, y)
        generated.append((out.detach().clone(), y.clone()))
        return out

    def d_forward(x, y):
        scored.append((x.detach().clone(), y.clone()))
        return real_d(x, y)

    G.forward, D.forward = g_forward, d_forward
    fixed = torch.Generator().manual_seed(1)

    def noise(n):  # fake labels 1 and 2; every real image is class 0, so any mix-up shows
        return torch.randn(n, 16, generator=fixed), torch.randint(1, 3, (n,), generator=fixed)

    real_batches = [(torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)) for _ in range(2)]
    train_iteration(G, D, opt_g, opt_d, real_batches, noise)

    fakes = {}
    for images, labels in generated:
        for image, label in zip(images, labels):
            fakes[image.numpy().tobytes()] = int(label)
    checked = 0
    for x_real, y_real in real_batches:
        # the discriminator step of this real batch saw these real images: its other images are fakes
        step = next((x, y) for x, y in scored if len(x) > len(x_real) and torch.equal(x[: len(x_real)], x_real))
        x, y = step
        assert torch.equal(y[: len(x_real)], y_real)
        for image, label in zip(x[len(x_real):], y[len(x_real):]):
            assert fakes[image.numpy().tobytes()] == int(label), "a fake was scored with another class's label"
            checked += 1
    assert checked == 8
