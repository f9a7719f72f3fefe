"""Class names as CLIP should read them, prompt templates, and per-class descriptions.

Cleaning rule for underscores (CUB writes both spaces and hyphens as ``_``): in a name
with CUB's ``NNN.`` prefix, an underscore before a lowercase letter is a hyphen and any
other underscore a space, because CUB capitalises every word except the second part of a
hyphenated compound (``Black_footed_Albatross`` -> ``Black-footed Albatross``,
``Black_and_white_Warbler`` -> ``Black-and-white Warbler``). Names without that prefix
(Stanford Dogs, folders) keep their own hyphens and every underscore is a space
(``Blenheim_spaniel`` -> ``Blenheim spaniel``). Known misses: CUB's
``Chuck_will_Widow`` becomes ``Chuck-will Widow``; apostrophes CUB dropped stay dropped.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from open_clip import OPENAI_IMAGENET_TEMPLATES

from fgvc.errors import UserError

_CUB_PREFIX = re.compile(r"^\d+\.")
_WORDNET_PREFIX = re.compile(r"^n\d{8}-")  # Stanford Dogs folders: n02085620-Chihuahua

TEMPLATES: dict[str, list[str]] = {
    # the seed paper's single prompt (section 3.7)
    "seed": ["a photo of a {}."],
    # CLIP's domain prompts (Radford et al. 2021, Birdsnap / Stanford Dogs style)
    "birds": ["a photo of a {}, a type of bird."],
    "dogs": ["a photo of a {}, a type of dog."],
    # CLIP's prompts for FGVC-Aircraft, Stanford Cars and Flowers-102 (Radford et al. 2021, their notebook)
    "aircraft": ["a photo of a {}, a type of aircraft."],
    "cars": ["a photo of a {}, a type of car."],
    "flowers": ["a photo of a {}, a type of flower."],
    # the 7 ImageNet templates CLIP's authors found best as an ensemble
    "ensemble": [
        "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
        "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
    ],
    "birds_ensemble": [
        "a photo of a {}, a type of bird.", "a close-up photo of a {}, a type of bird.",
        "a photo of the {}, a bird.", "a cropped photo of a {}, a type of bird.",
        "a blurry photo of a {}, a type of bird.", "a photo of a {} bird in the wild.",
    ],
    "dogs_ensemble": [
        "a photo of a {}, a type of dog.", "a close-up photo of a {}, a type of dog.",
        "a photo of the {}, a dog breed.", "a cropped photo of a {}, a type of dog.",
        "a blurry photo of a {}, a type of dog.", "a photo of my {}, a type of dog.",
    ],
    "aircraft_ensemble": ["a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."],
    "cars_ensemble": [  # CLIP's 8 Stanford Cars templates
        "a photo of a {}.", "a photo of the {}.", "a photo of my {}.", "i love my {}!",
        "a photo of my dirty {}.", "a photo of my clean {}.", "a photo of my new {}.", "a photo of my old {}.",
    ],
    # CLIP's full 80-template ImageNet set, as shipped with open_clip
    "imagenet80": [t("{}") for t in OPENAI_IMAGENET_TEMPLATES],
}


def clean_class_name(name: str, style: str = "auto") -> str:
    """``001.Black_footed_Albatross`` -> ``Black-footed Albatross``; ``n02085620-Chihuahua`` -> ``Chihuahua``.

    ``style``: ``cub`` (underscore before a lowercase letter is a hyphen), ``plain``
    (every underscore is a space) or ``auto`` (``cub`` when the name has CUB's number prefix).
    """
    if style not in ("auto", "cub", "plain"):
        raise ValueError(f"style must be auto, cub or plain, not {style!r}")
    name = name.strip()
    if style == "auto":
        style = "cub" if _CUB_PREFIX.match(name) else "plain"
    name = _WORDNET_PREFIX.sub("", _CUB_PREFIX.sub("", name))
    if style == "cub":
        name = re.sub(r"_(?=[a-z])", "-", name)
    return " ".join(name.replace("_", " ").split())


CUB_LIKE = ("cub200", "synthbirds")  # datasets whose class names follow CUB's underscore convention


def prompt_names(class_names: list[str], dataset_name: str = "") -> list[str]:
    """The dataset's class names cleaned for prompts, with CUB's rule for CUB-like datasets."""
    style = "cub" if dataset_name in CUB_LIKE else "auto"
    return [clean_class_name(n, style) for n in class_names]


def _check_template(template: str, where: str) -> str:
    if "{}" not in template:
        raise UserError(f"template {template!r} ({where}) has no {{}} for the class name; add one, "
                        "e.g. 'a photo of a {}.'")
    try:
        template.format("x")
    except (IndexError, KeyError, ValueError):
        raise UserError(f"template {template!r} ({where}) has braces other than one {{}}; "
                        "write literal braces as {{ and }}") from None
    return template


def load_templates(path: str | Path) -> list[str]:
    """Templates from a UTF-8 text file: one per line, each with ``{}``; blank lines and ``#`` lines skipped."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"template file {path} does not exist; pass a template set name or an existing file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"template file {path} cannot be read ({e.__class__.__name__}); save it as UTF-8 text") from None
    templates = [
        _check_template(line.strip(), f"{path} line {i}")
        for i, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not templates:
        raise UserError(f"template file {path} holds no templates; write one per line, e.g. 'a photo of a {{}}.'")
    return templates


def resolve_templates(spec: str | Path | list[str]) -> list[str]:
    """Templates from a set name (``birds``), names joined by ``+``, a file, one literal template, or a list."""
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise UserError("the template list is empty; give at least one template with {}")
        return [_check_template(t, "template list") for t in spec]
    spec = str(spec)
    if spec in TEMPLATES:
        return list(TEMPLATES[spec])
    if "+" in spec and all(part in TEMPLATES for part in spec.split("+")):
        merged = [t for part in spec.split("+") for t in TEMPLATES[part]]
        return list(dict.fromkeys(merged))  # de-duplicated, order kept
    if "{}" in spec and not Path(spec).expanduser().is_file():
        return [_check_template(spec, "given on the command line")]
    if Path(spec).expanduser().is_file() or spec.endswith(".txt") or "/" in spec:
        return load_templates(spec)
    raise UserError(f"unknown template set {spec!r}; choose one of {', '.join(TEMPLATES)}, "
                    "a text file of templates, or one template containing {}")


def load_descriptions(path: str | Path) -> dict[str, list[str]]:
    """A JSON file ``{class name: [description, ...]}``; a description may use ``{}`` for the class name."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"description file {path} does not exist; pass an existing JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"description file {path} is not valid JSON ({e.__class__.__name__}); "
                        'write {"class name": ["description", ...]}') from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(d, str) for d in v) for v in data.values()
    ):
        raise UserError(f'description file {path} must map each class name to a list of strings, '
                        'e.g. {"Laysan Albatross": ["a white seabird with dark wings"]}')
    return {str(k): [d.strip() for d in v if d.strip()] for k, v in data.items()}


def match_descriptions(descriptions: dict[str, list[str]], class_names: list[str],
                       dataset_name: str = "") -> list[list[str]]:
    """Per class (in ``class_names`` order), its descriptions: keys match raw or cleaned names, any case."""
    by_key = {_key(k): v for k, v in descriptions.items()}
    cleaned = prompt_names(class_names, dataset_name)
    matched = [by_key.get(_key(raw), by_key.get(_key(clean), [])) for raw, clean in zip(class_names, cleaned)]
    if descriptions and not any(matched):
        example = cleaned[0] if cleaned else "?"
        raise UserError(f"no class name in the description file matches the dataset's classes "
                        f"(e.g. {example!r}); key the file by class name")
    return matched


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).lower()


def class_prompts(name: str, templates: list[str], descriptions: list[str] | None = None) -> list[str]:
    """Every prompt for one class: each template with the name, then each description (``{}`` -> name)."""
    prompts = [t.format(name) for t in templates]
    for d in descriptions or []:
        prompts.append(d.replace("{}", name))
    return prompts


class PromptTruncated(UserWarning):
    """A prompt longer than the text encoder's context: CLIP reads only its first tokens."""


def token_count(tokenizer, text: str) -> int | None:
    """Tokens ``text`` takes, start and end tokens included; None for a tokenizer that cannot tell."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):  # open_clip's SimpleTokenizer
        return len(tokenizer.encode(text)) + 2
    hf = getattr(tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a Hugging Face one
    if callable(hf):
        return len(hf(text)["input_ids"])
    return None


def check_prompt_lengths(tokenizer, class_names: list[str], templates: list[str],
                         descriptions: list[list[str]] | None = None) -> None:
    """Refuse prompts whose class name falls beyond the tokenizer's context; warn once for others that are cut.

    open_clip's tokenizers cut every prompt to ``context_length`` tokens (77 for CLIP)
    without a word, so a long description ending in "... known as the {}" would never
    show the class name to the text encoder.
    """
    context = getattr(tokenizer, "context_length", None) or 77
    if token_count(tokenizer, "a") is None:
        return
    cut, name_lost = [], []
    for c, name in enumerate(class_names):
        pieces = [(f"template {t!r}", t.format(name), t.split("{}")[0].replace("{{", "{") + name) for t in templates]
        pieces += [(f"description {i + 1}", d.replace("{}", name), d.split("{}")[0] + name if "{}" in d else None)
                   for i, d in enumerate((descriptions[c] if descriptions else None) or [])]
        for where, prompt, through_name in pieces:
            n = token_count(tokenizer, prompt)
            if n <= context:
                continue
            cut.append((name, where, n))
            if through_name is not None and token_count(tokenizer, through_name) > context:
                name_lost.append((name, where, n))
    if name_lost:
        name, where, n = name_lost[0]
        more = f" (and {len(name_lost) - 1} more prompts)" if len(name_lost) > 1 else ""
        raise UserError(f"the prompt for class {name!r} from {where} has {n} tokens, more than the text "
                        f"encoder's {context}, and the class name comes after token {context}, so it would be "
                        f"cut off unseen{more}; shorten the text before {{}} or move {{}} nearer the start")
    if cut:
        name, where, n = cut[0]
        more = f" (and {len(cut) - 1} more prompts)" if len(cut) > 1 else ""
        warnings.warn(f"the prompt for class {name!r} from {where} has {n} tokens; the text encoder reads only "
                      f"the first {context}, so its end is cut off{more}; shorten it to keep all of it",
                      PromptTruncated, stacklevel=3)
