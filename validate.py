"""Score a checkpoint: mAP and the official code's CP/CR/CF1/OP/OR/OF1 line.

    python validate.py --model-path runs/x/best.ckpt --data /home/MSCOCO_2014/ [--save-scores scores.npz]

Reads this project's checkpoints (model name, class count, image size and class names come from them), a bare
state dict, one saved from nn.DataParallel ('module.' keys, the official code's format), or ASL's format
(see src/inference.py). The data is COCO val2014 under --data, or any label list with --val-dataset (e.g.
NUS-WIDE's nus_val.txt). --save-scores writes every image's scores and targets (.npz or .csv); --thre auto
also reports CF1 and OF1 at the thresholds that maximise them on this set.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from src import cli
from src.cli import OFFICIAL, check_after_parse, model_name_arg
from src.data.data_flags import check_val_data, list_image_root
from src.errors import UserError, report_user_errors
from src.outputs import SCORE_SUFFIXES, SCORES_CSV, SCORES_NPZ, Outputs, json_kind, stamped

# torch, timm and the modules that load them are imported inside the functions that need them, after the flags
# are parsed: -h and a mistyped flag answer at once.

DEFAULT_THRESHOLD = 0.5
DEFAULT_DATA = "/home/MSCOCO_2014/"  # the official code's
JSON_COMMAND = "validate.py --json"
JSON_KIND = json_kind(JSON_COMMAND)


def threshold_arg(text: str) -> float | str:
    """--thre: a probability in [0, 1], or 'auto'."""
    if text.lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number in [0, 1] nor 'auto'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]")
    return value


def scores_path_arg(text: str) -> str:
    """--save-scores: a path ending in .npz or .csv."""
    if Path(text).suffix.lower() not in SCORE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text}: the file name must end in {' or '.join(SCORE_SUFFIXES)}")
    return text


def get_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(description="Score a multi-label checkpoint on COCO val2014 or a label list")
    p.add_argument("--data", metavar="DIR", default=None,
                   help=f"COCO 2014 root (or image root of --val-dataset; default: {DEFAULT_DATA})")
    p.add_argument("data_dir", nargs="?", metavar="DIR", help="the same as --data DIR (ASL's validate.py spelling)")
    p.add_argument("--model-path", required=True, help="best.ckpt / last.ckpt, or a (DataParallel / ASL) state dict")
    p.add_argument("--model-name", default=None, type=model_name_arg,
                   help=f"timm model (default: from the checkpoint, else {OFFICIAL['model_name']})")
    p.add_argument("--num-classes", default=None, type=int,
                   help="default: from the checkpoint, the data, or the state dict's classifier")
    p.add_argument("-j", "--workers", default=16, type=int, metavar="N", help="data loading workers (default: 16)")
    p.add_argument("--image-size", "--input-size", default=None, type=int, metavar="N",
                   help=f"input size (default: from the checkpoint, else {OFFICIAL['image_size']})")
    p.add_argument("--thre", default=DEFAULT_THRESHOLD, type=threshold_arg, metavar="T|auto",
                   help=f"threshold of CP/CR/CF1/OP/OR/OF1 (default: {DEFAULT_THRESHOLD}); 'auto' also reports "
                        f"CF1 and OF1 at the thresholds maximising them on this set")
    p.add_argument("-b", "--batch-size", default=32, type=int, metavar="N", help="mini-batch size (default: 32)")
    p.add_argument("--print-freq", "-p", default=64, type=int, metavar="N", help="kept for the official commands")
    p.add_argument("--val-dataset", default=None, metavar="LIST",
                   help="score on this label list with images under --data (or DATA/images for NUS-WIDE)")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="class names, one per line (default: from the checkpoint or the COCO annotations)")
    p.add_argument("--ema", action="store_true", help="with a last.ckpt: score its EMA weights")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--device", default="auto")
    p.add_argument("--gpu-pipeline", default="auto", choices=["auto", "on", "off"],
                   help="decode and resize on the device, as train.py does (auto: on with CUDA)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write map, cp, cr, cf1, op, or, of1 here")
    p.add_argument("--save-scores", default=None, type=scores_path_arg, metavar="PATH",
                   help="write the N x C scores with image names, class names and targets (.npz or .csv)")
    p.add_argument("--overwrite", action="store_true", help="let --json / --save-scores replace an existing file "
                   "that validate.py did not write (never an input)")
    return p


def build_dataset(args, parser, meta: dict, head: int | None, transform, raw: bool):
    """The scored set and its class count (checked against the checkpoint's)."""
    from src.data.datasets import coco_dataset, coco_num_classes, label_list_dataset
    from src.inference import resolve
    data = Path(args.data)
    if args.val_dataset:
        images = list_image_root(data)
        num_classes = resolve("num_classes", args.num_classes, meta, head, parser)
        if num_classes is None:
            parser.error("--num-classes is needed with --val-dataset and a state dict without a classifier")
        return label_list_dataset(images, args.val_dataset, num_classes, transform=transform, raw=raw), num_classes
    ann = data / "annotations" / "instances_val2014.json"
    categories = coco_num_classes(ann)
    num_classes = resolve("num_classes", args.num_classes, meta, head if head is not None else categories, parser)
    if num_classes != categories:
        if args.num_classes is not None:
            parser.error(f"--num-classes {num_classes} disagrees with {ann} ({categories} categories)")
        where = "" if meta.get("num_classes") is not None else "'s classifier"
        raise UserError(f"{args.model_path}{where} has {num_classes} classes, the data {ann} has {categories}: "
                        "score it on the data it was trained on (--data, or --val-dataset with a label list)")
    return coco_dataset(data / "val2014", ann, transform=transform, raw=raw), num_classes


def report_thresholds(result: dict, targets, scores) -> None:
    """--thre auto: CF1 and OF1 at their best thresholds on this very set (stated as such)."""
    from src.inference import best_thresholds
    best = best_thresholds(targets, scores)
    result["thre_auto"] = {**best, "note": "thresholds chosen on the scored set itself (optimistic for it)"}
    c, o = best["cf1"], best["of1"]
    print(f" * thresholds chosen on this scored set (so optimistic for it): "
          f"CF1 {c['cf1']:.2f} at {c['threshold']:.2f} (P_C {c['cp']:.2f} R_C {c['cr']:.2f}); "
          f"OF1 {o['of1']:.2f} at {o['threshold']:.2f} (P_O {o['op']:.2f} R_O {o['or']:.2f})")


def resolve_data_dir(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--data, or ASL's positional DIR (not both, unless they agree), or the official default."""
    if args.data is not None and args.data_dir is not None and Path(args.data) != Path(args.data_dir):
        parser.error(f"the data folder is given twice: --data {args.data} and DIR {args.data_dir}")
    args.data = args.data or args.data_dir or DEFAULT_DATA


def main(argv=None) -> dict:
    parser = get_parser()
    args = parser.parse_args(argv)  # before torch loads
    resolve_data_dir(parser, args)
    with report_user_errors():
        check_val_data(args)  # the data first: within seconds, before the model file is read
    from src.models import check_model_name
    check_after_parse(parser, args, "model_name", check_model_name)
    with report_user_errors(), Outputs(args.overwrite, vars(args), skip=("json", "save_scores")) as outputs:
        return run(args, parser, outputs)


def check_outputs(args: argparse.Namespace, outputs: Outputs) -> None:
    """The output rule (src/outputs.py) for --json and --save-scores, with the inputs read so far."""
    outputs.check("--json", args.json, JSON_KIND)
    if args.save_scores:
        kind = SCORES_CSV if Path(args.save_scores).suffix.lower() == ".csv" else SCORES_NPZ
        outputs.check("--save-scores", args.save_scores, kind)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, outputs: Outputs) -> dict:
    """Score the model file on the data; returns map, cp, cr, cf1, op, or, of1, f_c_official (and thre_auto).
    ``outputs``: the output rule; the outputs are checked before anything is read and again before scoring."""
    import torch
    from src.data.class_names import read_classes_flag
    from src.data.datasets import collate_multilabel
    from src.data.prefetch import Prefetcher
    from src.distributed import DistInfo, ShardSampler
    from src.engine import Compute, evaluate, resolve_amp, resolve_device
    from src.inference import build_model, choose_class_names, head_classes, load_model_file, resolve, write_scores
    from src.metrics import official_f_c
    from src.scoring import scoring_setup
    check_outputs(args, outputs)
    model_file = load_model_file(args.model_path, args.ema)
    meta = model_file.meta
    model_name = resolve("model_name", args.model_name, meta, OFFICIAL["model_name"], parser)
    image_size = resolve("image_size", args.image_size, meta, OFFICIAL["image_size"], parser)
    info = DistInfo()
    device = resolve_device(args.device, info)
    amp_dtype = resolve_amp(args.amp, device)
    setup = scoring_setup(device, image_size, args.workers, args.gpu_pipeline)
    head = None if model_file.project else head_classes(model_name, model_file.state_dict)
    dataset, num_classes = build_dataset(args, parser, meta, head, setup.transform(), setup.on_device)
    class_names, note = choose_class_names(num_classes, [
        (f"the checkpoint {args.model_path}", meta.get("class_names")),
        (f"--classes {args.classes}", read_classes_flag(args.classes, num_classes)),
        (f"the annotations of --data {args.data}", dataset.class_names)])
    if note and args.save_scores:
        print(f"note: {note}", flush=True)

    check_outputs(args, outputs)  # now also against the annotation file and label list just read
    print(f"creating {model_name} ({num_classes} classes) and loading {args.model_path}", flush=True)
    model = setup.place(build_model(model_file, model_name, num_classes))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size,
                                         sampler=ShardSampler(list(range(len(dataset))), info),
                                         num_workers=setup.workers, collate_fn=collate_multilabel,
                                         pin_memory=setup.pin_memory)
    print(f"len(val_dataset): {len(dataset)}", flush=True)
    threshold = DEFAULT_THRESHOLD if args.thre == "auto" else args.thre
    scored = evaluate({"model": model}, Prefetcher(loader, setup.preprocess(), device), dataset.targets_matrix(),
                      Compute(device, amp_dtype, info), threshold)
    result, targets, scores, seen = scored.metrics, scored.targets, scored.scores, scored.seen
    result["f_c_official"] = official_f_c(targets, scores, threshold)
    print(" * P_C {cp:.2f} R_C {cr:.2f} CF1 {cf1:.2f} F_C {f_c_official:.2f} P_O {op:.2f} R_O {or:.2f} F_O {of1:.2f}"
          "  (CF1 = 2 P_C R_C / (P_C + R_C); F_C = the official mean of per-class F1)".format(**result))
    if args.thre == "auto":
        report_thresholds(result, targets, scores)
    print("mAP score:", result["map"], flush=True)
    if args.save_scores:
        names = [dataset.entries[i].name for i in torch.nonzero(seen).flatten().tolist()]
        write_scores(args.save_scores, names, scores.numpy(), class_names, targets.numpy(), outputs=outputs)
        print(f"scores of {len(names)} images x {num_classes} classes written to {args.save_scores}", flush=True)
    if args.json:
        outputs.write_text("--json", args.json, JSON_KIND, stamped(JSON_COMMAND, result))
    return result


if __name__ == "__main__":
    main()
