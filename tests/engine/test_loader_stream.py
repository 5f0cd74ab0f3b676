"""The image-file batch stream: persistent workers give the batches of rebuilt loaders, uint8
batches normalised on the device equal the float path, and decoding on the device (here the
CPU) is the fast crop's decode."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from classbalanced.config import TrainConfig
from classbalanced.data.encoded import collate_encoded, decode_batch
from classbalanced.data.images import BadImageWarning
from classbalanced.data.loaders import ImageFileDataset, collate_skip_bad
from classbalanced.data.pipeline import (
    DraftResizeCenterCrop,
    FastRandomResizedCrop,
    collate_channels_last,
)
from classbalanced.engine.distributed import DistContext
from classbalanced.engine.evaluate import LoaderEvaluator
from classbalanced.engine.run_data import train_pipeline
from classbalanced.engine.streams import LoaderStream

N = 20


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(N):
        w, h = (60, 44) if i % 3 else (30, 40)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.jpg", quality=85)
        samples.append((f"{i}.jpg", i % 4))
    return root, samples


def _stream(files, *, persistent, transform=None, workers=2, collate=collate_channels_last, **kw):
    root, samples = files
    data = ImageFileDataset(root, samples, transform or FastRandomResizedCrop(16))
    return LoaderStream(
        data,
        batch_size=4,
        seed=3,
        ctx=DistContext(),
        num_workers=workers,
        collate=collate,
        persistent=persistent,
        **kw,
    )


class _Mean(torch.nn.Module):
    def forward(self, x):
        return x.float().mean(dim=(2, 3)).repeat(1, 2)[:, :4]


def _evaluator(files, persistent):
    root, samples = files
    shard = ImageFileDataset(root, samples[:8], DraftResizeCenterCrop(16, output="uint8"))
    cfg = TrainConfig(num_workers=2, eval_batch_size=4, channels_last=False)
    return LoaderEvaluator(shard, collate_skip_bad, cfg, DistContext(), 4, persistent=persistent)


def _run(files, persistent, global_seed):
    """Epoch 0, an evaluation, epoch 1 resumed at step 2, epoch 2: every batch."""
    torch.manual_seed(global_seed)
    stream, evaluator = _stream(files, persistent=persistent), _evaluator(files, persistent)
    batches = [(x.clone(), y.clone()) for x, y in stream.epoch(0)]
    counts = evaluator(_Mean())
    batches += [(x.clone(), y.clone()) for x, y in stream.epoch(1, start_step=2)]
    batches += [(x.clone(), y.clone()) for x, y in stream.epoch(2)]
    return batches, counts.stacked()


def test_persistent_workers_give_the_batches_of_rebuilt_loaders(files):
    rebuilt, counts = _run(files, persistent=False, global_seed=11)
    kept, kept_counts = _run(files, persistent=True, global_seed=12)  # seeds from (seed, epoch)
    assert len(rebuilt) == len(kept) == 5 + 3 + 5
    for (x, y), (xp, yp) in zip(rebuilt, kept, strict=True):
        assert torch.equal(x, xp) and torch.equal(y, yp)
    assert torch.equal(counts, kept_counts)
    # the augmentation depends on the epoch (the comparison can fail) and on the seed
    assert not torch.equal(rebuilt[0][0], rebuilt[5 + 3][0])
    other = _stream(files, persistent=True)
    other.seed = 4
    assert not torch.equal(next(iter(other.epoch(0)))[0], rebuilt[0][0])


def test_uint8_batches_normalised_on_the_device_equal_the_float_path(files):
    def batches(output):
        cfg = TrainConfig(dataset="inat2018", image_size=16, worker_output=output).resolved()
        transform, collate, on_device = train_pipeline(cfg, DistContext())
        stream = _stream(files, persistent=True, transform=transform, collate=collate)
        stream.on_device = on_device
        torch.manual_seed(5)
        return [x for x, _ in stream.epoch(0)]

    as_float, as_uint8 = batches("float"), batches("uint8")
    for f, u in zip(as_float, as_uint8, strict=True):
        assert f.dtype == u.dtype == torch.float32
        torch.testing.assert_close(u, f, rtol=0, atol=1e-6)  # float rounding only
    assert float(as_float[0].std()) > 0.5  # normalised, not raw pixels


def test_decoding_on_the_device_is_the_fast_crops_decode(files):
    cfg = TrainConfig(dataset="inat2018", image_size=16, image_decode="device").resolved()
    transform, collate, on_device = train_pipeline(cfg, DistContext())
    cfg_fast = TrainConfig(dataset="inat2018", image_size=16).resolved()
    fast, fast_collate, fast_device = train_pipeline(cfg_fast, DistContext())

    def batches(t, c, d):
        stream = _stream(files, persistent=False, transform=t, collate=c, workers=0, on_device=d)
        torch.manual_seed(2)
        return [x for x, _ in stream.epoch(0)]

    for a, b in zip(
        batches(transform, collate, on_device),
        batches(fast, fast_collate, fast_device),
        strict=True,
    ):
        # crops of 60x44 images to 16 px: reduced decoding (k = 2) on one side only
        assert a.shape == b.shape == (4, 3, 16, 16)
        assert (a - b).abs().mean() < 0.25  # of about 4 std units: the same crops


def test_the_options_are_config_keys_and_flags():
    from classbalanced.cli import build_parser

    cfg = TrainConfig.from_dict(
        {"image_decode": "draft", "worker_output": "float", "persistent_workers": False}
    )
    assert (cfg.image_decode, cfg.worker_output, cfg.persistent_workers) == (
        "draft",
        "float",
        False,
    )
    with pytest.raises(
        ValueError, match="config key image_decode in config: expected one of fast, draft, device"
    ):
        TrainConfig.from_dict({"image_decode": "gpu"})
    text = build_parser().format_help() + " ".join(
        a.format_help() for a in build_parser()._subparsers._group_actions[0].choices.values()
    )
    for flag in ("--image-decode", "--worker-output", "--no-persistent-workers"):
        assert flag in text


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_epoch_gives_the_batches_of_the_whole_epoch(files, workers):
    """Mid-epoch resume (``start_step``) replays the remaining batches exactly, whatever the
    process's global RNG; with no workers the global RNG is left as it was."""
    torch.manual_seed(0)
    whole = [x for x, _ in _stream(files, persistent=False, workers=workers).epoch(0)]
    torch.manual_seed(1)
    before = torch.get_rng_state()
    tail = [x for x, _ in _stream(files, persistent=False, workers=workers).epoch(0, 3)]
    assert torch.equal(torch.get_rng_state(), before)
    assert len(tail) == 2 and len(whole) == 5
    for x, y in zip(whole[3:], tail, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(whole[3], whole[4])  # the batches differ: the comparison can fail


def test_the_number_of_workers_changes_no_batch(files):
    """Why ``num_workers`` may change on resume (``config.RESUME_FREE_KEYS``): each batch is
    seeded by its position, so no workers, one or two give the same batches."""
    runs = {}
    for workers in (0, 1, 2):
        torch.manual_seed(workers)
        stream = _stream(files, persistent=workers > 0, workers=workers)
        runs[workers] = [x for x, _ in stream.epoch(0)] + [x for x, _ in stream.epoch(1, 1)]
    for batches in (runs[1], runs[2]):
        assert len(batches) == len(runs[0]) == 5 + 4
        assert all(torch.equal(a, b) for a, b in zip(runs[0], batches, strict=True))
    assert not torch.equal(runs[0][0], runs[0][1])  # the batches differ: the comparison can fail


def test_decoding_on_the_device_skips_and_counts_a_jpeg_it_cannot_decode(files, tmp_path):
    """A JPEG whose header reads and whose end marker is there but whose data is broken (a
    marker in the middle of the scan): left out of its batch with its label, counted, named."""
    root, samples = files
    data = (root / "0.jpg").read_bytes()
    at = data.find(b"\xff\xda") + 40
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[:at] + b"\xff\xc4" + data[at + 2 :])
    cfg = TrainConfig(dataset="inat2018", image_size=16, image_decode="device").resolved()
    transform, collate, on_device = train_pipeline(cfg, DistContext())

    def batches(first):
        files_ = (root, [(first, 0), *samples[1:4]])
        stream = _stream(files_, persistent=False, transform=transform, collate=collate)
        stream.on_device, stream.sampler.shuffle = on_device, False
        return [(x, y) for x, y in stream.epoch(0)], stream.skipped

    with pytest.warns(BadImageWarning, match="broken.jpg"):
        [(x, y)], skipped = batches(str(broken))
    [(ref, ref_y)], ref_skipped = batches("0.jpg")
    assert (skipped, ref_skipped) == (1, 0) and y.tolist() == [1, 2, 3] == ref_y[1:].tolist()
    assert torch.equal(x, ref[1:])  # the others keep their own crops
    with Image.open(broken) as img:
        batch = collate_encoded([(transform(img), 0)])[0]
    with pytest.raises(OSError, match="cannot decode .*broken.jpg on cpu"):
        decode_batch(batch, 16, "cpu")  # without drop_bad: an error naming the file


