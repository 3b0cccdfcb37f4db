"""Where the sweep's training notebooks execute: worker processes on this machine, or tasks on a Ray cluster.

An executor takes the sweep's training tasks — ``(executed notebook path, papermill parameters)``, one per
model — and yields ``(path, seconds)`` as each finishes, so ``reproduce`` prints the same progress lines
whichever runs them. Both execute :func:`train_model`: the ``03_train`` notebook through papermill (each
seed with ``resume=True``), then the group's evaluation. :class:`RayExecutor` starts (or joins) Ray,
checks the cluster before any run starts, and lets Ray retry a task whose worker died: the retry resumes
each run from its ``last.pt``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from kneelib import cpu_pin
from kneelib.errors import KneelibError
from kneelib.pipeline.notebooks import NOTEBOOK_DIR, REPO_ROOT, timed_notebook
from kneelib.pipeline.profiles import Profile

#: One training notebook: where its executed copy goes, and its papermill parameters.
TrainTask = tuple[Path, dict[str, Any]]
EXECUTORS = ("local", "ray")
RAY_EXTRA = "--executor ray needs Ray: pip install -e '.[ray]'"
#: Times Ray re-runs a task whose worker died (killed, out of memory, node lost); each retry resumes.
RAY_RETRIES = 3


def train_model(output: Path, parameters: dict[str, Any], timeout: int, split: str) -> float:
    """Execute one model's ``03_train`` notebook, then evaluate its seed group into the sweep's cache
    (a picklable pool task; returns the wall time in seconds)."""
    t0 = time.time()
    timed_notebook("03_train", output, parameters, timeout)
    import torch

    from kneelib.evaluate.sweep_groups import evaluate_group

    if parameters["threads"]:
        torch.set_num_threads(parameters["threads"])
    # The notebooks name the sweep's folders relative to notebooks/: evaluate with the same names, so the
    # cache's record of them matches when 04/05 look it up. The worker's next task starts where this one did.
    cwd = os.getcwd()
    os.chdir(NOTEBOOK_DIR)
    try:
        out_dir = str(Path(parameters["runs_dir"]).parent)
        evaluate_group(out_dir, parameters["data_dir"], parameters["arch"], parameters["scheme"],
                       parameters["seeds"], split=split, device=parameters["device"], progress=False)
    finally:
        os.chdir(cwd)
    return time.time() - t0


class LocalExecutor:
    """``jobs`` training notebooks at once in spawned worker processes on this machine."""

    def __init__(self, jobs: int) -> None:
        self.jobs = max(1, jobs)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, tasks: Sequence[TrainTask], *, timeout: int, split: str) -> Iterator[tuple[Path, float]]:
        """Execute ``tasks``; yield ``(output, seconds)`` in the order they finish."""
        # Processes, not threads: papermill changes the working directory of the process it runs in.
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(train_model, output, parameters, timeout, split): output
                       for output, parameters in tasks}
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise


class RayExecutor:
    """Each training notebook as one Ray task asking for ``num_cpus`` CPUs and ``num_gpus`` GPUs.

    ``address``: join that cluster (``HOST:PORT``); None: start a local instance with ``local_cpus`` CPUs
    (and the machine's GPUs), shut down at the end. ``out``: the sweep's output folder, which every node
    must see. ``env``: environment variables for the workers (the CPU pin)."""

    def __init__(self, address: str | None, num_cpus: float, num_gpus: float, *, out: Path,
                 local_cpus: int = 2, env: dict[str, str] | None = None) -> None:
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.out, self.local_cpus = Path(out), local_cpus
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        # Tasks and their kernels import kneelib from the driver's checkout path (the same on every node).
        self.env = {**(env or {}), "PYTHONPATH": pythonpath}
        self.startup_seconds = 0.0

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError:
            raise KneelibError(RAY_EXTRA) from None
        t0 = time.time()
        if self.address:
            _check_reachable(self.address)
        # A local instance is kneelib's own (token authentication on, as Ray defaults): no warning about it.
        quiet = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = quiet.level
        quiet.setLevel(logging.WARNING if self.address else logging.ERROR)
        # A cluster's workers get the environment as a runtime_env; a local instance's inherit it from the
        # raylet started here (measured: 4 s less start-up than a runtime_env, which needs fresh workers).
        saved = {k: os.environ.get(k) for k in self.env}
        if not self.address:
            os.environ.update(self.env)
        try:
            if self.address:
                ray.init(address=self.address, runtime_env={"env_vars": self.env}, log_to_driver=False,
                         logging_level="WARNING")
            else:
                ray.init(address="local", num_cpus=self.local_cpus, include_dashboard=False,  # never $RAY_ADDRESS
                         object_store_memory=256 * 2**20, log_to_driver=False, logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise KneelibError(f"cannot join the Ray cluster at {self.address or 'a new local instance'}: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        finally:
            quiet.setLevel(level)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        try:
            self._check_resources()
            self._check_shared_storage()
        except BaseException:
            ray.shutdown()
            raise
        self.startup_seconds = time.time() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        ray.shutdown()

    def describe(self) -> str:
        """One line: where the runs go and what each asks for."""
        import ray

        res, nodes = ray.cluster_resources(), [n for n in ray.nodes() if n["Alive"]]
        where = f"cluster {self.address}" if self.address else "a local instance"
        return (f"ray: {where}, {len(nodes)} node(s), {res.get('CPU', 0):g} CPU(s), {res.get('GPU', 0):g} GPU(s); "
                f"each run asks for {self.num_cpus:g} CPU(s), {self.num_gpus:g} GPU(s) "
                f"(ready in {self.startup_seconds:.1f} s)")

    def _check_resources(self) -> None:
        import ray

        res = ray.cluster_resources()
        where = f"the Ray cluster at {self.address}" if self.address else "the local Ray instance"
        for kind, wanted in (("GPU", self.num_gpus), ("CPU", self.num_cpus)):
            if wanted > res.get(kind, 0):
                raise KneelibError(f"{where} has {res.get(kind, 0):g} {kind}(s) but each run asks for {wanted:g} "
                                   f"(the profile's ray_num_{kind.lower()}s)")

    def _check_shared_storage(self) -> None:
        """One task per alive node looks for a marker file the driver wrote under ``out``, and for this
        checkout of kneelib (the tasks import it from the same path)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        marker = self.out / f".kneelib-shared-{uuid.uuid4().hex}"
        marker.write_text("written by the kneelib driver: every Ray node must see this file\n")
        package = REPO_ROOT / "kneelib" / "__init__.py"

        def probe(paths: list[str]) -> tuple[str, list[bool]]:  # by value: the node needs no kneelib for it
            import os as _os
            import socket as _socket

            return _socket.gethostname(), [_os.path.isfile(p) for p in paths]

        try:
            task = ray.remote(num_cpus=0, max_retries=0)(probe)
            nodes = [n for n in ray.nodes() if n["Alive"]]
            seen = ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                            .remote([_probe_path(marker), str(package)]) for n in nodes], timeout=120)
        except ray.exceptions.RayError as exc:
            raise KneelibError(f"the Ray nodes did not all answer the --out probe within 120 s "
                               f"({type(exc).__name__})") from None
        finally:
            marker.unlink(missing_ok=True)
        named = [(f"{host} ({node['NodeManagerAddress']})", found) for (host, found), node in zip(seen, nodes)]
        if missing := [name for name, found in named if not found[0]]:
            raise KneelibError(f"--out {self.out} is not shared storage: node(s) {', '.join(missing)} cannot see "
                               f"{marker}; put --out on a file system every node mounts at the same path")
        if missing := [name for name, found in named if not found[1]]:
            raise KneelibError(f"node(s) {', '.join(missing)} have no {package}: install kneelib at the same "
                               f"path on every node")

    def run(self, tasks: Sequence[TrainTask], *, timeout: int, split: str) -> Iterator[tuple[Path, float]]:
        """Submit every task; yield ``(output, seconds)`` in the order they finish. A task whose worker dies
        is retried (up to :data:`RAY_RETRIES` times) and resumes; a notebook that fails stops the sweep."""
        import ray

        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=RAY_RETRIES)(train_model)
        refs = {remote.options(name=output.stem).remote(output, parameters, timeout, split): output
                for output, parameters in tasks}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield refs[done[0]], _result(ray, done[0], refs[done[0]])
        finally:
            for ref in pending:  # the sweep stopped: a cluster must not keep training for nobody
                ray.cancel(ref, force=True)


