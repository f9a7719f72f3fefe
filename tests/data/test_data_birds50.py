"""`fgvc data birds50`: the 50 species of CUB-200-2011 with their official split, resized square, in CUB's
layout; the same species through data.classes; bad input refused with nothing written."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc.cli import main
from fgvc.data import build_dataset
from fgvc.data.birds50 import DATA_CLASSES, SPECIES
from fgvc.data.subset import parse_classes

NAMES = {cub_id: name for cub_id, name in SPECIES}
# CUB-200-2011's classes.txt, in order (ids 1-200): the reference birds50's CUB ids are checked against
CUB200 = """
    Black_footed_Albatross Laysan_Albatross Sooty_Albatross Groove_billed_Ani Crested_Auklet Least_Auklet
    Parakeet_Auklet Rhinoceros_Auklet Brewer_Blackbird Red_winged_Blackbird Rusty_Blackbird
    Yellow_headed_Blackbird Bobolink Indigo_Bunting Lazuli_Bunting Painted_Bunting Cardinal Spotted_Catbird
    Gray_Catbird Yellow_breasted_Chat Eastern_Towhee Chuck_will_Widow Brandt_Cormorant Red_faced_Cormorant
    Pelagic_Cormorant Bronzed_Cowbird Shiny_Cowbird Brown_Creeper American_Crow Fish_Crow Black_billed_Cuckoo
    Mangrove_Cuckoo Yellow_billed_Cuckoo Gray_crowned_Rosy_Finch Purple_Finch Northern_Flicker
    Acadian_Flycatcher Great_Crested_Flycatcher Least_Flycatcher Olive_sided_Flycatcher
    Scissor_tailed_Flycatcher Vermilion_Flycatcher Yellow_bellied_Flycatcher Frigatebird Northern_Fulmar
    Gadwall American_Goldfinch European_Goldfinch Boat_tailed_Grackle Eared_Grebe Horned_Grebe
    Pied_billed_Grebe Western_Grebe Blue_Grosbeak Evening_Grosbeak Pine_Grosbeak Rose_breasted_Grosbeak
    Pigeon_Guillemot California_Gull Glaucous_winged_Gull Heermann_Gull Herring_Gull Ivory_Gull
    Ring_billed_Gull Slaty_backed_Gull Western_Gull Anna_Hummingbird Ruby_throated_Hummingbird
    Rufous_Hummingbird Green_Violetear Long_tailed_Jaeger Pomarine_Jaeger Blue_Jay Florida_Jay Green_Jay
    Dark_eyed_Junco Tropical_Kingbird Gray_Kingbird Belted_Kingfisher Green_Kingfisher Pied_Kingfisher
    Ringed_Kingfisher White_breasted_Kingfisher Red_legged_Kittiwake Horned_Lark Pacific_Loon Mallard
    Western_Meadowlark Hooded_Merganser Red_breasted_Merganser Mockingbird Nighthawk Clark_Nutcracker
    White_breasted_Nuthatch Baltimore_Oriole Hooded_Oriole Orchard_Oriole Scott_Oriole Ovenbird Brown_Pelican
    White_Pelican Western_Wood_Pewee Sayornis American_Pipit Whip_poor_Will Horned_Puffin Common_Raven
    White_necked_Raven American_Redstart Geococcyx Loggerhead_Shrike Great_Grey_Shrike Baird_Sparrow
    Black_throated_Sparrow Brewer_Sparrow Chipping_Sparrow Clay_colored_Sparrow House_Sparrow Field_Sparrow
    Fox_Sparrow Grasshopper_Sparrow Harris_Sparrow Henslow_Sparrow Le_Conte_Sparrow Lincoln_Sparrow
    Nelson_Sharp_tailed_Sparrow Savannah_Sparrow Seaside_Sparrow Song_Sparrow Tree_Sparrow Vesper_Sparrow
    White_crowned_Sparrow White_throated_Sparrow Cape_Glossy_Starling Bank_Swallow Barn_Swallow Cliff_Swallow
    Tree_Swallow Scarlet_Tanager Summer_Tanager Artic_Tern Black_Tern Caspian_Tern Common_Tern Elegant_Tern
    Forsters_Tern Least_Tern Green_tailed_Towhee Brown_Thrasher Sage_Thrasher Black_capped_Vireo
    Blue_headed_Vireo Philadelphia_Vireo Red_eyed_Vireo Warbling_Vireo White_eyed_Vireo Yellow_throated_Vireo
    Bay_breasted_Warbler Black_and_white_Warbler Black_throated_Blue_Warbler Blue_winged_Warbler
    Canada_Warbler Cape_May_Warbler Cerulean_Warbler Chestnut_sided_Warbler Golden_winged_Warbler
    Hooded_Warbler Kentucky_Warbler Magnolia_Warbler Mourning_Warbler Myrtle_Warbler Nashville_Warbler
    Orange_crowned_Warbler Palm_Warbler Pine_Warbler Prairie_Warbler Prothonotary_Warbler Swainson_Warbler
    Tennessee_Warbler Wilson_Warbler Worm_eating_Warbler Yellow_Warbler Northern_Waterthrush
    Louisiana_Waterthrush Bohemian_Waxwing Cedar_Waxwing American_Three_toed_Woodpecker Pileated_Woodpecker
    Red_bellied_Woodpecker Red_cockaded_Woodpecker Red_headed_Woodpecker Downy_Woodpecker Bewick_Wren
    Cactus_Wren Carolina_Wren House_Wren Marsh_Wren Rock_Wren Winter_Wren Common_Yellowthroat
