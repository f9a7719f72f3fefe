"""The seed paper's numbers per shipped study and row, and the paper / ours / difference table.

``PAPER[study][row]`` holds the numbers the seed paper prints for the row of the shipped study
of that name (``fgvc/configs/studies/<study>.yaml``), as fractions (accuracies) or nats (losses),
with the dataset they were measured on. The paper reports one number per row (no seeds, no
spread), on CUB-200-2011 (``cub200``) unless the row says ``dogs``. Table 2 of the paper repeats
Table 1's validation and test numbers; they are kept as printed.
"""

from __future__ import annotations

_T1 = ("train_acc", "val_acc", "test_acc")
_T3 = ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss")


def _rows(columns: tuple[str, ...], table: dict[str, tuple[float, ...]], dataset: str = "cub200") -> dict:
    return {row: {"dataset": dataset, **dict(zip(columns, values))} for row, values in table.items()}


PAPER: dict[str, dict] = {
    "table1_depth": {"source": "seed Table 1", "rows": _rows(_T1, {
        "resnet34": (0.9983, 0.3389, 0.3054), "resnet50": (0.9881, 0.3114, 0.3016),
        "resnet101": (0.9862, 0.3063, 0.2864)})},
    "table2_batch": {"source": "seed Table 2", "rows": _rows(("val_acc", "test_acc"), {
        "batch16": (0.3389, 0.3054), "batch32": (0.3114, 0.3016), "batch64": (0.3063, 0.2864)})},
    "table3_transfer": {"source": "seed Table 3", "rows": _rows(_T3, {
        "fc": (0.7573, 0.3539, 0.3254, 2.3648, 3.2990), "4+fc": (0.9998, 0.7922, 0.7745, 0.0022, 1.0270),
        "3+4+fc": (0.9998, 0.8063, 0.7865, 0.0029, 1.0113), "2+3+4+fc": (0.9998, 0.8306, 0.8124, 0.0038, 0.7661),
        "all": (0.9967, 0.8197, 0.8021, 0.0200, 0.8136)})},
    "table4_tricks": {"source": "seed Table 4", "rows": _rows(("test_acc",), {
        "baseline": (0.7485,), "geometric": (0.7814,), "cutout": (0.7356,), "mixup": (0.7654,),
        "label_smoothing": (0.7685,), "dropout": (0.7412,), "geometric+ls+mixup": (0.8054,),
        "resnext101+tricks": (0.8351,)})},
    "table5_vit_depth": {"source": "seed Tables 5-7", "rows": {
        **_rows(_T3, {"heads": (0.8309, 0.6060, 0.6116, 1.0576, 1.6118),
                      "heads+6": (0.9985, 0.8105, 0.7972, 0.0592, 0.7629),
                      "heads+12": (0.9996, 0.8189, 0.7984, 0.0088, 0.7274)}),
        **_rows(("test_acc",), {"vit_l_16": (0.7850,), "mixup+ls": (0.8019,), "mixup+ls+dropout": (0.8017,)})}},
    "table8_clip": {"source": "seed Table 8", "rows": _rows(("test_acc",), {
        "ViT-B-32": (0.4502,), "ViT-B-16": (0.5002,), "ViT-L-14-336": (0.5813,), "ViT-g-14-laion2B": (0.7408,),
        "ViT-B-32-finetuned": (0.7426,)})},
    "table9_datasets": {"source": "seed Table 9", "rows": {
        **_rows(("test_acc",), {"cub_resnext101": (0.8351,), "cub_vit_b16": (0.8019,),
                                "cub_clip_g14_zeroshot": (0.7408,)}),
        **_rows(("test_acc",), {"dogs_resnext101": (0.8756,), "dogs_vit_b16": (0.8952,),
                                "dogs_clip_g14_zeroshot": (0.7171,)}, dataset="dogs")}},
}

DATASET_NAMES = {"cub200": "CUB-200-2011", "dogs": "Stanford Dogs"}


def _dataset(metrics: dict) -> str | None:
    """The dataset a row ran on: the protocol record's, else a CLIP run's ``data`` field."""
    protocol = metrics.get("protocol") if isinstance(metrics.get("protocol"), dict) else {}
    return protocol.get("dataset") or metrics.get("data")


def paper_comparison(study: str, metrics: dict[str, dict]) -> tuple[list[str], list[list[str]], list[str]] | None:
    """(header, rows, notes) of the paper / ours / difference table of study ``study`` (a name in ``PAPER``,
    the study folder's name) over ``metrics`` (row name -> the row's metrics.json); None when the study
    has no paper numbers or none of its rows is in ``metrics``. The difference is ours - paper
    (accuracy as a fraction, loss in nats); it is left out ("n/a") for a row that ran on another
    dataset than the paper's."""
    study = PAPER.get(study)
    if study is None:
        return None
    finished = {row: metrics[row] for row in study["rows"] if row in metrics}
    if not finished:
        return None
    columns = [c for c in ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss")
               if any(c in study["rows"][row] for row in finished)]
    header = ["row", *(f"{c} {part}" for c in columns for part in ("paper", "ours", "ours - paper"))]
    rows, other = [], {}
    for row, metrics in finished.items():
        paper = study["rows"][row]
        ran_on = _dataset(metrics)
        comparable = ran_on == paper["dataset"]
        if not comparable:
            other[row] = ran_on
        cells = [row]
        for c in columns:
            ours, theirs = metrics.get(c), paper.get(c)
            have = isinstance(ours, (int, float)) and isinstance(theirs, (int, float))
            cells += [_num(theirs), _num(ours),
                      (f"{ours - theirs:+.4f}" if comparable else "n/a") if have else ""]
        rows.append(cells)
    notes = [f"Paper numbers: {study['source']}, one run per row, on "
             f"{' / '.join(sorted({DATASET_NAMES.get(r['dataset'], r['dataset']) for r in study['rows'].values()}))}."]
    if other:
        ran = ", ".join(f"{row} on {name or 'an unrecorded dataset'}" for row, name in other.items())
        notes.append(f"No difference (n/a) where a row ran on another dataset than the paper's: {ran}.")
    return header, rows, notes


def _num(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""
