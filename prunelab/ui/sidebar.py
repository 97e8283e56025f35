"""The sidebar every page starts with: pick a model and the data to judge it on."""

from __future__ import annotations

import streamlit as st

from .. import data as data_lib
from .. import memory, zoo
from .engine import Choice, Loaded, load_data, load_model, load_upload, upload_digest
from .state import Keys

DEFAULT_MODEL = "sample:digits-cnn"
SOURCES = ("Sample model", "torchvision architecture", "Upload a file")
_LAST_MODEL = "_sidebar_last_model"
POPULAR_TORCHVISION = ("resnet18", "resnet50", "mobilenet_v2", "vgg11", "efficientnet_b0")

# A widget belongs to its page: on another page the same key is a new widget, back at its
# default. So the sidebar's choices are also kept in plain session state and handed to the
# widgets on every page: a model picked on one page is the model on all of them.
# (An uploaded file cannot be handed back to a file uploader; it is uploaded again.)
_CARRIED = (
    Keys.model_source,
    Keys.sample,
    Keys.torchvision_arch,
    Keys.upload_arch,
    Keys.trust,
    Keys.data_choice,
    Keys.data_root,
)
_KEPT = "_sidebar_kept_"


def _keep(key: str) -> None:
    st.session_state[_KEPT + key] = st.session_state[key]


def _kept(key: str) -> dict[str, object]:
    """A widget's key, and the callback that keeps its value for the other pages."""
    return {"key": key, "on_change": _keep, "args": (key,)}


def _set(key: str, value: object) -> None:
    st.session_state[key] = value
    st.session_state[_KEPT + key] = value


def _carry_choices() -> None:
    for key in _CARRIED:
        if _KEPT + key in st.session_state:
            st.session_state[key] = st.session_state[_KEPT + key]


def _sample_names() -> list[str]:
    return zoo.list_models(torchvision=False)


def _torchvision_names() -> list[str]:
    names = [s.removeprefix("torchvision:") for s in zoo.list_models() if s.startswith("torch")]
    popular = [n for n in POPULAR_TORCHVISION if n in names]
    return popular + [n for n in names if n not in popular]


def _pick_model() -> tuple[str, Loaded] | None:
    source = st.sidebar.radio("Model source", SOURCES, **_kept(Keys.model_source))
    if source == SOURCES[0]:
        specs = _sample_names()
        if Keys.sample not in st.session_state:
            _set(Keys.sample, DEFAULT_MODEL)
        spec = st.sidebar.selectbox(
            "Sample model",
            specs,
            **_kept(Keys.sample),
            help="Small models trained on bundled data; see sample_models/ for their cards.",
        )
        return spec, load_model(spec)
    if source == SOURCES[1]:
        try:
            data_lib.import_torchvision()
        except ValueError as exc:  # installed but broken: the message says why
            st.sidebar.error(str(exc))
            return None
        names = _torchvision_names()
        arch = st.sidebar.selectbox(
            "Architecture",
            names,
            **_kept(Keys.torchvision_arch),
            help="Random weights (no download); input 3x224x224.",
        )
        return f"torchvision:{arch}", load_model(f"torchvision:{arch}")
    upload = st.sidebar.file_uploader(
        "Model file (.pt state_dict, .pt2 torch.export program, or pickled module)",
        type=["pt", "pth", "pt2", "bin"],
        key=Keys.upload,
    )
    arch = st.sidebar.selectbox(
        "Architecture of a state_dict",
        ["(none: a .pt2 program or a pickled module)", *_sample_names()],
        **_kept(Keys.upload_arch),
        help="A state_dict holds only weights: say which architecture they belong to.",
    )
    trust = st.sidebar.checkbox(
        "Trust this file (allow unpickling a whole module: it can run code)",
        **_kept(Keys.trust),
    )
    if upload is None:
        st.sidebar.info("Upload a model file to continue.")
        return None
    payload = upload.getvalue()
    digest = upload_digest(payload)
    arch_spec = None if arch.startswith("(none") else arch
    loaded = load_upload(digest, upload.name, arch_spec, trust, payload)
    return f"upload:{digest}:{arch_spec}", loaded


def _pick_data(bundle: zoo.ModelBundle) -> tuple[str | None, object | None]:
    options = data_lib.list_datasets()
    default = bundle.default_data
    labels = ["(no data: weights only)", *options]
    index = labels.index(default) if default in labels else 0
    if st.session_state.get(_LAST_MODEL) != bundle.spec:
        # a new model starts on its own data, not on whatever fitted the previous one
        st.session_state[_LAST_MODEL] = bundle.spec
        _set(Keys.data_choice, labels[index])
    choice = st.sidebar.selectbox(
        "Evaluation data",
        labels,
        **_kept(Keys.data_choice),
        help="Accuracy, loss and fidelity are measured on this data's test split.",
    )
    if choice == labels[0]:
        return None, None
    spec = choice
    if choice.startswith("torchvision:"):
        root = st.sidebar.text_input(
            "Dataset folder (root)",
            **_kept(Keys.data_root),
            placeholder="/path/to/data",
        )
        if not root:
            st.sidebar.info("Give the folder that holds the dataset files.")
            return None, None
        # built from its parts: a typed folder cannot add options (download=1) to the spec
        spec = data_lib.torchvision_spec(choice.removeprefix("torchvision:"), root)
    data = load_data(spec)
    _check_fits(bundle, data, spec)
    return spec, data


def _check_fits(bundle: zoo.ModelBundle, data: object, spec: str) -> None:
    sample = data[0] if hasattr(data, "__getitem__") else None
    x = sample[0] if isinstance(sample, (tuple, list)) else sample
    if x is None:
        return
    if tuple(x.shape) != tuple(bundle.input_shape) or x.dtype != bundle.input_dtype:
        raise ValueError(
            f"{spec} gives inputs of shape {tuple(x.shape)} ({x.dtype}), but "
            f"{bundle.name} takes {tuple(bundle.input_shape)} ({bundle.input_dtype}); "
            "pick data that fits the model, or no data"
        )


def sidebar() -> Choice:
    """Show the model and data pickers; stop the page (with an explanation) if unusable."""
    st.sidebar.header("Model and data")
    _carry_choices()
    try:
        picked = _pick_model()
        if picked is None:
            st.stop()
        model_key, loaded = picked
        data_spec, data = _pick_data(loaded.bundle)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        st.error(f"Could not load that: {exc}")
        st.stop()
    bundle = loaded.bundle
    st.sidebar.caption(
        f"**{bundle.name}**: {loaded.parameters:,} parameters "
        f"({memory.format_bytes(loaded.model_bytes)} in memory), input "
        f"{tuple(bundle.input_shape)}"
        + (f"; data {data_spec} ({len(data):,} samples)" if data is not None else "")
    )
    return Choice(model_key=model_key, loaded=loaded, data_spec=data_spec, data=data)