""".split()


def write_cub(root: Path, skip: int | None = None) -> Path:
    """A CUB-200-2011 tree with its 200 classes (class id ``skip`` named ``Missing``), two non-square images
    each: one train, one test."""
    base = root / "CUB_200_2011"
    rng = np.random.default_rng(0)
    images, labels, split, names = [], [], [], []
    n = 0
    for c, real in enumerate(CUB200, 1):
        name = "Missing" if c == skip else real
        folder = f"{c:03d}.{name}"
        names.append(f"{c} {folder}")
        for k, is_train in enumerate((1, 0)):
            n += 1
            rel = f"{folder}/{name}_{k:04d}_{n}.jpg"
            (base / "images" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)).save(base / "images" / rel, quality=95)
            images.append(f"{n} {rel}")
            labels.append(f"{n} {c}")
            split.append(f"{n} {is_train}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("classes.txt", names)):
        (base / name).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    return write_cub(tmp_path_factory.mktemp("cub") / "cub")


def test_birds50_keeps_the_50_species_their_split_and_resizes_square(cub, tmp_path, capsys):
    out = tmp_path / "birds50"
    assert main(["data", "birds50", "--cub", str(cub), "--out", str(out), "--size", "16", "--quiet"]) == 0
    assert "birds50:" not in capsys.readouterr().err  # --quiet: no progress bar
    full = {s: build_dataset("cub200", cub, s, val_fraction=0.0) for s in ("train", "test")}
    for split in ("train", "test"):
        made = build_dataset("cub200", out, split, val_fraction=0.0)
        assert made.class_names == [f"{k + 1:03d}.{name}" for k, (_, name) in enumerate(SPECIES)]
        # each species keeps exactly its own images of that split, under the species' new label
        src = full[split]
        expected = sorted((NAMES[s.label + 1], s.path.stem) for s in src.samples if s.label + 1 in NAMES)
        got = sorted((made.class_names[s.label].split(".", 1)[1], s.path.stem) for s in made.samples)
        assert got == expected and len(got) == 50
        for s in made.samples[:3]:
            with Image.open(s.path) as im:
                assert im.size == (16, 16)
            source = next(p.path for p in src.samples if p.path.stem == s.path.stem)
            resized = np.asarray(Image.open(source).convert("RGB").resize((16, 16), Image.BICUBIC), dtype=float)
            assert np.abs(np.asarray(Image.open(s.path).convert("RGB"), dtype=float) - resized).mean() < 12


def test_without_quiet_the_build_shows_its_progress(cub, tmp_path, capsys):
    assert main(["data", "birds50", "--cub", str(cub), "--out", str(tmp_path / "b"), "--size", "8"]) == 0
    assert "birds50:" in capsys.readouterr().err  # tqdm's bar, "birds50: 100%|..."


def test_species_sit_at_their_cub_ids():
    assert len(CUB200) == 200 and len(SPECIES) == 50
    assert [CUB200[cub_id - 1] for cub_id, _ in SPECIES] == [name for _, name in SPECIES]


def test_data_classes_names_the_same_species_on_the_full_dataset(cub):
    full = build_dataset("cub200", cub, "test", val_fraction=0.0)
    chosen = parse_classes(DATA_CLASSES, len(full.class_names))
    assert [full.class_names[i].split(".", 1)[1] for i in chosen] == [name for _, name in SPECIES]


def test_refuses_a_used_folder_and_an_incomplete_cub(cub, tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert main(["data", "birds50", "--cub", str(cub), "--out", str(used), "--quiet"]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    partial = write_cub(tmp_path / "partial", skip=96)  # no Hooded Oriole
    out = tmp_path / "b50"
    assert main(["data", "birds50", "--cub", str(partial), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has no class 'Hooded_Oriole'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
