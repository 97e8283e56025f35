"""prunelab.data: the bundled samples, torchvision datasets from disk, tensors from files."""

from __future__ import annotations

import struct
import sys
from collections import Counter

import pytest
import torch
from torch.utils.data import Subset

from prunelab.io import data, sentiment
from prunelab.runtime.batches import iter_batches

# -- digits --------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_scaled():
    train = data.load("sample:digits", split="train")
    test = data.load("sample:digits", split="test")
    assert (len(train), len(test)) == (1347, 450)
    assert tuple(test.inputs.shape[1:]) == (1, 8, 8)
    assert test.inputs.dtype == torch.float32 and test.labels.dtype == torch.int64
    assert float(train.inputs.min()) >= 0.0 and float(train.inputs.max()) <= 1.0
    # stratified: every class has a quarter of its images in the test split (+-1)
    total = Counter(train.labels.tolist()) + Counter(test.labels.tolist())
    for label, count in Counter(test.labels.tolist()).items():
        assert abs(count - total[label] * 0.25) <= 1
    again = data.load("digits", split="test")  # a bare name means the sample set
    assert torch.equal(again.inputs, test.inputs) and torch.equal(again.labels, test.labels)
    assert test.class_names == tuple("0123456789")


def test_limit_keeps_the_first_samples():
    head = data.load("sample:digits", limit=7)
    full = data.load("sample:digits")
    assert len(head) == 7
    assert torch.equal(head.inputs, full.inputs[:7])


def test_loaded_data_is_a_fresh_copy():
    first = data.load("sample:digits")
    first.inputs.zero_()
    assert float(data.load("sample:digits").inputs.sum()) > 0


# -- synthetic sentiment -------------------------------------------------------------------


def _reference_label(text: str) -> int:
    """An independent reading of the generator's rules: the last clause decides."""
    words = text.split()
    cut = max((i for i, w in enumerate(words) if w in ("but", "and")), default=-1)
    clause = words[cut + 1 :]
    positive = any(w in sentiment._POSITIVE for w in clause)
    negated = any(w in sentiment._NEGATORS for w in clause)
    return int(positive != negated)


def test_digits_resized_for_an_image_model_are_unlabelled_digits():
    spec = "sample:digits?input=3x32x32&labels=0&limit=5"
    resized = data.load(spec)
    assert resized.inputs.shape == (5, 3, 32, 32) and resized.labels is None
    assert resized.name == spec  # the spec says what the data is wherever it is shown
    assert torch.equal(resized.inputs[:, 0], resized.inputs[:, 2])  # grey in every channel
    assert resized.inputs.min() >= 0 and resized.inputs.max() <= 1
    assert torch.equal(resized.inputs, data.load(spec).inputs)  # the same every time
    # the real digits, not noise: each image shrunk back to 8x8 is nearest its own digit
    plain = data.load("sample:digits", limit=5).inputs.flatten(1)
    down = torch.nn.functional.interpolate(resized.inputs[:, :1], size=(8, 8), mode="area")
    assert torch.cdist(down.flatten(1), plain).argmin(dim=1).tolist() == [0, 1, 2, 3, 4]
    labelled = data.load("sample:digits?input=1x16x16&limit=3")
    assert labelled.labels.tolist() == data.load("sample:digits", limit=3).labels.tolist()
    assert data.digits_for((16,)) is None


def test_digits_for_a_model_keep_every_pass_quick():
    # about as many input values as 16 images of 3x224x224; all 450 when they are small
    assert data.digits_for((3, 224, 224)) == "sample:digits?input=3x224x224&labels=0&limit=16"
    assert data.digits_for((3, 64, 64)).endswith("limit=196")
    assert data.digits_for((3, 32, 32)).endswith("limit=450")
    assert data.digits_for((3, 512, 512)).endswith("limit=16")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sample:digits?input=3x224", "channels x height x width"),
        ("sample:digits?input=3xbig", "positive sizes joined by 'x'"),
        ("sample:digits?limit=0", "at least 1"),
        ("sample:digits?labels=maybe", "must be 1/0"),
        ("sample:digits?size=3", "unknown option"),
        ("sample:sentiment?limit=3", "unknown option"),
    ],
)
def test_digits_options_are_checked(spec, message):
    with pytest.raises(ValueError, match=message):
        data.load(spec)


def test_sentiment_is_deterministic_disjoint_and_follows_its_rules():
    train, test = data.sentiment_sentences("train"), data.sentiment_sentences("test")
    assert (len(train), len(test)) == (3000, 1000)
    assert not {t for t, _ in train} & {t for t, _ in test}
    assert train == data.sentiment_sentences("train")
    for text, label in train + test:
        assert label == _reference_label(text), text
    texts = " ".join(t for t, _ in train)
    assert " not " in texts and " but " in texts
    assert 0.4 < sum(label for _, label in train) / len(train) < 0.6


