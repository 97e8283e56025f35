"""The sidebar every page starts with: pick a model and the data to judge it on."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import streamlit as st

from ..io import data as data_lib
from ..io import zoo
from ..io.architectures import LANGUAGE_MODELS
from ..io.specs import MAX_CLASSES
from ..runtime import memory
from .cache import load_data, load_model, load_upload, load_upload_data
from .engine import Choice, Loaded, upload_digest
from .errors import failing_as
from .state import Keys

DEFAULT_MODEL = "sample:digits-cnn"
ARCH_LABEL = "Architecture of a state_dict or .pt2"
SOURCES = ("Sample model", "torchvision architecture", "Upload a file")
NO_ARCH = "(none: a .pt2 program or a pickled module)"
NO_DATA = "(no data: weights only)"
UPLOAD_DATA = "Upload a data file"
_LAST_MODEL = "_sidebar_last_model"
POPULAR_TORCHVISION = ("resnet18", "resnet50", "mobilenet_v2", "vgg11", "efficientnet_b0")
# Unpickling a whole module runs code from the file, on the server: only the person who
# starts the server may allow it, never a visitor (issue 22)
TRUST_ENV = "PRUNELAB_ALLOW_TRUSTED_UPLOADS"
TRUST_SECRET = "allow_trusted_uploads"
TRUST_LABEL = "Trust this file"

# A widget belongs to its page: on another page the same key is a new widget, back at its
# default. So the sidebar's choices are also kept in plain session state and handed to the
# widgets on every page: a model picked on one page is the model on all of them.
# An uploaded file cannot be handed back to a file uploader: its bytes are kept instead
# (KeptFile, one model and one data file per session) and used on every page.
_CARRIED = (
    Keys.model_source,
    Keys.sample,
    Keys.torchvision_arch,
    Keys.upload_arch,
    Keys.upload_num_classes,
    Keys.upload_input,
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


def state_dict_samples() -> list[str]:
    """The sample architectures a state_dict can belong to: the classifiers.

    A language model's weights come as a save_pretrained directory (``hf:<dir>``), never a
    bare state_dict: offering one here would only end in "unknown architecture".
    """
    return [s for s in _sample_names() if s.removeprefix("sample:") not in LANGUAGE_MODELS]


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
    return _pick_upload()


@dataclass(frozen=True)
class KeptFile:
    """An uploaded file kept for the session: its name, the digest of its bytes, the bytes."""

    name: str
    digest: str
    payload: bytes = field(repr=False)


def trusted_uploads_allowed() -> bool:
    """Whether the server's operator allows unpickling uploaded modules.

    Off unless ``PRUNELAB_ALLOW_TRUSTED_UPLOADS=1`` is set where the server starts, or
    ``allow_trusted_uploads = true`` is in its ``.streamlit/secrets.toml``: both are in the
    operator's hands, nothing a visitor sends can change them.
    """
    if os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return st.secrets.load_if_toml_exists() and st.secrets.get(TRUST_SECRET) is True


def _uploaded(
    key: str, uploader: str, label: str, types: list[str]
) -> tuple[KeptFile | None, bool]:
    """The session's kept file under ``key`` (or a new upload), and whether it is new.

    A kept file shows as "Using uploaded file NAME" with Replace and Clear; the uploader
    appears only while there is none, or while it is being replaced.
    """
    kept: KeptFile | None = st.session_state.get(key)
    replacing = st.session_state.get(f"{key}_replacing", False)
    if kept is None or replacing:
        upload = st.sidebar.file_uploader(label, type=types, key=uploader)
        if upload is not None:
            payload = upload.getvalue()
            fresh = KeptFile(upload.name, upload_digest(payload), payload)
            if kept is None or fresh.digest != kept.digest:
                return fresh, True
    if kept is None:
        return None, False
    st.sidebar.markdown(f"Using uploaded file **{kept.name}**")
    replace, clear = st.sidebar.columns(2)
    replace.button(
        "Keep it" if replacing else "Replace",
        key=f"{key}_replace",
        on_click=_put,
        args=(f"{key}_replacing", not replacing),
    )
    clear.button("Clear", key=f"{key}_clear", on_click=_drop, args=(key,))
    return kept, False


def _put(key: str, value: object) -> None:
    st.session_state[key] = value


def _keep_file(key: str, kept: KeptFile) -> None:
    """Keep a file that loaded, and rerun at once: the sidebar then shows it as in use
    (the uploader, holding it only on this page, gives way to "Using uploaded file")."""
    st.session_state[key] = kept
    st.session_state[f"{key}_replacing"] = False
    st.rerun()


def _drop(key: str) -> None:
    st.session_state.pop(key, None)
    st.session_state[f"{key}_replacing"] = False


def _arch_options() -> str:
    """The spec's query for an uploaded file: which architecture a state_dict belongs to."""
    tv_names = [f"torchvision:{n}" for n in _torchvision_names()]
    arch = st.sidebar.selectbox(
        ARCH_LABEL,
        [NO_ARCH, *state_dict_samples(), *tv_names],
        **_kept(Keys.upload_arch),
        help="A state_dict holds only weights: say which architecture they belong to "
        "(type to search: sample models first, then torchvision's).",
    )
    if arch == NO_ARCH:
        return ""
    options = f"arch={arch}"
    if arch.startswith("torchvision:"):
        classes = st.sidebar.number_input(
            "Number of classes (0: read from the file)",
            min_value=0,
            max_value=MAX_CLASSES,
            step=1,
            **_kept(Keys.upload_num_classes),
            help="The size of the classifier's output; read from the file's last layer when 0.",
        )
        shape = st.sidebar.text_input(
            "Input size (channels x height x width)",
            placeholder="3x224x224",
            **_kept(Keys.upload_input),
        )
        if classes:
            options += f"&num_classes={int(classes)}"
        if shape.strip():
            options += f"&input={_shape_text(shape)}"
    return options