def make_executor(name: str, profile: Profile, out: Path, *, ray_address: str | None = None
                  ) -> LocalExecutor | RayExecutor:
    """The executor ``--executor NAME`` asks for (a KneelibError for a bad name or a missing Ray)."""
    if name not in EXECUTORS:
        raise KneelibError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
    if name == "local":
        if ray_address:
            raise KneelibError("--ray-address needs --executor ray")
        return LocalExecutor(profile.jobs)
    if importlib.util.find_spec("ray") is None:
        raise KneelibError(RAY_EXTRA)
    env: dict[str, str] = {}
    if profile.pin_cpu:
        cpu_pin.apply(env)
    # A local instance runs --jobs runs at once, like the local executor (Ray also limits them by GPUs).
    local_cpus = max(1, math.ceil(max(1, profile.jobs) * profile.ray_num_cpus))
    return RayExecutor(ray_address, profile.ray_num_cpus, profile.ray_num_gpus, out=out,
                       local_cpus=local_cpus, env=env)


def _result(ray: Any, ref: Any, output: Path) -> float:
    """``ray.get(ref)``, with the task's own KneelibError (not Ray's wrapper and traceback) re-raised."""
    try:
        return float(ray.get(ref))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, KneelibError):
            raise KneelibError(str(exc.cause)) from None
        raise KneelibError(f"{output.stem}: {type(exc.cause).__name__}: {exc.cause}") from None
    except ray.exceptions.RayError as exc:  # the worker died more often than Ray retries, or the node left
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KneelibError(f"{output.stem}: the Ray task failed after {RAY_RETRIES} retries ({first}); "
                           f"run the sweep again to resume it") from None


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """A TCP connection to ``HOST:PORT`` within ``timeout`` seconds, or a KneelibError naming the address."""
    if address == "auto":
        return  # Ray finds the cluster this machine belongs to
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise KneelibError(f"--ray-address {address}: expected HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise KneelibError(f"--ray-address {address}: no Ray head answers there "
                           f"({exc.strerror or type(exc).__name__})") from None


def _probe_path(marker: Path) -> str:
    """The path a node's probe task looks for (the marker itself; a test points it elsewhere)."""
    return str(marker)