def test_sentiment_tensors():
    test = data.load("sample:sentiment")
    assert tuple(test.inputs.shape) == (1000, 16) and test.inputs.dtype == torch.int64
    assert test.class_names == ("negative", "positive")
    assert int(test.inputs.max()) < len(data.sentiment_vocabulary())


def test_encode_pads_left_keeps_the_end_and_marks_unknown_words():
    ids = data.encode("Not bad, zebra")
    vocabulary = data.sentiment_vocabulary()
    assert ids.shape == (1, 16) and ids.dtype == torch.int64
    assert ids[0, :13].tolist() == [0] * 13
    assert [vocabulary[i] for i in ids[0, 13:].tolist()] == ["not", "bad", "<unk>"]
    long = data.encode(" ".join(["the"] * 20 + ["good"]))
    assert vocabulary[int(long[0, -1])] == "good" and int(long[0, 0]) != 0
    assert data.decode(data.encode(["the plot was not good"])) == ["the plot was not good"]


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("sample:imagenet", {}, "available: sample:digits, sample:sentiment"),
        ("sample:digits?shuffle=1", {}, "unknown option(s) shuffle"),
        ("sample:digits", {"split": "val"}, "split must be one of train, test"),
        ("sample:digits", {"limit": 0}, "limit must be a positive integer"),
        ("hub:foo", {}, "expected one of sample:..., torchvision:..., file:..."),
        ("torchvision:SVHN", {}, "available: MNIST, FashionMNIST, CIFAR10"),
        ("", {}, "non-empty string"),
    ],
)
def test_bad_specs_say_what_is_accepted(spec, kwargs, message):
    with pytest.raises(ValueError) as info:
        data.load(spec, **kwargs)
    assert message in str(info.value)


# -- files ---------------------------------------------------------------------------------


def test_file_with_inputs_and_labels(tmp_path):
    x, y = torch.rand(5, 3), torch.tensor([0, 1, 2, 1, 0])
    torch.save({"x": x, "y": y, "class_names": ["a", "b", "c"]}, tmp_path / "d.pt")
    loaded = data.load(f"file:{tmp_path / 'd.pt'}", limit=4)
    assert len(loaded) == 4 and torch.equal(loaded.labels, y[:4])
    assert loaded.class_names == ("a", "b", "c")
    batch = next(iter_batches(loaded, batch_size=8))
    assert torch.equal(batch.inputs, x[:4])


def test_file_without_labels_is_unlabelled(tmp_path):
    torch.save({"x": torch.rand(4, 2)}, tmp_path / "x.pt")
    loaded = data.load(str(tmp_path / "x.pt"))  # a bare existing path means file:
    assert loaded.labels is None
    assert next(iter_batches(loaded)).labels is None


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(f"file:{tmp_path / 'missing.pt'}")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="must hold a dict with a tensor 'x'"):
        data.load(f"file:{tmp_path / 'list.pt'}")
    torch.save({"x": torch.rand(3, 2), "y": torch.tensor([0, 1])}, tmp_path / "short.pt")
    with pytest.raises(ValueError, match="2 labels for 3 inputs"):
        data.load(f"file:{tmp_path / 'short.pt'}")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read data file"):
        data.load(f"file:{tmp_path / 'junk.pt'}")


# -- torchvision ---------------------------------------------------------------------------


def _write_idx(path, array: torch.Tensor, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


def _tiny_mnist(root, *, train: int = 6, test: int = 4) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for prefix, n in (("train", train), ("t10k", test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=generator)
        images[0] = 255  # a known all-white image
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 0x00000803)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n) % 10, 0x00000801)


def test_torchvision_mnist_from_its_on_disk_format(tmp_path):
    _tiny_mnist(tmp_path)
    test = data.load(f"torchvision:MNIST?root={tmp_path}")
    assert len(test) == 4
    image, label = test[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert float(image.min()) == 1.0  # all-white image scaled to [0, 1]
    assert label == 0
    train = data.load(f"torchvision:mnist?root={tmp_path}", split="train", limit=3)
    assert isinstance(train, Subset) and len(train) == 3
    assert data.class_names(train)[0].startswith("0")
    batch = next(iter_batches(test, batch_size=3))
    assert batch.inputs.shape == (3, 1, 28, 28) and batch.labels.tolist() == [0, 1, 2]


def test_torchvision_dataset_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match=r"not found under .*download=1"):
        data.load(f"torchvision:FashionMNIST?root={tmp_path}")


def test_missing_torchvision_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(data.TorchvisionUnavailable, match="not installed"):
        data.load("torchvision:MNIST")
    assert len(data.load("sample:digits", limit=2)) == 2


def test_broken_torchvision_says_why_and_the_rest_works(broken_torchvision):
    with pytest.raises(data.TorchvisionUnavailable) as info:
        data.load("torchvision:CIFAR10")
    message = str(info.value)
    assert "installed but cannot be imported" in message and "torchvision::nms" in message
    assert isinstance(info.value, ValueError)  # the CLI prints it as one line
    assert len(data.load("sample:sentiment", limit=3)) == 3
