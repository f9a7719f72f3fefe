"""The argument table of ``fgvc data`` (prepare, birds50, synth, info, audit), one of ``fgvc.cli``'s groups.

Arguments only: the handlers are ``fgvc.commands``'s, and ``fgvc.cli.build_parser`` adds the defaults to
every option's help after all groups are built.
"""

from __future__ import annotations

import argparse


def add_data_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``fgvc data`` and its actions to ``sub`` (the top-level subcommands); returns its parser."""
    data = sub.add_parser("data", help="get, generate and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prep = dsub.add_parser("prepare", help="download, verify and extract cub200, dogs, aircraft or flowers102 "
                                           "(for cars and nabirds: where to put the files)")
    prep.add_argument("name", choices=["cub200", "dogs", "aircraft", "flowers102", "cars", "nabirds"])
    prep.add_argument("--root", default="data", help="folder to extract into (default: data)")
    prep.add_argument("--url", help="mirror URL (for dogs and flowers102: the base URL of their three files)")
    prep.add_argument("--md5", help="expected md5 of the archive (overrides the official one; aircraft has none)")
    b50 = dsub.add_parser("birds50", help="make birds50 (50 CUB-200-2011 species at 227 px) from CUB-200-2011",
                          description="Write birds50, the 50-species, 227-px subset of CUB-200-2011 that docs/ "
                                      "measure on, from a prepared CUB-200-2011 (`fgvc data prepare cub200`): the "
                                      "same species and official split, every image resized to --size px square. "
                                      "See docs/data.md.")
    b50.add_argument("--cub", required=True, metavar="DIR", help="root of CUB-200-2011 (the folder holding "
                                                                 "CUB_200_2011/)")
    b50.add_argument("--out", default="data/birds50", help="new folder to write (default: data/birds50)")
    b50.add_argument("--size", type=int, default=227, help="image side in pixels")
    b50.add_argument("--quiet", action="store_true", help="no progress bar")
    synth = dsub.add_parser("synth", help="generate the synthbirds fine-grained dataset")
    synth.add_argument("--root", default="data/synthbirds")
    synth.add_argument("--classes", type=int, default=10)
    synth.add_argument("--per-class", type=int, default=40)
    synth.add_argument("--size", type=int, default=64, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--layout", choices=["cub", "dogs"], default="cub")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --root")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    info = dsub.add_parser("info", help="classes, split sizes and unreadable files of a dataset")
    info.add_argument("name")
    info.add_argument("--root", required=True)
    info.add_argument("--check", action="store_true",
                      help="decode every image and list the bad ones; with boxes, count those touching 0, reaching "
                      "or passing the image's far edge (the boxes' coordinate convention, docs/data.md)")
    info.add_argument("--json", action="store_true")
    audit = dsub.add_parser(
        "audit", help="near-duplicates between train and test (and other folders), label-noise suspects",
        description="Audit a dataset: near-duplicate images between train and test and against --against "
                    "folders (perceptual hashes, and a pretrained backbone's embeddings when --model gives one), "
                    "and likely mislabelled training images (out-of-fold linear probes on frozen features, "
                    "ranked by cleanlab). By default the duplicates audit runs, and the label audit too when "
                    "--run or --model gives features. See docs/evaluation.md.")
    audit.add_argument("name", help="dataset name (cub200, dogs, folder, synthbirds, ...)")
    audit.add_argument("--root", required=True, help="dataset root")
    audit.add_argument("--against", nargs="+", action="extend", default=[], metavar="DIR",
                       help="folders of images to compare the dataset's train and test images with")
    audit.add_argument("--what", help="comma list of duplicates, labels (default: duplicates, plus labels "
                                      "when --run or --model is given)")
    audit.add_argument("--out", help="output folder (default: audit/<name>, or audit/<name>-2, ... when taken)")
    audit.add_argument("--overwrite", action="store_true", help="replace the finished audit in --out")
    audit.add_argument("--threshold", type=int, default=20,
                       help="a pair is at most this many bits apart, summed over the hashes")
    audit.add_argument("--hashes", default="phash,dhash,whash", help="imagehash hashes, 64 bits each")
    audit.add_argument("--detectors", help="near-duplicate detectors, a comma list of hash, embedding (default: "
                                           "hash, plus embedding when --model is given)")
    audit.add_argument("--similarity", type=float, default=None,
                       help="the embedding detector pairs images whose cosine similarity is at least this "
                            "(default: 0.9)")
    audit.add_argument("--run", metavar="RUN_DIR", help="a finished run: test accuracy with and without the "
                                                       "duplicated test images, and its backbone's features")
    audit.add_argument("--model", help="backbone for the label audit's features and the embedding detector, e.g. "
                                       "tf_mobilenetv2_100")
    audit.add_argument("--weights", help="local weights file for --model (.safetensors, .pth, .tflite)")
    audit.add_argument("--image-size", type=int, default=224, help="input size for --model, in px")
    audit.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold probabilities")
    audit.add_argument("--top", type=int, default=24, help="pairs / suspects shown in the galleries")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--quiet", action="store_true", help="no progress bars")
    return data
