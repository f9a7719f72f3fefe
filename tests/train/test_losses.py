"""Center loss and pairwise confusion (fgvc.train.losses) against their papers' closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fgvc.train.losses import Criterion, center_loss, center_update, pairwise_confusion
from fgvc.train.mixing import soft_cross_entropy, soft_targets


def test_two_one_hot_vectors_of_different_classes_are_2_apart_and_identical_ones_0():
    one_hot = torch.eye(3)[[0, 1]]
    assert pairwise_confusion(one_hot, torch.tensor([0, 1])).item() == pytest.approx(2.0)
    same = torch.eye(3)[[0, 0]]
    assert pairwise_confusion(same, torch.tensor([0, 1])).item() == 0.0


def test_pairwise_confusion_is_the_mean_over_cross_class_pairs_only():
    probs = torch.softmax(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    classes = torch.tensor([0, 0, 1, 2, 1])
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5) if classes[i] != classes[j]]
    closed = sum(((probs[i] - probs[j]) ** 2).sum() for i, j in pairs) / len(pairs)
    assert pairwise_confusion(probs, classes).item() == pytest.approx(closed.item(), rel=1e-6)


def test_pairwise_confusion_of_a_one_class_batch_is_0_and_differentiable():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = pairwise_confusion(torch.softmax(logits, 1), torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(4, 3))


def test_center_loss_is_half_the_mean_squared_distance_to_the_class_centre():
    features = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]])
    centers = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    classes = torch.tensor([0, 1, 0])
    # ||(0,2)||^2 = 4, ||(3,-4)||^2 = 25, ||(-1,0)||^2 = 1
    assert center_loss(features, classes, centers).item() == pytest.approx(0.5 * (4 + 25 + 1) / 3)


def test_center_loss_gradient_pulls_features_to_their_centre_and_leaves_centres_alone():
    features = torch.randn(4, 3, requires_grad=True)
    centers = torch.randn(2, 3, requires_grad=True)
    classes = torch.tensor([0, 1, 1, 0])
    center_loss(features, classes, centers).backward()
    assert torch.allclose(features.grad, (features - centers[classes]).detach() / 4)
    assert centers.grad is None


def test_the_centre_update_is_wen_et_al_eq_4():
    centers = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    features = torch.tensor([[2.0, 0.0], [4.0, 2.0], [1.0, 3.0]])
    classes = torch.tensor([0, 0, 1])
    new = center_update(features, classes, centers, alpha=0.5)
    # class 0: sum (c - f) = (-6, -2), n = 2 -> delta = (-2, -2/3); c - 0.5 delta = (1, 1/3)
    # class 1: (1,1) - (1,3) = (0, -2), n = 1 -> delta = (0, -1); c = (1, 1.5); class 2 is absent: unchanged
    assert torch.allclose(new, torch.tensor([[1.0, 1 / 3], [1.0, 1.5], [5.0, 5.0]]))


def test_the_centre_update_sums_over_processes_before_dividing():
    # two processes, one image of class 0 each: the same update as one process seeing both images
    centers = torch.zeros(1, 2)
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    classes = torch.tensor([0])
    partials = []

    def reduce(t):  # what an all-reduce sum of both processes returns
        partials.append(t)
        other = torch.cat([torch.zeros_like(centers).index_add_(0, classes, b), torch.ones(1, 1)], dim=1)
        return t + other

    both = center_update(a, classes, centers, 0.5, reduce=reduce)
    assert torch.allclose(both, center_update(torch.cat([a, b]), torch.tensor([0, 0]), centers, 0.5))


class Tiny(nn.Module):
    """features -> head, the shape of a Classifier (``.head`` is the final linear layer)."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_the_criterion_adds_each_weighted_term_to_the_cross_entropy():
    torch.manual_seed(0)
    model = Tiny()
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 0, 1, 1, 0])
    target = soft_targets(y, 2)
    criterion = Criterion(soft_cross_entropy, pc_weight=0.3, center_weight=0.2, center_alpha=0.5, num_classes=2)
    criterion.attach(model)
    logits = model(x)
    features = torch.relu(model.body(x))
    expected = (soft_cross_entropy(logits, target) + 0.3 * pairwise_confusion(F.softmax(logits, 1), y)
                + 0.2 * center_loss(features, y, torch.zeros(2, 3)))
    assert criterion(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    # the centres then moved by the rule from zero
    assert torch.allclose(criterion.centers, center_update(features, y, torch.zeros(2, 3), 0.5))


def test_eval_mode_and_no_grad_forwards_add_no_center_term_nor_move_the_centres():
    model = Tiny()
    criterion = Criterion(soft_cross_entropy, center_weight=1.0, num_classes=2)
    criterion.attach(model)
    x, target = torch.randn(3, 4), soft_targets(torch.tensor([0, 1, 1]), 2)
    model.eval()
    logits = model(x)
    assert criterion(logits, target).item() == pytest.approx(soft_cross_entropy(logits, target).item())
    assert criterion.centers is None


def test_the_centres_round_trip_through_the_state_dict():
    model = Tiny()
    criterion = Criterion(soft_cross_entropy, center_weight=1.0, num_classes=2)
    criterion.attach(model)
    criterion(model(torch.randn(4, 4)), soft_targets(torch.tensor([0, 1, 1, 0]), 2))
    again = Criterion(soft_cross_entropy, center_weight=1.0, num_classes=2)
    again.load_state_dict(criterion.state_dict())
    assert torch.equal(again.centers, criterion.centers)
