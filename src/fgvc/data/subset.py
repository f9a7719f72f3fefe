"""Train on a subset of a dataset's classes (``data.classes``), e.g. half the species, the rest unknown.

``data.classes`` names the classes a run uses, by 0-based index in the dataset's own class
order (CUB's ``classes.txt`` order, sorted folder names for a folder dataset):

- ``""`` (default): every class;
- ``first-half`` / ``second-half``: classes ``0 .. n//2 - 1`` / ``n//2 .. n-1`` (of n classes; with an
  odd n the second half has one more);
- a comma list of indices and inclusive ranges, e.g. ``0-24`` or ``0,3,7-9``.

The chosen classes keep their names and order and are renumbered ``0 .. k-1`` (so a run's
``classes.json`` and its head have k entries); every split is filtered the same way, after
the validation images were drawn (stratified per class, so the draw does not depend on the
subset). ``heldout_classes`` gives the complement: the classes a run never saw, whose test
images ``fgvc eval RUN --unknown heldout`` scores as unknown (fgvc.openset).
"""

from __future__ import annotations

from fgvc.config import CLASS_LIST
from fgvc.errors import UserError

HALVES = ("first-half", "second-half")


def valid_syntax(spec: str) -> bool:
    """Whether ``spec`` is "", first-half, second-half or a comma list of indices / ranges (range check later)."""
    return spec.strip() in ("", *HALVES) or bool(CLASS_LIST.fullmatch(spec))


def parse_classes(spec: str | list[int], n: int, where: str = "data.classes") -> list[int] | None:
    """Sorted 0-based class indices that ``spec`` names in a dataset of ``n`` classes, or None for every class.

    A list of ints is taken as it is (checked). Raises UserError (naming ``where``) for a bad syntax, an index
    outside ``0 .. n-1``, a reversed range, a repeated class or fewer than two classes."""
    if isinstance(spec, (list, tuple)):
        indices = [int(i) for i in spec]
    else:
        spec = spec.strip()
        if not spec:
            return None
        if spec in HALVES:
            indices = list(range(n // 2)) if spec == "first-half" else list(range(n // 2, n))
        elif not valid_syntax(spec):
            raise UserError(f"{where}={spec!r} is not a class list; use first-half, second-half or 0-based indices "
                            "and ranges such as 0-24 or 0,3,7-9")
        else:
            indices = []
            for part in spec.split(","):
                lo, _, hi = part.partition("-")
                lo, hi = int(lo), int(hi or lo)
                if hi < lo:
                    raise UserError(f"{where}: range {part.strip()!r} is reversed; write the smaller index first")
                indices += range(lo, hi + 1)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise UserError(f"{where}: class index {bad[0]} is out of range; the dataset has {n} classes, "
                        f"indices 0-{n - 1}")
    if len(set(indices)) != len(indices):
        raise UserError(f"{where}: class {sorted(i for i in indices if indices.count(i) > 1)[0]} is named twice; "
                        "name each class once")
    if len(indices) < 2:
        raise UserError(f"{where} names {len(indices)} class(es) of {n}; a classifier needs at least 2")
    return sorted(indices)


def heldout_classes(spec: str | list[int], n: int) -> list[int]:
    """The classes of ``0 .. n-1`` that ``spec`` (a run's data.classes) leaves out, sorted; UserError when it
    leaves none out (a run trained on every class has no held-out classes)."""
    chosen = parse_classes(spec, n) or list(range(n))
    rest = [i for i in range(n) if i not in set(chosen)]
    if not rest:
        raise UserError("this run trained on every class of its dataset (data.classes is empty), so no class is "
                        "held out; train with data.classes=first-half (for example), or pass --unknown DIR")
    return rest


def select_classes(dataset, indices: list[int] | None):
    """``dataset`` (a FineGrainedDataset) keeping only the samples of ``indices`` (sorted, from parse_classes),
    relabelled ``0 .. k-1`` in that order, class names kept; the same object, changed in place. None: unchanged."""
    if indices is None:
        return dataset
    from dataclasses import replace

    new_label = {old: new for new, old in enumerate(indices)}
    dataset.samples = [replace(s, label=new_label[s.label]) for s in dataset.samples if s.label in new_label]
    dataset.class_names = [dataset.class_names[i] for i in indices]
    return dataset


__all__ = ["HALVES", "heldout_classes", "parse_classes", "select_classes", "valid_syntax"]