def _shape_text(text: str) -> str:
    """A typed input size, checked before it goes into a spec: sizes joined by 'x' only, so
    that nothing typed can add options (``&trust=1``) to the spec."""
    shape = text.strip().lower().replace(" ", "")
    if not re.fullmatch(r"[1-9]\d{0,5}(x[1-9]\d{0,5}){0,3}", shape):
        raise ValueError(
            f"input size {text[:40]!r} must be up to four positive sizes joined by 'x', "
            "e.g. 3x224x224 (channels x height x width)"
        )
    return shape


def _pick_upload() -> tuple[str, Loaded] | None:
    kept, fresh = _uploaded(
        Keys.model_file,
        Keys.upload,
        "Model file (.pt state_dict, .pt2 torch.export program, or pickled module)",
        ["pt", "pth", "pt2", "bin"],
    )
    options = _arch_options()
    allowed = trusted_uploads_allowed()
    trust = allowed and st.sidebar.checkbox(
        f"{TRUST_LABEL} (allow unpickling a whole module: it runs code from the file)",
        **_kept(Keys.trust),
    )
    if kept is None:
        st.sidebar.info("Upload a model file to continue.")
        return None
    try:
        loaded = load_upload(kept.digest, kept.name, options, trust, kept.payload)
    except zoo.TrustRequired as exc:
        raise ValueError(_trust_message(kept.name, allowed, exc.kind)) from None
    if fresh:  # kept only once it loads: a bad file stays in the uploader to be replaced
        _keep_file(Keys.model_file, kept)
    return f"upload:{kept.digest}:{options}:{trust}", loaded


def _trust_message(name: str, allowed: bool, kind: str = "pickle") -> str:
    if kind == "program":  # its weights alone load safely: say that first
        return (
            f"{name} is a torch.export program. To prune it, pick its architecture under "
            f"'{ARCH_LABEL}' in the sidebar: only its weights are then read, and nothing from "
            "the file runs. Loading it as a program would run code from the file on this server"
            + (
                f": tick '{TRUST_LABEL}' only if you trust the file."
                if allowed
                else f", which only trusted uploads may do (allowed by {TRUST_ENV}=1 when the "
                "server starts)."
            )
        )
    what = (
        f"{name} holds a pickled Python object (a whole module), and unpickling it runs code "
        "from the file on this server."
    )
    instead = (
        "Or upload a state_dict (torch.save(model.state_dict(), path)) and pick its "
        f"architecture under '{ARCH_LABEL}'."
    )
    if allowed:
        return f"{what} Tick '{TRUST_LABEL}' in the sidebar only if you trust the file. {instead}"
    return (
        f"{what} This server does not load such files: the person who runs it can allow "
        f"trusted uploads by starting it with {TRUST_ENV}=1 (see the README). {instead}"
    )


