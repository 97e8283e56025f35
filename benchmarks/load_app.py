"""Many users at once: N sessions of the real app, all at the same time.

Run: ``uv run python benchmarks/load_app.py [--sessions 20]``

Starts ``streamlit run app.py`` on a free loopback port (as the browser test does) and connects
N websocket clients that speak the browser's own protocol (Streamlit's protobuf BackMsg and
ForwardMsg, widget states, fragment reruns, cached-message references). Session i:

1. opens the Prune page (by its address) and picks sample model i mod 4 (digits-mlp, digits-cnn,
   digits-resnet, sentiment-lstm) in the sidebar;
2. moves the sparsity slider to three values no other session uses;
3. opens the Sensitivity page (the model must still be its own there), sets 3 levels and a
   sample count of its own, runs the analysis, and moves the recipe's target slider.

Every interaction waits for the server's "script finished". After each, the page is checked
against what this session asked for, computed independently in this process with prunelab:
the model's name, the sparsity, the exact count of nonzero weights and the accuracy of its own
masks, and every cell of its own sensitivity heatmap. A session that saw another session's
model, masks or table, an error box or a traceback fails the run (exit status 1).

The server runs with Streamlit's file watcher off, as .streamlit/config.toml sets it
(``--watch-files`` turns it on, as plain ``streamlit run`` has it elsewhere): on a shared
server nobody edits the pages, and after every rerun that imported anything (torch imports
lazily) the watcher goes through all loaded modules, thousands with torch. Measured here with 2
sessions: 2.5x the throughput with it off.

Phases: a first visitor opens the Prune page (the server imports torch and prunelab); four
sessions open Prune on the four sample models (warm-up, not counted: a class's server has its
models loaded); one session runs the whole workflow alone (the baseline); then the N sessions
run it at the same time. ``--no-baseline`` skips the warm-up and the baseline.

Printed: throughput (interactions per second) and the slowest interaction, as ratios against
the baseline measured in the same run, and the server's resident memory before and after the
N sessions and at its peak (VmHWM). Models, Pruners and finished results are shared between
sessions by design, in bounded caches; every session's sparsities and sample count are its
own, so its masks and its sensitivity run are its own too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prunelab import Pruner, figures  # noqa: E402
from prunelab.analysis.evaluation import evaluate  # noqa: E402
from prunelab.core.targets import targets  # noqa: E402
from prunelab.figures import fmt  # noqa: E402
from prunelab.io import data, zoo  # noqa: E402
from prunelab.runtime import memory  # noqa: E402
from prunelab.sweeps import SensitivityConfig, sensitivity  # noqa: E402
from prunelab.ui.state import Keys  # noqa: E402
from tests.browser._serve import streamlit_app  # noqa: E402

SAMPLES = (
    "sample:digits-mlp",
    "sample:digits-cnn",
    "sample:digits-resnet",
    "sample:sentiment-lstm",
)
LEVELS = (0.3, 0.6, 0.9)  # what "3" on the Sensitivity page's Levels slider means
STRATEGY = "global-magnitude"  # the Prune page's default
SENSITIVITY_STRATEGY = "layer-magnitude"  # the Sensitivity page's default
MOVES = 3  # sparsity slider moves per session
TIMEOUT = 300.0  # seconds for one interaction
FINISHED = (
    ForwardMsg.FINISHED_SUCCESSFULLY,
    ForwardMsg.FINISHED_WITH_COMPILE_ERROR,
    ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY,
)


# -- what each session does, and what it must see ----------------------------------------


@dataclass(frozen=True)
class Plan:
    """One session's model and settings; sparsities and sample counts differ per session."""

    index: int
    spec: str
    sparsities: tuple[float, ...]
    subset: int
    target: float

    @classmethod
    def for_session(cls, index: int, *, moves: int = MOVES) -> Plan:
        # 0.10, 0.11, ... 0.94: 85 slider positions, each session's own (for up to 28 sessions
        # of 3 moves)
        sparsities = tuple(round(0.10 + 0.01 * ((MOVES * index + k) % 85), 2) for k in range(moves))
        return cls(
            index=index,
            spec=SAMPLES[index % len(SAMPLES)],
            sparsities=sparsities,
            subset=48 + (16 * (index // len(SAMPLES))) % 320,
            target=round(0.05 * (2 + index % 15), 2),
        )


@dataclass
class Expected:
    """What a session's pages must show, computed here with prunelab."""

    name: str
    prune: dict[float, dict[str, str]] = field(default_factory=dict)  # sparsity -> metrics
    heatmap: dict[int, np.ndarray] = field(default_factory=dict)  # subset -> drop grid


def expectations(plans: list[Plan], *, prune_only: list[Plan]) -> dict[str, Expected]:
    found: dict[str, Expected] = {}
    prepared: dict[str, tuple] = {}
    for plan in [*plans, *prune_only]:
        if plan.spec not in prepared:
            bundle = zoo.load(plan.spec)
            test = data.load(bundle.default_data, split="test")
            prepared[plan.spec] = bundle.model, test, Pruner(bundle.model, STRATEGY)
            found[plan.spec] = Expected(name=bundle.name)
        model, test, pruner = prepared[plan.spec]
        expected = found[plan.spec]
        for sparsity in plan.sparsities:
            masks = pruner.masks(sparsity=sparsity)
            kept = int(masks.per_layer()["kept"].sum())
            accuracy = evaluate(model, test, masks=masks)["accuracy"]
            expected.prune[sparsity] = {
                "Sparsity": f"{masks.sparsity():.1%}",
                "Nonzero weights": fmt.count(kept),
                "Accuracy": fmt.percent(accuracy),
            }
        if plan in prune_only:
            continue
        table = sensitivity(
            model,
            test,
            sparsities=LEVELS,
            strategy=SENSITIVITY_STRATEGY,
            config=SensitivityConfig(
                layers=[t.fqn for t in targets(model)],
                method="evaluate",
                metric="accuracy",
                subset=plan.subset,
            ),
        )
        expected.heatmap[plan.subset] = np.asarray(
            figures.sensitivity_heatmap(table).data[0].z, dtype=float
        )
    return found


# -- a client of the real server ------------------------------------------------------------


@dataclass
class Element:
    kind: str
    proto: object
    fragment: str


class Client:
    """One browser tab's worth of Streamlit protocol over a websocket."""

    def __init__(self, url: str) -> None:
        self._url = url.replace("http://", "ws://") + "/_stcore/stream"
        self._ws = None
        self.pages: dict[str, str] = {}
        self.page = ""
        self.elements: dict[tuple[int, ...], Element] = {}
        self._states: dict[str, WidgetState] = {}
        self._cache: dict[str, ForwardMsg] = {}  # messages the server may refer to by hash
        self.endings: list[int] = []  # how the runs of the last interaction ended

    async def __aenter__(self) -> Client:
        self._ws = await websockets.connect(self._url, subprotocols=["streamlit"], max_size=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()

    async def open(self, page: str) -> float:
        """Open a page (as a click in the page menu); seconds until the script finished."""
        self.page = page
        return await self._rerun(fragment="")

    async def set(self, key: str, **value: object) -> float:
        """Change the widget with this key (as the user would); seconds until finished."""
        found = self.widget(key)
        state = WidgetState(id=found.proto.id)
        for kind, content in value.items():
            if kind.endswith("_array_value"):
                getattr(state, kind).data.extend(content)
            else:
                setattr(state, kind, content)
        self._states[state.id] = state
        try:
            return await self._rerun(fragment=found.fragment)
        finally:
            if "trigger_value" in value:
                del self._states[state.id]  # a click happens once

    def widget(self, key: str) -> Element:
        for element in self.elements.values():
            if getattr(element.proto, "id", "").endswith(f"-{key}"):
                return element
        raise KeyError(f"no widget with key {key!r} on {self.page}; {self.describe()}")

    def button(self, label: str) -> str:
        for element in self.elements.values():
            if element.kind == "button" and element.proto.label.startswith(label):
                return element.proto.id.rsplit("-", 1)[-1]
        raise KeyError(f"no button {label!r} on {self.page}; {self.describe()}")

    def describe(self) -> str:
        """What the page shows, in short, for a failure message."""
        alerts = [a.body[:80] for a in self.of_kind("alert")]
        buttons = [b.label for b in self.of_kind("button")]
        return f"runs ended {self.endings}, alerts {alerts}, buttons {buttons}"

    def of_kind(self, kind: str) -> list[object]:
        return [e.proto for _, e in sorted(self.elements.items()) if e.kind == kind]

    def metrics(self) -> dict[str, str]:
        return {m.label: m.body for m in self.of_kind("metric")}

    def problems(self) -> list[str]:
        found = [f"exception: {e.message}" for e in self.of_kind("exception")]
        found += [f"error: {a.body}" for a in self.of_kind("alert") if a.format == 1]
        return found

    async def _rerun(self, *, fragment: str) -> float:
        message = BackMsg()
        state = message.rerun_script
        state.page_script_hash = self.pages.get(self.page, "")
        if not state.page_script_hash:
            state.page_name = self.page  # by its address, before the page list is known
        state.fragment_id = fragment
        state.widget_states.widgets.extend(self._states.values())
        state.cached_message_hashes.extend(self._cache)
        if not fragment:
            self.elements.clear()  # a full run redraws the page
        self.endings = []
        start = time.perf_counter()
        await self._ws.send(message.SerializeToString())
        while True:
            raw = await asyncio.wait_for(self._ws.recv(), TIMEOUT)
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            ending = self._receive(msg)
            if ending is not None:
                self.endings.append(ending)
            if ending in FINISHED:
                return time.perf_counter() - start

    def _receive(self, msg: ForwardMsg) -> int | None:
        if msg.WhichOneof("type") == "ref_hash":
            # "you have this one already": the cached message, at the place the ref names
            cached = ForwardMsg()
            cached.CopyFrom(self._cache[msg.ref_hash])
            cached.metadata.CopyFrom(msg.metadata)
            msg = cached
        elif msg.metadata.cacheable and msg.hash:
            self._cache[msg.hash] = msg
        return self._apply(msg)

    def _apply(self, msg: ForwardMsg) -> int | None:
        kind = msg.WhichOneof("type")
        if kind == "navigation":
            self.pages = {p.page_name: p.page_script_hash for p in msg.navigation.app_pages}
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            element = msg.delta.new_element
            which = element.WhichOneof("type")
            path = tuple(msg.metadata.delta_path)
            self.elements[path] = Element(which, getattr(element, which), msg.delta.fragment_id)
        elif kind == "script_finished":
            return msg.script_finished
        return None


def _decode(values: object) -> np.ndarray:
    if isinstance(values, dict) and "bdata" in values:
        array = np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
        shape = values.get("shape")
        if shape:
            dims = shape if isinstance(shape, list) else str(shape).split(",")
            array = array.reshape([int(d) for d in dims])
        return array.astype(float)
    return np.array(values, dtype=float)


def _heatmaps(client: Client) -> list[np.ndarray]:
    grids = []
    for chart in client.of_kind("plotly_chart"):
        spec = json.loads(chart.spec)
        grids += [_decode(t["z"]) for t in spec.get("data", []) if t.get("type") == "heatmap"]
    return grids


# -- one session --------------------------------------------------------------------------


@dataclass
class Step:
    session: int
    label: str
    seconds: float


@dataclass
class Outcome:
    steps: list[Step] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def run_session(url: str, plan: Plan, expected: Expected, *, prune_only: bool) -> Outcome:
    outcome = Outcome()
    try:
        await _workflow(url, plan, expected, outcome, prune_only=prune_only)
    except Exception as exc:  # kept with the session's earlier findings
        outcome.failures.append(f"session {plan.index} ({plan.spec}) broke off: {exc!r}")
    return outcome


async def _workflow(
    url: str, plan: Plan, expected: Expected, outcome: Outcome, *, prune_only: bool
) -> None:
    def check(label: str, ok: bool, detail: str) -> None:
        if not ok:
            outcome.failures.append(f"session {plan.index} ({plan.spec}), {label}: {detail}")

    async with Client(url) as client:

        async def step(label: str, action) -> None:
            outcome.steps.append(Step(plan.index, label, await action))
            problems = client.problems()
            check(label, not problems, "; ".join(problems))

        def sidebar_model() -> str:
            captions = [c.body for c in client.of_kind("markdown") if c.body.startswith("**")]
            return captions[0].split("**")[1] if captions else "nothing"

        def shows_own_model(label: str) -> None:
            shown = sidebar_model()
            check(label, shown == expected.name, f"the sidebar shows {shown}")

        await step("open Prune", client.open("Prune"))  # by its address, .../Prune
        if sidebar_model() != expected.name:
            await step("pick the model", client.set(Keys.sample, string_value=plan.spec))
        shows_own_model("Prune page")
        for sparsity in plan.sparsities:
            await step(
                "move the sparsity slider", client.set(Keys.sparsity, double_array_value=[sparsity])
            )
            shown = client.metrics()
            for label, value in expected.prune[sparsity].items():
                check(
                    f"sparsity {sparsity}",
                    shown.get(label) == value,
                    f"{label} shows {shown.get(label)}, its own masks give {value}",
                )
        if prune_only:
            return
        await step("open Sensitivity", client.open("Sensitivity"))
        shows_own_model("Sensitivity page")
        await step("set 3 levels", client.set(Keys.sens_levels, string_array_value=["3"]))
        await step("set the samples", client.set(Keys.sens_subset, double_value=plan.subset))
        confirm = [c for c in client.of_kind("checkbox") if c.label.startswith("Yes, run")]
        if confirm:  # the server judged the run long: confirm, as a user would
            key = confirm[0].id.rsplit("-", 1)[-1]
            await step("confirm the run", client.set(key, bool_value=True))
        run = client.button("Run the analysis")
        await step("run the analysis", client.set(run, trigger_value=True))
        own = expected.heatmap[plan.subset]
        grids = _heatmaps(client)
        check(
            "sensitivity",
            any(g.shape == own.shape and np.allclose(g, own, equal_nan=True) for g in grids),
            f"no heatmap on the page matches its own table ({len(grids)} heatmaps shown)",
        )
        await step(
            "move the target slider", client.set(Keys.sens_target, double_array_value=[plan.target])
        )
        shows_own_model("recipe builder")


async def first_visit(url: str) -> list[str]:
    """One visitor opens the Prune page: the server imports what the pages need."""
    async with Client(url) as client:
        await client.open("Prune")
        return [f"first visit: {problem}" for problem in client.problems()]


async def run_sessions(
    url: str, plans: list[Plan], expected: dict[str, Expected], *, prune_only: bool = False
) -> Outcome:
    results = await asyncio.gather(
        *(run_session(url, plan, expected[plan.spec], prune_only=prune_only) for plan in plans)
    )
    total = Outcome()
    for result in results:
        total.steps += result.steps
        total.failures += result.failures
    return total


# -- the server ---------------------------------------------------------------------------

WATCHER_ENV = "STREAMLIT_SERVER_FILE_WATCHER_TYPE"  # server.fileWatcherType, for the child


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def server_pid() -> int:
    """The streamlit server: our child process running ``streamlit run``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"streamlit" in cmdline:
            return int(entry.name)
    raise RuntimeError("the streamlit server process was not found")


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident) of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


def summary(label: str, outcome: Outcome, wall: float) -> tuple[float, Step]:
    times = [s.seconds for s in outcome.steps]
    slowest = max(outcome.steps, key=lambda s: s.seconds)
    rate = len(times) / wall
    print(
        f"{label:<28} {len(times):4d} interactions in {wall:6.1f} s = {rate:5.2f}/s; median "
        f"{statistics.median(times) * 1e3:7.0f} ms, slowest {slowest.seconds * 1e3:7.0f} ms "
        f"(session {slowest.session}: {slowest.label})",
        flush=True,
    )
    return rate, slowest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions (20)")
    parser.add_argument(
        "--moves", type=int, default=MOVES, help=f"slider moves per session ({MOVES})"
    )
    parser.add_argument(
        "--watch-files",
        action="store_true",
        help="turn Streamlit's file watcher on, as `streamlit run` has it by default (off in "
        ".streamlit/config.toml, as it should be on a shared server)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the warm-up and the one-session baseline (the sessions then find no model "
        "loaded)",
    )
    args = parser.parse_args(argv)
    if args.sessions < 1 or not 1 <= args.moves <= MOVES:
        parser.error(f"--sessions must be at least 1, --moves from 1 to {MOVES}")
    count = args.sessions
    plans = [Plan.for_session(i, moves=args.moves) for i in range(count)]
    alone = [] if args.no_baseline else [Plan.for_session(count, moves=args.moves)]
    # one per sample model: what every later session then finds loaded and prepared
    warm = [] if args.no_baseline else [Plan.for_session(count + 1 + k) for k in range(4)]
    failures = []
    watcher = "auto" if args.watch_files else "none"
    print(f"server: streamlit run app.py --server.fileWatcherType {watcher}", flush=True)
    with _environment(WATCHER_ENV, watcher), streamlit_app() as url:
        pid = server_pid()
        idle = memory_of(pid)["VmRSS"]
        # a first visitor has the server import torch, prunelab and plotly, while this
        # process works out what each session must see
        start = time.perf_counter()
        visit = threading.Thread(target=lambda: failures.extend(asyncio.run(first_visit(url))))
        visit.start()
        expected = expectations([*plans, *alone], prune_only=warm)
        visit.join()
        print(
            f"first visit and expected pages worked out: {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        if warm:
            start = time.perf_counter()
            warmed = asyncio.run(run_sessions(url, warm, expected, prune_only=True))
            failures += warmed.failures
            print(
                f"warm-up: {len(warm)} sessions open Prune on the four sample models, "
                f"{time.perf_counter() - start:.1f} s (not counted)",
                flush=True,
            )
            start = time.perf_counter()
            base = asyncio.run(run_sessions(url, alone, expected))
            failures += base.failures
            base_rate, base_slowest = summary(
                "baseline: 1 session alone", base, time.perf_counter() - start
            )
        before = memory_of(pid)["VmRSS"]
        start = time.perf_counter()
        loaded = asyncio.run(run_sessions(url, plans, expected))
        failures += loaded.failures
        rate, slowest = summary(f"{count} sessions at once", loaded, time.perf_counter() - start)
        server = memory_of(pid)
    if warm:
        print(
            f"ratios: throughput {rate / base_rate:.2f}x one session alone; slowest interaction "
            f"{slowest.seconds / base_slowest.seconds:.1f}x as long as the baseline's slowest"
        )
    size = memory.format_bytes
    print(
        f"server memory (RSS): {size(idle)} at start, {size(before)} before the {count} "
        f"sessions, {size(server['VmRSS'])} after them; peak {size(server['VmHWM'])}"
    )
    if failures:
        print(f"FAILED: {len(failures)} check(s)")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print(
        f"checks passed: each of the {count + len(alone) + len(warm)} sessions saw its own model, "
        "its own masks (sparsity, nonzero weights, accuracy) and its own sensitivity table, "
        "and no error"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
