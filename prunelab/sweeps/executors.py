"""Where the rows of a sweep or sensitivity run are evaluated: in this process, or on Ray.

A run describes its work as a :class:`Work`: what every worker needs (``shared``: the model,
the evaluation batches, the dense outputs), how a worker starts from it (``start``), and the
units it hands out (a layer of a sensitivity run, a row of a sweep). An executor runs the
units and passes each finished row to ``emit(index, row)``, in any order; the caller writes
it to the run's checkpoint and reports progress, so a run resumes with either executor.

:class:`InProcess` (the default) runs the units in order, here. :class:`RayExecutor` puts
``shared`` into Ray's object store once, starts one actor per worker that builds its worker
from it once, and hands the units out in order to whichever actor is free (so a worker sees
layers sharing a cut one after the other, and its prefix cache still applies). An actor whose
process dies is restarted by Ray and its unit is run again; the other rows are kept.

Ray is optional (``pip install "prunelab[ray]"``) and imported only when a run asks for it.

>>> rows = {}
>>> work = Work(shared=10, start=lambda n: lambda unit, emit: emit(unit, {"x": n * unit}),
...             units=[0, 1, 2])
>>> InProcess().run(work, lambda index, row: rows.update({index: row}))
>>> rows
{0: {'x': 0}, 1: {'x': 10}, 2: {'x': 20}}
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import InputError

__all__ = [
    "EXECUTORS",
    "ClusterError",
    "Executor",
    "InProcess",
    "RayExecutor",
    "Work",
    "get_executor",
    "import_ray",
]

EXECUTORS = ("in-process", "ray")
INSTALL_HINT = 'pip install "prunelab[ray]"'
_CONNECT_SECONDS = 5.0  # a bad address fails in seconds, not after Ray's own long retries

Emit = Callable[[int, dict], None]
Worker = Callable[[Any, Emit], None]


class ClusterError(InputError):
    """Ray is missing, or the cluster asked for cannot be reached."""


@dataclass(frozen=True)
class Work:
    """One run's rows, cut into units that workers evaluate independently.

    Attributes:
        shared: What every worker needs, sent once per worker (Ray: through its object store).
        start: ``start(shared)`` -> a worker, ``worker(unit, emit)``, which evaluates the rows
            of ``unit`` and calls ``emit(index, row)`` for each. A module-level function, so
            that Ray's workers import it instead of receiving its code.
        units: What to hand out, in the order it is best evaluated.
    """

    shared: Any
    start: Callable[[Any], Worker]
    units: Sequence[Any]


@runtime_checkable
class Executor(Protocol):
    """Runs a :class:`Work`'s units; each finished row goes to ``emit``, in any order."""

    def run(self, work: Work, emit: Emit) -> None: ...


class InProcess:
    """Evaluates every unit here, in order (the default: needs nothing extra)."""

    def run(self, work: Work, emit: Emit) -> None:
        worker = work.start(work.shared)
        for unit in work.units:
            worker(unit, emit)

    def __repr__(self) -> str:
        return "InProcess()"


def import_ray():
    """The ``ray`` module, or a one-line :class:`ClusterError` saying how to install it.

    Ray's ``uv run`` hook would build a fresh virtual environment for the workers from the
    working directory (slow: it copies the project); prunelab's workers run in this
    interpreter, so the hook is off unless the user set ``RAY_ENABLE_UV_RUN_RUNTIME_ENV``.
    It is read when Ray is first imported, hence before the import.
    """
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError(
            f"Ray is not installed: {INSTALL_HINT} to run sweeps on a Ray cluster"
        ) from None
    return ray


