"""Parity of fgvc's TensorFlow Lite import on real photographs.

    python benchmarks/tflite_parity.py --weights WEIGHTS_DIR --root BIRDS50 [--images 200]

For each MobileNetV2 file: the imported float model (fgvc.models.tflite into tf_mobilenetv2_100)
against (a) the dequantised graph run op by op in float (fgvc.models.tflite.reference_forward,
its own padding arithmetic): max logit difference, max pooled-feature difference, top-1
agreement; and (b) the official LiteRT interpreter running the 8-bit file on the same uint8
pixels: top-1 agreement, for the port and for the float reference. Images: evenly spaced over
the dataset's files, resized to 224 px (bilinear). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fgvc.models.factory import create_model
from fgvc.models.tflite import num_classes, reference_forward
from fgvc.models.weights import load_weights_file

FILES = ("mobilenet_v2_1.0_224_quant.tflite", "mobilenet_v2_1.0_224_inat_bird_quant.tflite")


def photos(root: Path, n: int) -> torch.Tensor:
    files = sorted(root.rglob("*.jpg"))
    files = files[:: max(1, len(files) // n)][:n]
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True, help="folder with the two .tflite files")
    p.add_argument("--root", required=True, help="a folder of .jpg photographs (searched recursively)")
    p.add_argument("--images", type=int, default=200)
    args = p.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    x = photos(Path(args.root), args.images)
    print(f"{len(x)} photographs\n")
    print("| file | max logit diff vs float graph | max feature diff | top-1 port = float graph | "
          "top-1 port = LiteRT | top-1 float graph = LiteRT |\n| --- | --- | --- | --- | --- | --- |")
    for name in FILES:
        path = Path(args.weights) / name
        model = create_model("tf_mobilenetv2_100", num_classes(path))
        load_weights_file(model, path)
        model.eval()
        logits, ref, feats, ref_feats = [], [], [], []
        for chunk in x.split(25):
            logits.append(model(chunk))
            feats.append(model.net.forward_head(model.net.forward_features(model.normalize(chunk)), pre_logits=True))
            ref.append(reference_forward(path, chunk))
            ref_feats.append(reference_forward(path, chunk, until="features"))
        logits, ref, feats, ref_feats = map(torch.cat, (logits, ref, feats, ref_feats))
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        lite = []
        for image in x:
            interpreter.set_tensor(inp["index"], np.round(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)[None])
            interpreter.invoke()
            lite.append(int(interpreter.get_tensor(out["index"])[0].argmax()))
        lite = torch.tensor(lite)
        port, graph = logits.argmax(1), ref.argmax(1)
        print(f"| {name} | {(logits - ref).abs().max():.1e} | {(feats - ref_feats).abs().max():.1e} | "
              f"{(port == graph).float().mean():.3f} | {(port == lite).float().mean():.3f} | "
              f"{(graph == lite).float().mean():.3f} |", flush=True)


if __name__ == "__main__":
    main()
