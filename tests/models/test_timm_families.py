"""Every timm model family, one small model each: fgvc builds it with a head for 3 classes and trains a
step at 64 px on the CPU (a family that needs another size at the size it names), or refuses it with the
sentence docs/models.md gives. A family added to timm fails ``test_every_timm_family_is_swept`` until it is
swept here. The table was made by building every model of each family on the meta device and taking the
one with the fewest parameters."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import _registry

from fgvc.errors import UserError
from fgvc.models import create_model

# family (timm's module) -> (its smallest model, image size)
TRAINED = {
    "beit": ("beit_base_patch16_224", 64),  # 85.8 M parameters
    "byoanet": ("halonet_h1", 256),  # 7.6 M parameters
    "byobnet": ("test_byobnet", 64),  # 0.2 M parameters
    "cait": ("cait_xxs24_224", 64),  # 11.8 M parameters
    "coat": ("coat_tiny", 64),  # 5.3 M parameters
    "convit": ("convit_tiny", 64),  # 5.5 M parameters
    "convmixer": ("convmixer_768_32", 64),  # 20.3 M parameters
    "convnext": ("test_convnext", 64),  # 0.2 M parameters
    "cpubone": ("cpubone_nano", 64),  # 4.9 M parameters
    "crossvit": ("crossvit_tiny_240", 240),  # 6.7 M parameters
    "csatv2": ("csatv2", 64),  # 10.7 M parameters
    "cspnet": ("cs3darknet_focus_s", 64),  # 2.8 M parameters
    "cspnext": ("cspnext_tiny", 64),  # 2.3 M parameters
    "davit": ("davit_tiny", 64),  # 27.6 M parameters
    "deepseek_vit": ("deepseek_vit_412m", 56),  # 411.8 M parameters
    "deit": ("deit_tiny_patch16_224", 64),  # 5.5 M parameters
    "densenet": ("densenet121", 64),  # 7.0 M parameters
    "dla": ("dla46x_c", 64),  # 0.8 M parameters
    "dpn": ("dpn48b", 64),  # 8.3 M parameters
    "edgenext": ("edgenext_xx_small", 64),  # 1.2 M parameters
    "efficientnet": ("test_efficientnet", 64),  # 0.1 M parameters
    "efficientvim": ("efficientvim_m1", 64),  # 5.7 M parameters
    "efficientvit_mit": ("efficientvit_b0", 64),  # 2.1 M parameters
    "efficientvit_msra": ("efficientvit_m0", 64),  # 2.2 M parameters
    "eva": ("vit_tiny_patch16_dinov3_qkvb", 64),  # 5.5 M parameters
    "fasternet": ("fasternet_t0", 64),  # 2.6 M parameters
    "fastvit": ("fastvit_t8", 64),  # 3.3 M parameters
    "focalnet": ("focalnet_tiny_srf", 64),  # 27.7 M parameters
    "gcvit": ("gcvit_xxtiny", 64),  # 11.5 M parameters
    "gemma4_vit": ("gemma4_vit_167m", 64),  # 167.0 M parameters
    "ghostnet": ("ghostnet_050", 64),  # 1.3 M parameters
    "hardcorenas": ("hardcorenas_b", 64),  # 3.9 M parameters
    "hgnet": ("hgnetv2_b0", 64),  # 4.0 M parameters
    "hiera": ("hiera_tiny_224", 64),  # 27.1 M parameters
    "hieradet_sam2": ("sam2_hiera_tiny", 64),  # 26.9 M parameters
    "hrnet": ("hrnet_w18_small", 64),  # 11.1 M parameters
    "iformer": ("iformer_t", 64),  # 2.6 M parameters
    "inception_next": ("inception_next_atto", 64),  # 3.2 M parameters
    "inception_resnet_v2": ("inception_resnet_v2", 96),  # 54.3 M parameters
    "inception_v3": ("inception_v3", 96),  # 21.8 M parameters
    "inception_v4": ("inception_v4", 96),  # 41.1 M parameters
    "lcnetv2": ("lcnetv2_small", 64),  # 2.9 M parameters
    "lowformer": ("lowformer_b0", 64),  # 12.5 M parameters
    "mambaout": ("test_mambaout", 64),  # 0.2 M parameters
    "maxxvit": ("test_coatnet", 64),  # 0.4 M parameters
    "metaformer": ("poolformerv2_s12", 64),  # 11.4 M parameters
    "mlp_mixer": ("gmlp_ti16_224", 64),  # 5.7 M parameters
    "mobilenetv3": ("mobilenetv3_small_050", 64),  # 0.6 M parameters
    "mobilenetv5": ("mobilenetv5_base", 64),  # 80.6 M parameters
    "mobilevit": ("mobilevit_xxs", 64),  # 1.0 M parameters
    "mvitv2": ("mvitv2_tiny", 64),  # 23.4 M parameters
    "naflexvit": ("naflexvit_base_patch16_gap", 64),  # 85.9 M parameters
    "nasnet": ("nasnetalarge", 64),  # 84.7 M parameters
    "nest": ("nest_tiny", 64),  # 16.7 M parameters
    "nextvit": ("nextvit_small", 64),  # 30.7 M parameters
    "nfnet": ("test_nfnet", 64),  # 0.2 M parameters
    "pit": ("pit_ti_224", 64),  # 4.6 M parameters
    "pnasnet": ("pnasnet5large", 64),  # 81.7 M parameters
    "pvt_v2": ("pvt_v2_b0", 64),  # 3.4 M parameters
    "qwen3_vit": ("qwen3_vit_88m", 64),  # 87.4 M parameters
    "rdnet": ("rdnet_tiny", 64),  # 22.8 M parameters
    "regnet": ("regnetx_002", 64),  # 2.3 M parameters
    "repghost": ("repghostnet_050", 64),  # 1.0 M parameters
    "repvit": ("repvit_m1", 64),  # 4.7 M parameters
    "res2net": ("res2next50", 64),  # 22.6 M parameters
    "resnest": ("resnest14d", 64),  # 8.6 M parameters
    "resnet": ("test_resnet", 64),  # 0.4 M parameters
    "resnetv2": ("resnetv2_18", 64),  # 11.2 M parameters
    "rexnet": ("rexnet_100", 64),  # 3.5 M parameters
    "selecsls": ("selecsls42", 64),  # 29.1 M parameters
    "senet": ("legacy_seresnet18", 64),  # 11.3 M parameters
    "sequencer": ("sequencer2d_s", 64),  # 27.3 M parameters
    "shvit": ("shvit_s1", 64),  # 6.0 M parameters
    "sknet": ("skresnet18", 64),  # 11.4 M parameters
    "starnet": ("starnet_s050", 64),  # 0.4 M parameters
    "swin_transformer": ("swin_tiny_patch4_window7_224", 64),  # 27.5 M parameters
    "swin_transformer_v2": ("swinv2_tiny_window8_256", 64),  # 27.6 M parameters
    "swin_transformer_v2_cr": ("swinv2_cr_tiny_224", 64),  # 27.6 M parameters
    "tiny_vit": ("tiny_vit_5m_224", 64),  # 5.1 M parameters
    "tnt": ("tnt_s_legacy_patch16_224", 64),  # 23.4 M parameters
    "tresnet": ("tresnet_m", 64),  # 29.3 M parameters
    "twins": ("twins_svt_small", 64),  # 23.5 M parameters
    "vgg": ("vgg11", 64),  # 128.8 M parameters
    "visformer": ("visformer_tiny", 64),  # 9.9 M parameters
    "vision_transformer": ("test_vit", 64),  # 0.3 M parameters
    "vision_transformer_hybrid": ("vit_tiny_r_s16_p8_224", 64),  # 6.1 M parameters
    "vision_transformer_relpos": ("test_vit_relpos", 64),  # 0.8 M parameters
    "vision_transformer_sam": ("samvit_base_patch16_224", 64),  # 85.7 M parameters
    "vitamin": ("vitamin_small_224", 64),  # 21.9 M parameters
    "volo": ("volo_d1_224", 64),  # 25.9 M parameters
    "vovnet": ("ese_vovnet19b_slim_dw", 64),  # 1.4 M parameters
    "xception": ("legacy_xception", 64),  # 20.8 M parameters
    "xception_aligned": ("xception41p", 64),  # 24.9 M parameters
    "xcit": ("xcit_nano_12_p8_224", 64),  # 2.9 M parameters
}
# family -> (model, the words of fgvc's refusal): two classifier heads (DeiT-style distillation, averaged at
# inference) where fgvc trains one
REFUSED = {
    "efficientformer": ("efficientformer_l1", "2 classifier heads"),
    "efficientformer_v2": ("efficientformerv2_s0", "2 classifier heads"),
    "levit": ("levit_128", "2 classifier heads"),
    "swiftformer": ("swiftformer_xs", "2 classifier heads"),
}


def _families() -> set[str]:
    return {_registry._model_to_module[n] for n in timm.list_models()}


def test_every_timm_family_is_swept():
    missing = _families() - set(TRAINED) - set(REFUSED)
    assert not missing, f"timm families not swept yet: {sorted(missing)}"


@pytest.mark.slow  # 94 models, up to 412 M parameters: about 80 s on 2 CPU cores
@pytest.mark.parametrize("family", sorted(TRAINED))
def test_one_model_of_the_family_trains_a_step(family):
    name, size = TRAINED[family]
    torch.manual_seed(0)
    model = create_model(name, 3, image_size=size).train()
    logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == (2, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert model.head.out_features == 3 and model.head.weight.grad is not None and model.head.weight.grad.any()


@pytest.mark.parametrize("family", sorted(REFUSED))
def test_a_refused_family_is_one_sentence_saying_why(family):
    name, words = REFUSED[family]
    with pytest.raises(UserError, match=words):
        create_model(name, 3, image_size=64)