def _check_reachable(address: str) -> None:
    """Refuse an address that no Ray head answers on, in seconds (Ray itself retries long)."""
    if address == "auto":
        return  # Ray looks the running cluster up itself, and says so when there is none
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(
            f"bad Ray address {address!r}: give HOST:PORT (e.g. 10.0.0.5:6379), "
            "ray://HOST:PORT or auto"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=_CONNECT_SECONDS):
            pass
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head` there, or leave the address out for a local cluster"
        ) from None


@dataclass
class RayExecutor:
    """Evaluates the units on a Ray cluster: one actor per worker, each keeping the model.

    The actors outlive a run while this process stays connected to the cluster: a second
    run with the same executor object reuses them (a worker process starts in seconds: it
    imports torch). With no cluster connected, a run starts one (local, or at ``address``)
    and leaves it again at the end.

    Attributes:
        address: The cluster's head (``HOST:6379``, ``ray://HOST:10001`` or ``auto``);
            None: the cluster this process is already connected to, else a local cluster
            started for the run (and stopped after it).
        workers: Actors to start (default: one per CPU of the cluster, or one per GPU when
            ``gpus`` is set).
        threads: torch's intra-op threads in each worker (one per worker's CPU).
        gpus: GPUs each worker holds (e.g. 1 to evaluate on ``cuda``).
        retries: How often a unit whose worker died is run again (Ray restarts the actor).
        stay_connected: Keep a connection this executor made (and its actors) after a run,
            for the next one (the app does); by default a run leaves as it found things.

    >>> RayExecutor(workers=2).threads
    1
    """

    address: str | None = None
    workers: int | None = None
    threads: int = 1
    gpus: float = 0
    retries: int = 3
    stay_connected: bool = False
    timings: dict[str, float] = field(default_factory=dict, repr=False)
    _actors: list = field(default_factory=list, repr=False)
    _runs: int = field(default=0, repr=False)

    def worker_pids(self) -> list[int]:
        """The process ids of the actors (for tests and monitoring)."""
        ray = import_ray()
        return ray.get([actor.pid.remote() for actor in self._actors])

    def close(self) -> None:
        """Stop the actors (they also stop when this object is garbage collected)."""
        if self._actors:
            ray = import_ray()
            for actor in self._actors:
                ray.kill(actor, no_restart=True)
        self._actors = []

    def run(self, work: Work, emit: Emit) -> None:
        ray = import_ray()
        self.timings.clear()
        if not work.units:
            return  # a resumed run with every row done: no cluster needed
        started = self._connect(ray)
        try:
            clock = time.perf_counter()
            # a list around the reference: Ray passes it on as is, and a worker fetches the
            # objects once (again only after its process was restarted)
            shared = [ray.put(work.shared)]
            self.timings["put"] = time.perf_counter() - clock
            clock = time.perf_counter()
            self._start_actors(ray)
            self.timings["actors"] = time.perf_counter() - clock
            clock = time.perf_counter()
            self._runs += 1
            job = (id(self), self._runs, shared, work.start)
            self._hand_out(ray, job, list(work.units), emit)
            self.timings["evaluate"] = time.perf_counter() - clock
        finally:
            if started and not self.stay_connected:
                self._actors = []
                ray.shutdown()

    def _connect(self, ray) -> bool:
        """Connect (or start a local cluster); True when this run started the connection."""
        clock = time.perf_counter()
        if ray.is_initialized():
            self.timings["start"] = 0.0
            return False
        self._actors = []  # those of an earlier connection are gone
        # Ray's start-up notes and warnings would break the progress bar's line
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
        }
        # RAY_ADDRESS is Ray's own way to name the cluster of the scripts run on it
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address is not None:
            _check_reachable(address)
            options["address"] = address
        else:
            options["num_cpus"] = self.workers or os.cpu_count() or 1
        try:
            ray.init(**options)
        except ConnectionError as exc:
            raise ClusterError(f"cannot join the Ray cluster at {address}: {exc}") from None
        self.timings["start"] = time.perf_counter() - clock
        return True

    def _start_actors(self, ray) -> None:
        count = self.workers
        if count is None:
            resources = ray.cluster_resources()
            count = int(resources.get("GPU", 0) // self.gpus if self.gpus else resources["CPU"])
        count = max(count, 1)
        if len(self._actors) == count:
            return
        self.close()
        remote = ray.remote(_RayWorker).options(
            num_cpus=self.threads,
            num_gpus=self.gpus,
            max_restarts=self.retries,
            max_task_retries=self.retries,
        )
        self._actors = [remote.remote(self.threads) for _ in range(count)]
        ray.get([actor.pid.remote() for actor in self._actors])  # up: their start-up is timed

    def _hand_out(self, ray, job: tuple, units: list, emit: Emit) -> None:
        queue = deque(units)
        pending: dict = {}
        for actor in self._actors:  # one unit each at a time: the next goes to whoever is free
            if queue:
                pending[actor.rows.remote(job, queue.popleft())] = actor
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ref)
            try:
                rows = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                raise ClusterError(
                    f"a Ray worker died {self.retries + 1} times on the same rows; the rows "
                    f"finished so far are kept (resume the run): {str(exc).splitlines()[0]}"
                ) from None
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None  # the worker's own error, as raised
            if queue:
                pending[actor.rows.remote(job, queue.popleft())] = actor
            for index, row in rows:
                emit(index, row)


class _RayWorker:
    """A Ray actor: builds a run's worker from its shared objects once, then evaluates units."""

    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._run: tuple | None = None
        self._worker: Worker | None = None

    def pid(self) -> int:
        return os.getpid()

    def rows(self, job: tuple, unit: Any) -> list[tuple[int, dict]]:
        owner, run, shared, start = job
        if self._run != (owner, run):
            import ray

            self._worker = None  # the last run's model and data go before the next arrive
            self._worker = start(ray.get(shared[0]))
            self._run = (owner, run)
        out: list[tuple[int, dict]] = []
        self._worker(unit, lambda index, row: out.append((index, row)))
        return out


def get_executor(executor: str | Executor | None = None, *, address: str | None = None):
    """The executor a run asked for: a name (``"in-process"``, ``"ray"``) or an object.

    >>> get_executor(None)
    InProcess()
    >>> get_executor("ray", address="10.0.0.5:6379").address
    '10.0.0.5:6379'
    """
    if executor is None or executor == "in-process":
        if address is not None:
            raise ValueError('a Ray address needs executor="ray"')
        return InProcess()
    if executor == "ray":
        return RayExecutor(address=address)
    if isinstance(executor, str):
        raise ValueError(f"unknown executor {executor!r}; accepted: {', '.join(EXECUTORS)}")
    if not isinstance(executor, Executor):
        raise TypeError(
            f"executor must be {' or '.join(map(repr, EXECUTORS))} or an object with a "
            f"run(work, emit) method, got {type(executor).__name__}"
        )
    if address is not None:
        raise ValueError("give the address to the executor object itself, not to the run")
    return executor
