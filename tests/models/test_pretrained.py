import pytest
import torch

from classbalanced.models import build_model
from classbalanced.models.registry import load_pretrained_, pretrained_weights_path


def test_pretrained_weights_load_from_the_local_cache_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = build_model("resnet50", 7)
    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        load_pretrained_(model, "resnet50")
    # a cached ImageNet checkpoint (1000 classes), as torchvision would have stored it
    with torch.random.fork_rng():
        torch.manual_seed(1)
        source = build_model("resnet50", 1000)
    path = pretrained_weights_path("resnet50")
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    load_pretrained_(model, "resnet50")
    for name, value in model.state_dict().items():
        if name.startswith("fc."):
            assert value.shape[0] == 7  # the classifier keeps its own shape and initialisation
        else:
            assert torch.equal(value, source.state_dict()[name]), name


def test_pretrained_only_for_torchvision_models():
    with pytest.raises(ValueError, match="resnet50, resnet101, resnet152"):
        pretrained_weights_path("resnet32")
    # refused with the config, before any data is loaded (it was after the data load)
    from classbalanced.config import TrainConfig

    with pytest.raises(ValueError, match=r"available for resnet50.*got 'resnet32'$"):
        TrainConfig(dataset="digits", model="resnet32", pretrained=True).resolved()
    assert TrainConfig(dataset="digits", model="ResNet50", pretrained=True).resolved().pretrained


class _Payload:  # an object weights_only loading refuses
    pass


@pytest.mark.parametrize(
    "write",
    [
        lambda p: torch.save({"conv1.weight": torch.zeros(1), "x": _Payload()}, p),
        lambda p: p.write_bytes(b"not a checkpoint at all"),
    ],
    ids=["pickled object", "garbage"],
)
def test_an_unsafe_cached_file_is_refused_without_suggesting_weights_only_false(
    tmp_path, monkeypatch, write
):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = pretrained_weights_path("resnet50")
    path.parent.mkdir(parents=True)
    write(path)
    with pytest.raises(ValueError) as info:
        load_pretrained_(build_model("resnet50", 3), "resnet50")
    message = str(info.value)
    assert message.startswith(f"refusing {path}") and "\n" not in message
    assert "weights_only=False" not in message and "trust" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_cached_file_of_other_shapes_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = build_model("resnet50", 3)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        source = build_model("resnet50", 3).state_dict()
    state = {k: v for k, v in source.items() if not k.startswith("fc.")}
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a one-channel stem: not torchvision's
    path = pretrained_weights_path("resnet50")
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"does not match resnet50: .*conv1\.weight") as info:
        load_pretrained_(model, "resnet50")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
