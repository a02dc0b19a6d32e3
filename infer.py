"""Label your own images with a trained model: the classes above a threshold, with their names and probabilities.

    python infer.py --model-path runs/x/best.ckpt photo.jpg more/*.jpg folder/ [--recursive]
        [--thre 0.5 | --top-k 5] [--json scores.json] [--csv scores.csv]

Takes the same model files as validate.py (project checkpoints with their model name, image size and class
names; bare, DataParallel or ASL state dicts) and the same preprocessing as training's evaluation
(Resize((S, S)), /255). Prints one line per image to stdout, batch by batch as they are scored; notes, progress
and skipped files go to stderr. --json / --csv follow the output rule (src/outputs.py): never onto an input, never
over a file that infer.py did not write (unless --overwrite), always atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from src import cli
from src.cli import OFFICIAL, check_after_parse, model_name_arg
from src.errors import UserError, report_user_errors
from src.outputs import MARKER_KEY, SCORES_CSV, Outputs, json_kind

# torch, timm and the modules that load them are imported inside the functions that need them, after the flags
# are parsed: -h and a mistyped flag answer at once.

JSON_COMMAND = "infer.py --json"
OUTPUT_KINDS = {"--json": json_kind(JSON_COMMAND), "--csv": SCORES_CSV}


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def get_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(description="Label images with a trained multi-label model")
    p.add_argument("images", nargs="*", metavar="PATH", help="image files and/or folders of images")
    p.add_argument("--pic-path", action="append", default=[], metavar="PATH",
                   help="an image file or folder, as ASL's infer.py takes it (repeatable; added to PATH)")
    p.add_argument("--model-path", required=True, help="best.ckpt / last.ckpt, or a (DataParallel / ASL) state dict")
    p.add_argument("--recursive", "-r", action="store_true", help="also take the images in subfolders of a folder")
    p.add_argument("--thre", "--th", default=0.5, type=probability, metavar="T",
                   help="show the classes whose probability is above T (default: 0.5)")
    p.add_argument("--top-k", default=None, type=positive, metavar="K",
                   help="show the K most probable classes of each image, whatever their probability")
    p.add_argument("--json", default=None, metavar="PATH", help="write every image's full score vector here (JSON)")
    p.add_argument("--csv", default=None, metavar="PATH",
                   help="write every image's full score vector here (CSV: image,<class names>)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --json / --csv replace an existing file that infer.py did not write (never an input)")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="class names, one per line (default: from the checkpoint)")
    p.add_argument("--data", default=None, metavar="DIR|JSON",
                   help="take the class names from a COCO root's annotations/instances_val2014.json (or a .json)")
    p.add_argument("--model-name", default=None, type=model_name_arg,
                   help=f"timm model (default: from the checkpoint, else {OFFICIAL['model_name']})")
    p.add_argument("--image-size", "--input-size", default=None, type=positive, metavar="N",
                   help=f"input size (default: from the checkpoint, else {OFFICIAL['image_size']})")
    p.add_argument("--num-classes", default=None, type=positive,
                   help="default: from the checkpoint, the state dict's classifier, or the class names")
    p.add_argument("--ema", action="store_true", help="with a last.ckpt: use its EMA weights")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="list and skip files that cannot be read or decoded instead of stopping")
    p.add_argument("-b", "--batch-size", default=32, type=positive, metavar="N", help="images per batch (default: 32)")
    p.add_argument("-j", "--workers", default=4, type=int, metavar="N", help="data loading workers (default: 4)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--device", default="auto", help="cuda, cpu, cuda:1, ... (default: cuda if present)")
    return p


def class_name_sources(args) -> list[tuple[str, list[str] | None]]:
    """(source, names) from --classes and --data, each None when not given."""
    from src.data.class_names import ClassNamesError, read_classes_flag
    from src.inference import coco_class_names
    from_file = read_classes_flag(args.classes)
    try:
        from_data = coco_class_names(args.data) if args.data else None
    except ClassNamesError as e:
        raise ClassNamesError(f"--data {e}") from None
    return [(f"--classes {args.classes}", from_file), (f"--data {args.data}", from_data)]


def batches(loader, paths: list[Path], skip_bad: bool, skipped: list, progress: bool):
    """The loader's batches as (images, None, indices, bad count); a bad file stops the run (naming it) or is
    recorded in ``skipped``."""
    from tqdm import tqdm
    for images, indices, bad in tqdm(loader, desc="infer", unit="batch", disable=None if progress else True,
                                     file=sys.stderr):
        for i, reason in bad:
            if not skip_bad:
                raise UserError(f"{reason} (pass --skip-bad-images to list and skip such files)")
            skipped.append((str(paths[i]), reason))
        yield images, None, indices, len(bad)


def label_line(name: str, row: np.ndarray, class_names: list[str], thre: float, top_k: int | None) -> str:
    """'name: class p, class p, ...': the top_k classes, or those above thre, most probable first."""
    order = np.argsort(-row, kind="stable")
    chosen = list(order[:top_k]) if top_k else [c for c in order if row[c] > thre]
    if not chosen:
        best = order[0]
        return f"{name}: (none above {thre:g}; highest: {class_names[best]} {row[best]:.3f})"
    return f"{name}: " + ", ".join(f"{class_names[c]} {row[c]:.3f}" for c in chosen)


def main(argv=None) -> dict:
    parser = get_parser()
    args = parser.parse_args(argv)  # before torch loads
    args.images = [*args.images, *args.pic_path]
    if not args.images:
        parser.error("give the images: files and/or folders (PATH ..., or ASL's --pic-path PATH)")
    from src.models import check_model_name
    check_after_parse(parser, args, "model_name", check_model_name)
    with report_user_errors(), Outputs(args.overwrite, vars(args), skip=("json", "csv")) as outputs:
        return run(args, parser, outputs)


def model_settings(args: argparse.Namespace, parser: argparse.ArgumentParser, model_file: ModelFile) -> dict:
    """model_name, image_size, num_classes and class_names: the file's, the flags', or the defaults."""
    from src.inference import choose_class_names, head_classes, resolve
    meta = model_file.meta
    model_name = resolve("model_name", args.model_name, meta, OFFICIAL["model_name"], parser)
    image_size = resolve("image_size", args.image_size, meta, OFFICIAL["image_size"], parser)
    sources = class_name_sources(args)
    head = None if model_file.project else head_classes(model_name, model_file.state_dict)
    named = next((len(names) for _, names in sources if names is not None), None)
    num_classes = resolve("num_classes", args.num_classes, meta, head if head is not None else named, parser)
    if num_classes is None:
        raise UserError(f"{args.model_path}: cannot tell the class count (no {model_name} classifier weight "
                        f"found): give --num-classes or --classes")
    if args.top_k is not None and args.top_k > num_classes:
        parser.error(f"--top-k {args.top_k} exceeds the model's {num_classes} classes")
    class_names, note = choose_class_names(num_classes, [(f"the checkpoint {args.model_path}",
                                                          meta.get("class_names")), *sources])
    if note:
        print(f"note: {note}", file=sys.stderr, flush=True)
    return {"model_name": model_name, "image_size": image_size, "num_classes": num_classes,
            "class_names": class_names}


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, outputs: Outputs) -> dict:
    """Score the images, printing each batch's lines as it is scored; returns {"images", "scores" (N x C),
    "class_names", "skipped" [(path, reason)]}. ``outputs``: the output rule, holding the inputs."""
    import torch
    from src.data.augment import val_transform
    from src.data.image_files import ImageFiles, collate_images, find_images
    from src.data.prefetch import Prefetcher
    from src.distributed import DistInfo
    from src.engine import Compute, resolve_amp, resolve_device, to_device
    from src.inference import build_model, load_model_file, scores_json, write_scores
    from src.scoring import scoring_setup
    paths = find_images(args.images, args.recursive)
    outputs.add_inputs(paths)
    for flag, kind in OUTPUT_KINDS.items():
        outputs.check(flag, getattr(args, flag[2:]), kind)
    model_file = load_model_file(args.model_path, args.ema)
    settings = model_settings(args, parser, model_file)
    model_name, image_size, num_classes, class_names = (settings[k] for k in ("model_name", "image_size",
                                                                               "num_classes", "class_names"))
    device = resolve_device(args.device, DistInfo())
    setup = scoring_setup(device, image_size, args.workers)  # the workers decode (each file may be bad)
    model = setup.place(build_model(model_file, model_name, num_classes))
    print(f"{len(paths)} images, {model_name} ({num_classes} classes, {image_size} px) from {args.model_path}, "
          f"on {device}", file=sys.stderr, flush=True)
    loader = torch.utils.data.DataLoader(ImageFiles(paths, setup.transform()), batch_size=args.batch_size,
                                         num_workers=setup.workers, collate_fn=collate_images,
                                         pin_memory=setup.pin_memory)
    skipped: list[tuple[str, str]] = []
    progress = any(Path(p).is_dir() for p in args.images)
    prepared = Prefetcher(batches(loader, paths, args.skip_bad_images, skipped, progress), setup.preprocess(), device)
    names, rows = [], []
    for indices, probs in scored_batches(model, prepared, Compute(device, resolve_amp(args.amp, device))):
        for i, row in zip(indices, probs):
            names.append(str(paths[i]))
            rows.append(row)
            print(label_line(names[-1], row, class_names, args.thre, args.top_k))
        sys.stdout.flush()
    if skipped:
        print(f"skipped {len(skipped)} bad image(s):\n" + "\n".join(f"  {reason}" for _, reason in skipped),
              file=sys.stderr, flush=True)
    if not names:
        raise UserError("no image could be read")
    probs = np.stack(rows)
    if args.csv:
        write_scores(args.csv, names, probs, class_names, fmt="csv", outputs=outputs, flag="--csv")
    if args.json:
        # the marker first: src/outputs.py recognises the file by its first key
        extra = {MARKER_KEY: JSON_COMMAND, "model_path": str(args.model_path), "model_name": model_name,
                 "image_size": image_size, "skipped": [{"image": p, "error": r} for p, r in skipped]}
        outputs.write_text("--json", args.json, OUTPUT_KINDS["--json"], scores_json(names, probs, class_names, extra))
    return {"images": names, "scores": probs, "class_names": class_names, "skipped": skipped}


def scored_batches(model: torch.nn.Module, prepared, compute: Compute):
    """(image indices, their N x C probabilities as float32 numpy) for each batch as soon as it is scored."""
    import torch
    model.eval()
    for images, _targets, indices, _num_skipped in prepared:
        if len(indices) == 0:
            continue
        with torch.inference_mode(), compute.autocast():
            probs = torch.sigmoid(model(images).float())
        yield indices.tolist(), probs.cpu().numpy()


if __name__ == "__main__":
    main()
