"""src/scoring.py: one scoring setup (model placement, worker count, evaluation pipeline) for validate.py, infer.py
and the trainer's evaluation; the three get the same setup for the same flags."""
import os

import pytest
import torch

import infer
import train
import validate
from src import trainer
from src.data.datasets import coco_num_classes
from src.models import create_model
from src.scoring import ScoringSetup, decode_on_device, loader_workers, place_model, scoring_setup

CPU = torch.device("cpu")


def test_gpu_pipeline_choice():
    assert decode_on_device("on", CPU) and not decode_on_device("off", CPU) and not decode_on_device("auto", CPU)
    assert decode_on_device("auto", torch.device("cuda")) and not decode_on_device("off", torch.device("cuda"))
    with pytest.raises(ValueError, match="'yes'"):
        decode_on_device("yes", CPU)


def test_workers_are_capped_at_the_cpu_count():
    cpus = os.cpu_count() or 1
    assert loader_workers(0) == 0 and loader_workers(1) == 1 and loader_workers(cpus + 5) == cpus


def test_the_cpu_pipeline_transforms_in_the_workers_and_copies():
    setup = scoring_setup("cpu", 32, 2, "off")
    assert setup == ScoringSetup(CPU, 32, 2, False) and not setup.pin_memory
    image = torch.randint(0, 256, (3, 50, 40), dtype=torch.uint8)
    assert setup.transform()(image).shape == (3, 32, 32)
    batch = torch.rand(2, 3, 32, 32)
    assert torch.equal(setup.preprocess()(batch), batch)


def test_the_device_pipeline_leaves_decoding_to_the_device():
    setup = scoring_setup("cpu", 32, 2, "on")
    assert setup.on_device and setup.transform() is None
    assert type(setup.preprocess()).__name__ == "GpuEvalPreprocess"


def test_place_model_moves_to_the_device_and_keeps_the_format_on_cpu():
    model = place_model(torch.nn.Conv2d(3, 4, 3), CPU)
    assert model.weight.device == CPU and model.weight.is_contiguous()


@pytest.fixture
def recorded(monkeypatch):
    """([every ScoringSetup made, in order], [setups that placed a model]). validate.py and infer.py import
    scoring_setup from src.scoring when they run (after parsing their flags); the trainer at its import."""
    import src.scoring
    made, placed = [], []

    def record(*args, **kwargs):
        made.append(scoring_setup(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(src.scoring, "scoring_setup", record)
    monkeypatch.setattr(trainer, "scoring_setup", record)
    place = ScoringSetup.place

    def record_place(self, model):
        placed.append(self)
        return place(self, model)
    monkeypatch.setattr(ScoringSetup, "place", record_place)
    return made, placed


def test_validate_infer_and_the_trainer_get_one_setup_for_the_same_flags(toy_coco, tmp_path, recorded):
    made, placed = recorded
    num_classes = coco_num_classes(toy_coco / "annotations" / "instances_val2014.json")
    weights = tmp_path / "w.pth"
    torch.save(create_model("resnet10t", num_classes).state_dict(), weights)
    same = ["--model-name", "resnet10t", "--image-size", "32", "-j", "3", "--device", "cpu"]
    validate.main(["--model-path", str(weights), "--data", str(toy_coco), *same, "--gpu-pipeline", "off"])
    by_validate = made[-1]
    images = sorted((toy_coco / "val2014").glob("*.jpg"))[:2]
    infer.main(["--model-path", str(weights), *map(str, images), *same, "--num-classes", str(num_classes)])
    by_infer = made[-1]
    args = train.get_parser().parse_args(["--data", str(toy_coco), "--model-name", "resnet10t", "--image-size", "32",
                                          "-j", "3", "--gpu-pipeline", "off"])
    pipeline = trainer.input_pipeline(args, CPU)
    assert len(made) == 3 and pipeline.scoring == made[-1]
    assert by_validate == by_infer == made[-1] == scoring_setup(CPU, 32, 3, "off")
    assert placed == [by_validate, by_infer]  # each script's model was placed by its setup
