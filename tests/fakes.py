"""Fabricated test inputs shared by several test modules: tiny data sets and run directories."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from kneelib.data.schemes import get_scheme
from kneelib.models.registry import build_model

PER_GRADE = 3


def make_tiny_dataset(root: Path, *, train_per_grade: int = 2, val_per_grade: int = 1,
                      size: int = 80, seed: int = 0) -> Path:
    """Random-ish grayscale PNGs in ``root/{train,val}/{0..4}/<7-digit id><L|R>.png``."""
    rng = np.random.default_rng(seed)
    pid = 1000001
    for split, n in (("train", train_per_grade), ("val", val_per_grade)):
        for grade in range(5):
            folder = root / split / str(grade)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                xx = np.mgrid[0:size, 0:size][1]
                image = 40 * grade + 60 * rng.random((size, size)) + 30 * np.sin(xx / (3 + grade + i))
                cv2.imwrite(str(folder / f"{pid}{'LR'[i % 2]}.png"), np.clip(image, 0, 255).astype(np.uint8))
                pid += 1
    return root


def make_data(root: Path, split: str = "val", per_grade: int = PER_GRADE, size: int = 64) -> Path:
    """``root/{split}/{0..4}/<7-digit id><L|R>.png`` random 8-bit grayscale knees (seeded)."""
    rng = np.random.default_rng(0)
    for grade in range(5):
        folder = root / split / str(grade)
        folder.mkdir(parents=True)
        for i in range(per_grade):
            pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{1000000 + grade * 10 + i}{'LR'[i % 2]}.png")
    return root


def make_run(root: Path, name: str, *, arch: str = "resnet18", scheme: str = "kl5", image_size: int = 64,
             clahe: bool = False, seed: int = 0, num_classes: int | None = None) -> Path:
    """A fabricated RUN_DIR: config.json + a random-init ``best.pt`` (torch.manual_seed(seed))."""
    sch = get_scheme(scheme)
    run = root / name
    run.mkdir(parents=True)
    config = {
        "arch": arch, "scheme": scheme, "class_names": list(sch.class_names),
        "num_classes": sch.num_classes, "image_size": image_size, "clahe": clahe,
        "normalize": {"mean": 0.5, "std": 0.5}, "seed": seed, "epochs": 1,
    }
    (run / "config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=num_classes or sch.num_classes)
    torch.save(model.state_dict(), run / "best.pt")
    return run
