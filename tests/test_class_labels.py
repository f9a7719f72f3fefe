"""Class names on figures are whole: the confusion matrix's ticks and the attack gallery's cell titles
wrap a long name over lines, never cut it."""

import torch

from fgvc.data.base import readable_name
from fgvc.metrics import confusion_figure
from fgvc.robust.plots import gallery_figure

LONG = [f"{i + 1:03d}.Red_crowned_Red_barred_Grey_breasted_White_eyed_Sharpbill_{i}" for i in range(20)]


def _whole(label: str) -> str:
    return " ".join(label.split())


def test_confusion_ticks_hold_whole_class_names():
    for n in (6, 20):
        fig = confusion_figure(torch.eye(n, dtype=torch.long) * 3, LONG[:n])
        labels = [_whole(t.get_text()) for t in fig.axes[0].get_yticklabels()]
        assert labels == [f"{i + 1} {readable_name(name)}" for i, name in enumerate(LONG[:n])], labels[:2]


def test_attack_gallery_titles_hold_whole_class_names():
    row = {"original": torch.rand(3, 8, 8), "true": 0, "clean_pred": 0,
           "adversarial": {0.1: (torch.rand(3, 8, 8), 1)}}
    fig = gallery_figure([0.1], [row], LONG[:2])
    texts = [_whole(ax.get_title()) for ax in fig.axes] + [_whole(fig.axes[0].get_ylabel())]
    for name in (f"1 {readable_name(LONG[0])}", f"2 {readable_name(LONG[1])}"):
        assert any(text.endswith(name) for text in texts), (name, texts)
