"""CLIP's domain prompts for the benchmarks beside CUB and Dogs, as `fgvc zeroshot --templates NAME` resolves them."""

from fgvc.clip.prompts import prompt_names, resolve_templates


def test_clip_domain_templates_for_aircraft_cars_and_flowers():
    assert resolve_templates("aircraft") == ["a photo of a {}, a type of aircraft."]
    assert resolve_templates("aircraft_ensemble")[1] == "a photo of the {}, a type of aircraft."
    assert resolve_templates("cars") == ["a photo of a {}, a type of car."]
    assert "a photo of my {}." in resolve_templates("cars_ensemble") and len(resolve_templates("cars_ensemble")) == 8
    assert resolve_templates("flowers") == ["a photo of a {}, a type of flower."]


def test_benchmark_class_names_reach_prompts_unchanged():
    names = ["F-16A/B", "Ram C/V Cargo Van Minivan 2012", "Anna's Hummingbird (Female/juvenile)", "black-eyed susan"]
    assert prompt_names(names, "aircraft") == names
