"""Torch Dataset of knee crops with a decode-once cache.

Each image file is read and preprocessed (:func:`~kneelib.data.transforms.preprocess`) once per
process: the uint8 result stays in a :class:`DecodeCache` (in memory, optionally also on disk keyed
by the file's content hash and the preprocessing parameters). Epochs after the first therefore do no
image decoding; the paper's augmentation runs on the cached uint8 tensors.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from kneelib.atomic import atomic_path
from kneelib.data import io as image_io
from kneelib.data.layout import Sample
from kneelib.data.schemes import Scheme, get_scheme
from kneelib.data.transforms import (
    PREPROCESS_VERSION,
    paper_augmentation,
    preprocess,
    to_tensor,
)

__all__ = ["DecodeCache", "KneeDataset", "default_cache_dir", "shared_cache", "augmentation_seed"]


def default_cache_dir() -> Path:
    """``$KNEELIB_CACHE_DIR``, else ``$XDG_CACHE_HOME/kneelib``, else ``~/.cache/kneelib``."""
    if os.environ.get("KNEELIB_CACHE_DIR"):
        return Path(os.environ["KNEELIB_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kneelib"


class DecodeCache:
    """Preprocessed uint8 images by (file, image size, CLAHE flag), decoded at most once per process.

    ``disk_dir``: also keep ``.npy`` files there, named by the SHA-256 of the file's bytes and the
    preprocessing parameters, so later processes skip decoding too (written atomically).
    ``decodes`` counts the files actually decoded by this cache.
    """

    def __init__(self, disk_dir: str | os.PathLike | None = None) -> None:
        self.disk_dir = Path(disk_dir).expanduser() if disk_dir is not None else None
        self._memory: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()
        self.decodes = 0

    def __len__(self) -> int:
        return len(self._memory)

    def clear(self) -> None:
        """Forget the in-memory images (the disk cache stays)."""
        with self._lock:
            self._memory.clear()

    @staticmethod
    def _memory_key(path: Path, image_size: int, clahe: bool) -> tuple:
        try:
            st = path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (None, None)  # read_image reports the missing file
        return (str(path.resolve()), *stamp, int(image_size), bool(clahe))

    def _disk_file(self, path: Path, image_size: int, clahe: bool) -> Path | None:
        if self.disk_dir is None:
            return None
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None  # read_image reports it
        name = f"{digest}_s{int(image_size)}_c{int(bool(clahe))}_v{PREPROCESS_VERSION}.npy"
        return self.disk_dir / digest[:2] / name

    def get(self, path: str | os.PathLike, *, image_size: int, clahe: bool) -> np.ndarray:
        """The preprocessed uint8 ``image_size``² image of ``path`` (decoded only on a cache miss)."""
        path = Path(path)
        key = self._memory_key(path, image_size, clahe)
        found = self._memory.get(key)
        if found is not None:
            return found
        disk = self._disk_file(path, image_size, clahe)
        image = None
        if disk is not None and disk.is_file():
            try:
                image = np.load(disk, allow_pickle=False)
                if image.shape != (image_size, image_size) or image.dtype != np.uint8:
                    image = None
            except (OSError, ValueError):
                image = None  # a damaged cache entry is simply rebuilt
        if image is None:
            image = preprocess(image_io.read_image(path), image_size=image_size, clahe=clahe)
            with self._lock:
                self.decodes += 1
            if disk is not None:
                try:
                    with atomic_path(disk) as tmp, open(tmp, "wb") as fh:
                        np.save(fh, image, allow_pickle=False)
                except OSError:
                    pass  # a read-only or full cache disk must not stop training
        image.setflags(write=False)
        with self._lock:
            self._memory[key] = image
        return image

    def get_many(self, paths: Sequence[str | os.PathLike], *, image_size: int, clahe: bool,
                 progress: bool = False, desc: str = "decoding") -> list[np.ndarray]:
        """:meth:`get` for many files, decoding misses in a thread pool (with an optional bar)."""
        workers = max(1, min(8, os.cpu_count() or 1))

        def one(p: str | os.PathLike) -> np.ndarray:
            return self.get(p, image_size=image_size, clahe=clahe)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(one, paths)
            return list(tqdm(results, total=len(paths), desc=desc, unit="img", disable=not progress,
                             leave=False))


_SHARED = DecodeCache()


def shared_cache() -> DecodeCache:
    """The process-wide in-memory cache used when no cache is given (reused across runs)."""
    return _SHARED


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the augmentation of sample ``index`` in ``epoch``: independent of workers and resume."""
    digest = hashlib.blake2b(f"{int(seed)},{int(epoch)},{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class KneeDataset(Dataset):
    """``(float tensor 3×S×S normalised mean 0.5 std 0.5, class index)`` for each sample.

    All images are decoded and preprocessed when the dataset is built (through ``cache``, the shared
    process-wide cache by default), so iterating never decodes a file. ``train=True`` applies the
    paper's augmentation; its randomness is seeded per sample from ``(seed, epoch, index)`` — call
    :meth:`set_epoch` before each epoch — so the result does not depend on DataLoader workers.
    ``augment``: the augmentation's strength (:func:`~kneelib.data.transforms.paper_augmentation`).
    """

    def __init__(self, samples: Sequence[Sample], scheme: Scheme | str, *, image_size: int,
                 train: bool, clahe: bool, cache: DecodeCache | None = None, progress: bool = False,
                 seed: int = 0, augment: float = 1.0) -> None:
        self.samples = list(samples)
        self.scheme = get_scheme(scheme)
        self.image_size = int(image_size)
        self.train = bool(train)
        self.clahe = bool(clahe)
        self.seed = int(seed)
        self.epoch = 0
        self.cache = cache if cache is not None else shared_cache()
        arrays = self.cache.get_many([s.path for s in self.samples], image_size=self.image_size,
                                     clahe=self.clahe, progress=progress)
        #: uint8 tensors 1×S×S sharing memory with the cache (read-only: never modified in place).
        self.images = [_readonly_tensor(a) for a in arrays]
        self.targets = torch.tensor([self.scheme.encode(s.grade) for s in self.samples],
                                    dtype=torch.long)
        self.augment = paper_augmentation(augment) if self.train else None

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (DataLoader workers must not be persistent)."""
        self.epoch = int(epoch)

    def image_u8(self, index: int) -> torch.Tensor:
        """The preprocessed (un-augmented) uint8 image ``1×S×S`` of sample ``index``."""
        return self.images[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.augment is not None:
            # On a PIL image the same v2 transforms run 2-3x faster than on a uint8 tensor.
            pil = Image.fromarray(image[0].numpy())
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(augmentation_seed(self.seed, self.epoch, index))
                image = torch.from_numpy(np.array(self.augment(pil))).unsqueeze(0)
        return to_tensor(image), int(self.targets[index])

    def class_counts(self) -> list[int]:
        """Number of samples per class index."""
        return torch.bincount(self.targets, minlength=self.scheme.num_classes).tolist()


def _readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a read-only array (torch warns on those; we never write to it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array).unsqueeze(0)
