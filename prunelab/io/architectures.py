"""Architectures of the sample models, shared by ``sample_models/build.py`` and the zoo.

All digits models take images of shape ``(1, 8, 8)`` with values in [0, 1] (scikit-learn's
8x8 digits, see :mod:`prunelab.data`), so one dataset fits every one of them; the MLP
flattens its input itself. The sentiment LSTM takes int64 token ids of shape ``(16,)``,
left-padded with 0, and classifies from its last hidden state.

>>> import torch
>>> model = build("digits-cnn")
>>> model(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "LANGUAGE_MODELS",
    "DigitsCNN",
    "DigitsMLP",
    "DigitsResNet",
    "ResidualBlock",
    "SampleArchitecture",
    "SampleLanguageModel",
    "SentimentLSTM",
    "build",
    "sample_architecture_of",
]

DIGITS_SHAPE = (1, 8, 8)
DIGITS_CLASSES = tuple(str(d) for d in range(10))
SENTIMENT_LENGTH = 16
SENTIMENT_CLASSES = ("negative", "positive")


class DigitsMLP(nn.Module):
    """A 64-300-100-10 multilayer perceptron in the spirit of LeNet-300-100.

    Args:
        hidden: Sizes of the two hidden layers.
    """

    def __init__(self, *, hidden: tuple[int, int] = (300, 100)) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(self.flatten(x)))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class DigitsCNN(nn.Module):
    """A small LeNet-style CNN: conv, max-pool, conv, linear.

    Args:
        channels: Output channels of the two convolutions.
    """

    def __init__(self, *, channels: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)  # 8x8 -> 4x4
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel_size=3, padding=1)
        self.fc = nn.Linear(channels[1] * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with a skip connection (1x1 conv when shapes change).

    The addition couples the output channels of ``conv2`` with those of the shortcut, which is
    what makes channel pruning of residual networks dependency-aware.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class DigitsResNet(nn.Module):
    """A small residual CNN with BatchNorm: a stem and three residual blocks.

    Layout: conv3x3(16)+BN -> block(16) -> block(16->32, stride 2, 1x1 shortcut) ->
    block(32) -> global average pool -> linear(10).

    Args:
        width: Channels of the stem and first block; the later blocks use twice as many.
    """

    def __init__(self, *, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.layer1 = ResidualBlock(width, width)
        self.layer2 = ResidualBlock(width, 2 * width, stride=2)
        self.layer3 = ResidualBlock(2 * width, 2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class SentimentLSTM(nn.Module):
    """Embedding, one LSTM layer and a linear classifier on the last hidden state.

    Inputs are left-padded with token 0, so the last time step is always a real word.

    Args:
        vocab_size: Number of token ids (0 is padding).
        embedding_dim: Size of the word embeddings.
        hidden_size: Size of the LSTM state.
    """

    def __init__(self, *, vocab_size: int, embedding_dim: int = 32, hidden_size: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(self.embedding(tokens))
        return self.fc(hidden[-1])


@dataclass(frozen=True)
class SampleArchitecture:
    """How to build one sample model and what it consumes.

    Attributes:
        name: Sample model name, e.g. ``"digits-cnn"``.
        model_class: The class of the model.
        factory: Builds the untrained model.
        input_shape: Shape of one input, without the batch dimension.
        input_dtype: Dtype of the input.
        class_names: Names of the output classes, in output order.
        data: Spec of the data the model was trained on (see :func:`prunelab.io.data.load`).
        description: One line for model listings.
    """

    name: str
    model_class: type[nn.Module]
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    class_names: tuple[str, ...]
    data: str
    description: str


def _sentiment_lstm() -> nn.Module:
    from .sentiment import sentiment_vocabulary

    return SentimentLSTM(vocab_size=len(sentiment_vocabulary()))


ARCHITECTURES: dict[str, SampleArchitecture] = {
    arch.name: arch
    for arch in (
        SampleArchitecture(
            "digits-mlp",
            DigitsMLP,
            DigitsMLP,
            DIGITS_SHAPE,
            torch.float32,
            DIGITS_CLASSES,
            "sample:digits",
            "64-300-100-10 MLP (LeNet-300-100 style) on 8x8 digits",
        ),
        SampleArchitecture(
            "digits-cnn",
            DigitsCNN,
            DigitsCNN,
            DIGITS_SHAPE,
            torch.float32,
            DIGITS_CLASSES,
            "sample:digits",
            "LeNet-style CNN (conv, pool, conv, linear) on 8x8 digits",
        ),
        SampleArchitecture(
            "digits-resnet",
            DigitsResNet,
            DigitsResNet,
            DIGITS_SHAPE,
            torch.float32,
            DIGITS_CLASSES,
            "sample:digits",
            "residual CNN with BatchNorm, three residual blocks, on 8x8 digits",
        ),
        SampleArchitecture(
            "sentiment-lstm",
            SentimentLSTM,
            _sentiment_lstm,
            (SENTIMENT_LENGTH,),
            torch.int64,
            SENTIMENT_CLASSES,
            "sample:sentiment",
            "embedding + LSTM + linear on the synthetic sentiment set",
        ),
    )
}


@dataclass(frozen=True)
class SampleLanguageModel:
    """A sample causal language model: a Hugging Face GPT-2 saved as a directory.

    Unlike the other samples it is stored the way Hugging Face stores models
    (``sample_models/<name>/``: ``config.json``, ``model.safetensors`` and the tokenizer
    files), so it loads through the same code as a user's ``hf:<directory>``.

    Attributes:
        name: Sample model name, e.g. ``"pydoc-gpt"``.
        config: Keyword arguments of ``transformers.GPT2Config``.
        data: Spec of the token data it was trained and is judged on.
        description: One line for model listings.
    """

    name: str
    config: Mapping[str, object]
    data: str
    description: str

    @property
    def context(self) -> int:
        """Tokens per sequence (GPT-2's ``n_positions``)."""
        return int(self.config["n_positions"])


LANGUAGE_MODELS: dict[str, SampleLanguageModel] = {
    "pydoc-gpt": SampleLanguageModel(
        "pydoc-gpt",
        # small enough to train on one CPU core in minutes and ship in a few MB
        {
            "vocab_size": 1024,
            "n_positions": 128,
            "n_embd": 128,
            "n_layer": 4,
            "n_head": 4,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "tie_word_embeddings": True,
        },
        "sample:pydoc-text",
        "4-layer GPT-2 (Hugging Face, Conv1D, tied head) on CPython's help texts",
    ),
}


def sample_architecture_of(model: nn.Module) -> SampleArchitecture | None:
    """The sample architecture whose class ``model`` is an instance of, if any."""
    return next((a for a in ARCHITECTURES.values() if type(model) is a.model_class), None)


def build(name: str) -> nn.Module:
    """A freshly initialised (untrained) sample architecture, in eval mode.

    Raises:
        ValueError: If ``name`` is not a sample architecture.

    >>> type(build("digits-mlp")).__name__
    'DigitsMLP'
    """
    if name not in ARCHITECTURES:
        raise ValueError(
            f"unknown sample architecture {name!r}; available: {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name].factory().eval()