def _data_label(spec: str) -> str:
    """Data made to fit a model, in words: no one should read its fidelity as accuracy."""
    if spec.startswith("sample:digits?"):
        options = data_lib.parse_spec(spec, schemes=("sample",)).options
        labels = "" if options.get("labels", "1") != "0" else ", no labels"
        return f"digits resized to {options.get('input', '1x8x8')}{labels}"
    return spec


def _pick_data(model_key: str, bundle: zoo.ModelBundle) -> tuple[str | None, object | None]:
    default = bundle.default_data
    labels = [NO_DATA, *data_lib.list_datasets(), UPLOAD_DATA]
    if default is not None and default not in labels:
        labels.insert(1, default)  # data made to fit this model (torchvision: resized digits)
    index = labels.index(default) if default in labels else 0
    if st.session_state.get(_LAST_MODEL) != model_key:
        # a new model starts on its own data, not on whatever fitted the previous one
        st.session_state[_LAST_MODEL] = model_key
        _set(Keys.data_choice, labels[index])
    if st.session_state.get(Keys.data_choice) not in labels:
        _set(Keys.data_choice, labels[index])
    choice = st.sidebar.selectbox(
        "Evaluation data",
        labels,
        **_kept(Keys.data_choice),
        format_func=_data_label,
        help="Accuracy, loss and fidelity are measured on this data's test split. Without "
        "labels, only fidelity to the dense model (agreement, KL) is measured: torchvision "
        "models get the bundled digits resized to their input, without labels, since any "
        "accuracy of an ImageNet model on digits would mean nothing.",
    )
    if choice == NO_DATA:
        return None, None
    if choice == UPLOAD_DATA:
        kept, fresh = _uploaded(
            Keys.data_file,
            Keys.data_upload,
            "Data file (torch.save dict with tensors x and y)",
            ["pt", "pth"],
        )
        if kept is None:
            st.sidebar.info("Upload a data file, or pick other data.")
            return None, None
        spec = f"upload:{kept.digest}:{kept.name}"
        data = load_upload_data(kept.digest, kept.name, kept.payload)
        _check_fits(bundle, data, f"file:{kept.name}")
        if fresh:
            _keep_file(Keys.data_file, kept)
        return spec, data
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
    # an error here ends the page at the page's error boundary, which says what failed
    with failing_as("Could not load that"):
        picked = _pick_model()
        if picked is None:
            st.stop()
        model_key, loaded = picked
        data_spec, data = _pick_data(model_key, loaded.bundle)
    bundle = loaded.bundle
    choice = Choice(model_key=model_key, loaded=loaded, data_spec=data_spec, data=data)
    tokens = bundle.task == "language-model"
    unit = "sequences" if tokens else "samples"
    about_data = "" if data is None else f"; data {data_name(choice)} ({len(data):,} {unit})"
    shape = "x".join(map(str, bundle.input_shape))
    about_input = f"{shape} tokens per sequence" if tokens else f"input {shape}"
    st.sidebar.caption(
        f"**{bundle.name}**: {loaded.parameters:,} parameters "
        f"({memory.format_bytes(loaded.model_bytes)} in memory), {about_input}{about_data}"
    )
    return choice


def data_name(choice: Choice) -> str:
    """The chosen data in words: uploaded data by its file name (not the digest that keys
    the caches), data made to fit a model by what it is."""
    if choice.data_spec is None:
        return "no data"
    if choice.data_spec.startswith("upload:"):
        return getattr(choice.data, "name", "uploaded data")
    return _data_label(choice.data_spec)
