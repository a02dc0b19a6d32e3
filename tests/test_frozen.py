"""--freeze-backbone's pieces: freezing a model, feature batches in the sampler's order, full state dicts."""
import pytest
import timm
import torch
from torch import nn

from src.engine import Compute
from src.frozen import FeatureBatches, FrozenBackbone, freeze
from src.models import classifier_prefix, pre_logits


def test_freeze_leaves_only_the_classifier_trainable_and_the_split_is_exact():
    model = timm.create_model("resnet10t", num_classes=5)
    head = freeze(model)
    assert head is model.fc and not model.training
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(head(pre_logits(model, x)), model(x))


def test_a_model_without_a_linear_classifier_is_refused():
    model = timm.create_model("resnet10t", num_classes=0)  # no classifier
    with pytest.raises(ValueError, match="nn.Linear"):
        classifier_prefix(model)


def test_feature_batches_follow_the_order_and_leave_out_unread_rows():
    features = torch.arange(10.0).unsqueeze(1)
    seen = torch.ones(10, dtype=torch.bool)
    seen[4] = False
    batches = list(FeatureBatches(features, seen, [3, 4, 9, 0, 7], batch=2))
    assert [b[2].tolist() for b in batches] == [[3], [9, 0], [7]] and [b[3] for b in batches] == [1, 0, 0]
    assert torch.equal(batches[1][0], torch.tensor([[9.0], [0.0]]))
    assert len(FeatureBatches(features, seen, range(10), batch=3, steps=2)) == 2


def test_features_full_and_head_states():
    model = timm.create_model("resnet10t", num_classes=3)
    freeze(model)
    frozen = FrozenBackbone(model, Compute(torch.device("cpu")))
    x = torch.randn(5, 3, 32, 32)
    batches = [(x[:3], None, torch.tensor([0, 2, 4]), 0), (x[3:4], None, torch.tensor([1]), 0)]  # row 3 unread
    feats, seen = frozen.features("train", lambda: batches, 5)
    assert seen.tolist() == [True, True, True, False, True]
    assert torch.allclose(feats[[0, 2, 4, 1]], pre_logits(model, x[:4]), atol=1e-6) and feats[3].eq(0).all()
    assert frozen.features("train", lambda: pytest.fail("computed twice"), 5)[0] is feats
    other = nn.Linear(model.fc.in_features, 3)
    state = frozen.full_state(other)
    assert torch.equal(state["fc.weight"], other.weight) and torch.equal(state["conv1.0.weight"],
                                                                         model.state_dict()["conv1.0.weight"])
    assert set(frozen.head_state(state)) == {"weight", "bias"}
