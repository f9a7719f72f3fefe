import json

import pytest

from fgvc.clip.prompts import (
    TEMPLATES,
    class_prompts,
    clean_class_name,
    load_descriptions,
    load_templates,
    match_descriptions,
    prompt_names,
    resolve_templates,
)
from fgvc.errors import UserError


@pytest.mark.parametrize("raw, clean", [
    ("001.Black_footed_Albatross", "Black-footed Albatross"),
    ("020.Black_and_white_Warbler", "Black-and-white Warbler"),
    ("023.Brandt_Cormorant", "Brandt Cormorant"),
    ("139.Scarlet_Tanager", "Scarlet Tanager"),
    ("140.Le_Conte_Sparrow", "Le Conte Sparrow"),
    ("n02085620-Chihuahua", "Chihuahua"),
    ("n02086646-Blenheim_spaniel", "Blenheim spaniel"),
    ("n02100236-German_short-haired_pointer", "German short-haired pointer"),
    ("n02106382-Bouvier_des_Flandres", "Bouvier des Flandres"),
    ("Blenheim_spaniel", "Blenheim spaniel"),
    ("  golden   retriever ", "golden retriever"),
])
def test_clean_class_name(raw, clean):
    assert clean_class_name(raw) == clean


def test_cub_rule_applies_to_cub_datasets_without_the_number_prefix():
    assert prompt_names(["Red_winged_Blackbird"], "cub200") == ["Red-winged Blackbird"]
    assert prompt_names(["Red_winged_Blackbird"], "folder") == ["Red winged Blackbird"]


def test_every_shipped_template_takes_a_class_name():
    assert TEMPLATES["seed"] == ["a photo of a {}."]
    assert TEMPLATES["birds"] == ["a photo of a {}, a type of bird."]
    assert TEMPLATES["dogs"] == ["a photo of a {}, a type of dog."]
    for name, templates in TEMPLATES.items():
        assert templates, name
        assert all(t.format("X").count("X") == 1 for t in templates), name


def test_load_templates_skips_blank_and_comment_lines(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("# bird prompts\na photo of a {}.\n\n  a {} in the wild.  \n")
    assert load_templates(f) == ["a photo of a {}.", "a {} in the wild."]


def test_template_without_placeholder_names_file_and_line(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("a photo of a {}.\na photo of a bird.\n")
    with pytest.raises(UserError, match=r"t\.txt line 2"):
        load_templates(f)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_empty_template_file_is_an_error(tmp_path, text):
    f = tmp_path / "t.txt"
    f.write_text(text)
    with pytest.raises(UserError, match="no templates"):
        load_templates(f)


def test_template_with_other_braces_is_an_error(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("a {} photo of {0}.\n")
    with pytest.raises(UserError, match="braces"):
        load_templates(f)


def test_missing_template_file_is_an_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_templates(str(tmp_path / "nope.txt"))


def test_resolve_templates_by_name_join_literal_and_unknown():
    assert resolve_templates("birds") == TEMPLATES["birds"]
    joined = resolve_templates("seed+birds_ensemble")
    assert joined[0] == "a photo of a {}." and len(joined) == 1 + len(TEMPLATES["birds_ensemble"])
    assert resolve_templates("a {} on a branch.") == ["a {} on a branch."]
    with pytest.raises(UserError, match="birds"):
        resolve_templates("bird")


def test_descriptions_match_raw_or_clean_names_and_use_placeholder(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps({"black-footed albatross": ["a {} soaring", "dark plumage"]}))
    matched = match_descriptions(load_descriptions(f), ["001.Black_footed_Albatross", "002.Laysan_Albatross"])
    assert matched == [["a {} soaring", "dark plumage"], []]
    assert class_prompts("Black-footed Albatross", ["a photo of a {}."], matched[0]) == [
        "a photo of a Black-footed Albatross.", "a Black-footed Albatross soaring", "dark plumage"]


def test_description_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_descriptions(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"A": "a string, not a list"}))
    with pytest.raises(UserError, match="list of strings"):
        load_descriptions(wrong)
    with pytest.raises(UserError, match="matches"):
        match_descriptions({"Unrelated": ["x"]}, ["001.Black_footed_Albatross"])