def test_a_batch_larger_than_the_training_set_shrinks_to_it(files):
    root, samples = files
    data = ImageFileDataset(root, samples[:6], FastRandomResizedCrop(16))
    stream = LoaderStream(
        data, batch_size=16, seed=0, ctx=DistContext(), num_workers=0, collate=collate_channels_last
    )
    batches = list(stream.epoch(0))
    assert (stream.batch, stream.steps_per_epoch, len(batches)) == (6, 1, 1)
    assert sorted(batches[0][1].tolist()) == sorted(label for _, label in samples[:6])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_batch_of_unreadable_images_is_replaced_not_dropped(files, workers):
    """Every step gets a batch (the loop makes steps_per_epoch steps): a batch whose images are
    all unreadable is replaced by the epoch's previous readable one (at the start of an epoch
    the next one); an epoch with none left is a one-line error."""
    root, samples = files
    missing = [(f"missing-{i}.jpg", 0) for i in range(4)]
    order = [*missing, *samples[:4], *missing, *samples[4:8], *missing]
    stream = _stream((root, order), persistent=False, workers=workers)
    stream.sampler.shuffle = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = [(x, y) for x, y in stream.epoch(0, start_step=0)]
        assert len(got) == stream.steps_per_epoch == 5 and stream.skipped == 12
        for i, j in ((0, 1), (2, 1)):  # steps 0 and 2 get the batch of step 1
            assert torch.equal(got[i][0], got[j][0]) and torch.equal(got[i][1], got[j][1])
        assert [y.tolist() for _, y in got[1::2]] == [[0, 1, 2, 3], [0, 1, 2, 3]]
        assert not torch.equal(got[1][0], got[3][0]) and torch.equal(got[4][0], got[3][0])
        stream = _stream((root, missing * 2), persistent=False, workers=workers)
        with pytest.raises(ValueError, match="every image .* unreadable"):
            list(stream.epoch(0))


def test_the_fast_path_says_once_when_it_decodes_through_pil(monkeypatch, capsys):
    """Without the C extension the default path is ~20 % slower: rank 0 says why, once."""
    from classbalanced.data import pipeline

    fast = TrainConfig(dataset="inat2018", image_size=16).resolved()
    draft = TrainConfig(dataset="inat2018", image_size=16, image_decode="draft").resolved()
    for built in (True, False):
        monkeypatch.setattr(pipeline, "PARTIAL_JPEG_DECODING", built)
        train_pipeline(fast, DistContext())
        said = capsys.readouterr().err
        assert ("its C extension was not built; install a C compiler and libjpeg-dev" in said) == (
            not built
        )
        assert said.count("\n") == (0 if built else 1)
    train_pipeline(fast, DistContext(rank=1, world_size=2))  # not on the other ranks
    train_pipeline(draft, DistContext())  # nor for the paths without it
    assert capsys.readouterr().err == ""
