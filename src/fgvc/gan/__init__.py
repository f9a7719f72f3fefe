"""Class-conditional GAN with a projection discriminator (seed sections 2.4 and 3.5).

``train_gan(config)`` writes a run directory; ``sample_dataset(run_dir, per_class, out_dir)``
turns it into a labelled image folder fgvc's ``folder`` loader reads; ``fid`` holds the
offline classifier-feature Frechet distance and true FID where available.
"""

from fgvc.gan.config import GanConfig, GanDataConfig, dump_gan_config, gan_keys, load_gan_config
from fgvc.gan.fid import (
    PenultimateFeatures,
    classifier_frechet_distance,
    extract_features,
    feature_statistics,
    frechet_distance,
    frechet_over_checkpoints,
    inception_fid,
)
from fgvc.gan.networks import Discriminator, Generator
from fgvc.gan.synthesize import (
    load_generator,
    read_meta,
    sample,
    sample_dataset,
    save_real_vs_generated,
    save_sample_grid,
)
from fgvc.gan.train import d_hinge_loss, g_hinge_loss, train_gan

__all__ = [
    "Discriminator", "GanConfig", "GanDataConfig", "Generator", "PenultimateFeatures",
    "classifier_frechet_distance", "d_hinge_loss", "dump_gan_config", "extract_features",
    "feature_statistics", "frechet_distance", "frechet_over_checkpoints", "g_hinge_loss", "gan_keys",
    "inception_fid", "load_gan_config", "load_generator", "read_meta", "sample", "sample_dataset",
    "save_real_vs_generated", "save_sample_grid", "train_gan",
]
