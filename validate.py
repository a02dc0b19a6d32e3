"""Score a checkpoint: mAP and the official code's CP/CR/CF1/OP/OR/OF1 line.

    python validate.py --model-path runs/x/best.ckpt --data /home/MSCOCO_2014/

Reads this project's checkpoints (model name, class count and image size come from them), a bare state
dict, or one saved from nn.DataParallel ('module.' keys), which is the official code's format. The data is
COCO val2014 under --data, or any label list with --val-dataset (e.g. NUS-WIDE's nus_val.txt).
"""
import argparse
import json
import os
from pathlib import Path

import torch

from src.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_file, load_weights
from src.data.augment import val_transform
from src.data.datasets import collate_multilabel, coco_dataset, coco_num_classes, label_list_dataset
from src.distributed import DistInfo, ShardSampler
from src.engine import predict, to_device
from src.io_utils import atomic_write_text
from src.metrics import mAP, threshold_metrics
from src.models import check_model_name, create_model, extract_state_dict, strip_prefix
from src.trainer import resolve_amp, resolve_device

OFFICIAL = {"model_name": "resnet50", "num_classes": None, "image_size": 448}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Score a multi-label checkpoint on COCO val2014 or a label list")
    p.add_argument("--data", metavar="DIR", default="/home/MSCOCO_2014/", help="COCO 2014 root (or image root)")
    p.add_argument("--model-path", required=True, help="best.ckpt / last.ckpt, or a (DataParallel) state dict")
    p.add_argument("--model-name", default=None, type=check_model_name,
                   help="timm model (default: from the checkpoint, else resnet50)")
    p.add_argument("--num-classes", default=None, type=int, help="default: from the checkpoint or the data")
    p.add_argument("-j", "--workers", default=16, type=int, metavar="N", help="data loading workers (default: 16)")
    p.add_argument("--image-size", default=None, type=int, metavar="N",
                   help="input size (default: from the checkpoint, else 448)")
    p.add_argument("--thre", default=0.5, type=float, metavar="N", help="threshold value (default: 0.5)")
    p.add_argument("-b", "--batch-size", default=32, type=int, metavar="N", help="mini-batch size (default: 32)")
    p.add_argument("--print-freq", "-p", default=64, type=int, metavar="N", help="kept for the official commands")
    p.add_argument("--val-dataset", default=None, metavar="LIST",
                   help="score on this label list with images under --data (or DATA/images for NUS-WIDE)")
    p.add_argument("--ema", action="store_true", help="with a last.ckpt: score its EMA weights")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--device", default="auto")
    p.add_argument("--gpu-pipeline", default="auto", choices=["auto", "on", "off"],
                   help="decode and resize on the device, as train.py does (auto: on with CUDA)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write map, cp, cr, cf1, op, or, of1 here")
    return p


def load_model_weights(path: str, use_ema: bool) -> tuple[dict, dict]:
    """(state dict, metadata) from a project checkpoint or a bare / DataParallel state dict."""
    obj = load_file(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        meta = {k: obj[k] for k in ("model_name", "num_classes", "image_size")}
        if use_ema and "ema" not in obj:
            raise CheckpointError(f"{path} holds no EMA weights (only a last.ckpt does)")
        return (obj["ema"] if use_ema else obj["model"]), meta
    return strip_prefix(extract_state_dict(obj), "module."), {}


def resolve(flag: str, given, meta: dict, fallback, parser):
    """A flag's value: the checkpoint's, unless the user gave a different one (an error)."""
    saved = meta.get(flag)
    if given is not None and saved is not None and given != saved:
        parser.error(f"--{flag.replace('_', '-')} {given} disagrees with the checkpoint, which has {saved}")
    return given if given is not None else saved if saved is not None else fallback


def main(argv=None) -> dict:
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        state_dict, meta = load_model_weights(args.model_path, args.ema)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}")
    model_name = resolve("model_name", args.model_name, meta, OFFICIAL["model_name"], parser)
    image_size = resolve("image_size", args.image_size, meta, OFFICIAL["image_size"], parser)
    info = DistInfo()
    device = resolve_device(args.device, info)
    amp_dtype = resolve_amp(args.amp, device)
    if args.gpu_pipeline == "on" or (args.gpu_pipeline == "auto" and device.type == "cuda"):
        from src.data.gpu_pipeline import GpuEvalPreprocess
        tf, raw, preprocess = None, True, GpuEvalPreprocess(image_size, device)
    else:
        tf, raw, preprocess = val_transform(image_size), False, to_device(device)
    data = Path(args.data)
    if args.val_dataset:
        images = data / "images" if (data / "images").is_dir() else data
        num_classes = resolve("num_classes", args.num_classes, meta, None, parser)
        if num_classes is None:
            parser.error("--num-classes is needed with --val-dataset and a bare state dict")
        dataset = label_list_dataset(images, args.val_dataset, num_classes, transform=tf, raw=raw)
    else:
        ann = data / "annotations" / "instances_val2014.json"
        missing = [str(p) for p in (data / "val2014", ann) if not p.exists()]
        if missing:
            parser.error(f"--data {data}: missing {', '.join(missing)}")
        num_classes = resolve("num_classes", args.num_classes, meta, coco_num_classes(ann), parser)
        if num_classes != coco_num_classes(ann):
            parser.error(f"--num-classes {num_classes} disagrees with {ann} ({coco_num_classes(ann)} categories)")
        dataset = coco_dataset(data / "val2014", ann, transform=tf, raw=raw)

    print(f"creating {model_name} ({num_classes} classes) and loading {args.model_path}", flush=True)
    model = create_model(model_name, num_classes)
    try:
        load_weights(model, state_dict, args.model_path)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}")
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size,
                                         sampler=ShardSampler(list(range(len(dataset))), info),
                                         num_workers=min(args.workers, os.cpu_count() or 1),
                                         collate_fn=collate_multilabel, pin_memory=device.type == "cuda")
    print(f"len(val_dataset): {len(dataset)}", flush=True)
    scores, seen = predict({"model": model}, loader, len(dataset), num_classes, device=device, amp_dtype=amp_dtype,
                           preprocess=preprocess, info=info)
    targets = dataset.targets_matrix()[seen]
    result = {"map": mAP(targets, scores["model"][seen]), **threshold_metrics(targets, scores["model"][seen], args.thre)}
    print(" * P_C {cp:.2f} R_C {cr:.2f} F_C {cf1:.2f} P_O {op:.2f} R_O {or:.2f} F_O {of1:.2f}".format(**result))
    print("mAP score:", result["map"], flush=True)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
