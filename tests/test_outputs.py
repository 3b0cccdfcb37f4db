"""Output paths under hostile conditions (issue 29): a file where a folder is wanted, a folder where a file is,
a path under a regular file, a read-only place; built folders' modes; temporary folders a killed build left.

Every check runs before the work (nothing is printed, nothing computed and then lost) and ends in one
``kneelib: error:`` line naming the output. The tests run as root, where a chmod-555 folder is still writable:
a read-only place is a folder of mode 555 *and* ``os.access`` saying so (as for any other user, or a read-only
file system); a path under a regular file fails for root too.
"""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import make_run, make_tiny_dataset

from kneelib import atomic
from kneelib.cli import main
from kneelib.errors import KneelibError


@dataclass(frozen=True)
class World:
    """A tiny data set, a fabricated run, one crop, a manifest of the data set and a regular file."""

    root: Path
    data: Path
    run: Path
    image: Path
    manifest: Path
    afile: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("outputs")
    data = make_tiny_dataset(root / "data")
    rows = [(p.parts[-3], p.parts[-2], p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(data.rglob("*.png"))]
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([("split", "grade", "file", "bytes", "sha256"), *rows])
    afile = root / "afile"
    afile.write_text("a regular file\n")
    return World(root, data, make_run(root, "run"), next(data.rglob("*.png")), manifest, afile)


@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of mode 555 that ``os.access`` reports unwritable (as it does for anyone but root)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    real = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if mode & os.W_OK and Path(path).resolve() == folder.resolve():  # type: ignore[arg-type]
            return False
        return real(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    yield folder
    folder.chmod(0o755)


Argv = Callable[[World, Path], list[object]]
FILE_OUTPUTS: dict[str, Argv] = {
    "evaluate --out": lambda w, p: ["evaluate", w.run, "--data", w.data, "--split", "val", "--device", "cpu",
                                    "--out", p],
    "evaluate --predictions": lambda w, p: ["evaluate", w.run, "--data", w.data, "--split", "val", "--device",
                                            "cpu", "--predictions", p],
    "export --out": lambda w, p: ["export", w.run, "--format", "torchscript", "--out", p],
    "filter --report": lambda w, p: ["filter", w.data, "--report", p],
}
DIR_OUTPUTS: dict[str, Argv] = {
    "synth": lambda w, p: ["synth", p, "--per-grade", "1", "--size", "64"],
    "split": lambda w, p: ["split", w.data, p],
    "data prepare": lambda w, p: ["data", "prepare", w.data, p, "--manifest", w.manifest],
    "predict --heatmaps": lambda w, p: ["predict", "--runs", w.run, w.image, "--heatmaps", p, "--device", "cpu"],
    "predict --out": lambda w, p: ["predict", "--runs", w.run, "--bilateral", w.image, "--out", p, "--device",
                                   "cpu"],
    "localize train": lambda w, p: ["localize", "train", "--out", p, "--n-train", "4", "--n-val", "2", "--epochs",
                                    "1", "--quiet"],
    "reproduce": lambda w, p: ["reproduce", "--out", p, "--archs", "resnet18", "--schemes", "kl5", "--seeds", "1"],
}


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[object]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused_first(code: int, out: str, err: str, path: Path) -> None:
    """One error line naming ``path``, exit 2, and nothing done before it (no output printed)."""
    assert code == 2 and err.startswith("kneelib: error: ") and err.count("\n") == 1, err
    assert str(path) in err and "Traceback" not in err, err
    assert out == "", out


@pytest.mark.parametrize("kind", ["a directory", "under a file", "read-only"])
@pytest.mark.parametrize("command", sorted(FILE_OUTPUTS))
def test_bad_output_file_is_refused_before_the_work(command: str, kind: str, world: World, tmp_path: Path,
                                                     request: pytest.FixtureRequest,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    if kind == "a directory":
        path = tmp_path / "out.json"
        path.mkdir()
    elif kind == "under a file":
        path = world.afile / "out.json"
    else:
        path = request.getfixturevalue("read_only") / "out.json"
    assert_refused_first(*run_cli(capsys, FILE_OUTPUTS[command](world, path)), path)
    assert world.afile.read_text() == "a regular file\n"


@pytest.mark.parametrize("kind", ["a file", "under a file", "in a read-only folder", "a read-only folder"])
@pytest.mark.parametrize("command", sorted(DIR_OUTPUTS))
def test_bad_output_dir_is_refused_before_the_work(command: str, kind: str, world: World, tmp_path: Path,
                                                    request: pytest.FixtureRequest,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    if command == "reproduce" and kind.endswith("folder"):
        pytest.skip("a read-only --out of reproduce: if the check ever broke, a whole sweep would start")
    if kind == "a file":
        path = tmp_path / "out"
        path.write_text("x")
    elif kind == "under a file":
        path = world.afile / "out"
    elif kind == "in a read-only folder":
        path = request.getfixturevalue("read_only") / "out"
    else:  # an existing empty folder of mode 555: never replaced (even by root), refused with one line
        path = request.getfixturevalue("read_only")
    folder = path.parent if path.parent.is_dir() else world.root
    before = sorted(p.name for p in folder.iterdir())
    assert_refused_first(*run_cli(capsys, DIR_OUTPUTS[command](world, path)), path)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing made beside it, no temporary folder
    assert world.afile.read_text() == "a regular file\n"


def test_write_errors_become_one_line(tmp_path: Path, world: World) -> None:
    """Past the checks (a path that changed since, a read-only file system), the real error is still one line."""
    with pytest.raises(KneelibError, match="afile/x.json: cannot write here"):
        with atomic.atomic_path(world.afile / "x.json") as tmp:
            tmp.write_text("{}")
    with pytest.raises(KneelibError, match="afile/out"):
        with atomic.atomic_dir(world.afile / "out"):
            pass
    target = tmp_path / "later"
    with pytest.raises(KneelibError, match="later: cannot write here"):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("{}")
            target.mkdir()  # a folder appears where the file goes
            (target / "keep").write_text("")
    assert atomic.check_output_file(tmp_path / "new" / "deeper" / "m.json") == tmp_path / "new" / "deeper" / "m.json"
    assert atomic.check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # a check creates nothing


def test_built_folders_honour_the_umask(tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """synth, split and data prepare build their folder in a temporary one (mkdtemp: 0700): the result follows
    the umask like any folder."""
    old = os.umask(0o022)
    try:
        assert main(["synth", str(tmp_path / "synth"), "--per-grade", "1", "--size", "64"]) == 0
        assert main(["split", str(world.data), str(tmp_path / "split")]) == 0
        assert main(["data", "prepare", str(world.data), str(tmp_path / "prepared"), "--manifest",
                     str(world.manifest)]) == 0
        os.umask(0o077)
        assert main(["synth", str(tmp_path / "private"), "--per-grade", "1", "--size", "64"]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    for name in ("synth", "split", "prepared"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o755, name
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_dirs_of_dead_builds_are_removed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A temporary folder whose creator is dead goes; one of a live process (a build running now) stays."""
    dead = tmp_path / f".out.{_dead_pid()}.abcd1234.tmp"
    live = tmp_path / f".out.{os.getpid()}.efgh5678.tmp"
    other = tmp_path / f".outer.{_dead_pid()}.abcd1234.tmp"
    for folder in (dead, live, other):
        (folder / "train").mkdir(parents=True)
    assert atomic.remove_stale_temp_dirs(tmp_path / "out") == [dead]
    assert main(["synth", str(tmp_path / "out"), "--per-grade", "1", "--size", "64"]) == 0
    assert live.is_dir() and other.is_dir() and not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")) == [live.name]


def test_a_killed_synth_leaves_nothing_after_the_rerun(tmp_path: Path) -> None:
    """kill -9 during `kneelib synth OUT`: the hidden temporary folder it leaves is removed by the next run."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kneelib", "synth", str(out), "--per-grade", "400", "--size", "64"]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(p.is_dir() and any(p.rglob("*.png")) for p in tmp_path.glob(".out.*.tmp")):
            assert child.poll() is None and time.monotonic() < deadline, "synth ended before it could be killed"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert list(tmp_path.glob(".out.*.tmp")) and not out.exists()
    assert main(["synth", str(out), "--per-grade", "1", "--size", "64"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
