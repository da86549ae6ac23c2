"""Retraining a submitted model inside the sandbox: the training half of the harness.

The job brings the training images with their labels (the validation split is carved
from them) and the unlabeled test images. The model is built from the student's code with
fresh weights, trained by ``grader.train`` under the job's recipe, checkpointed after
every epoch (so a killed job resumes), and its test logits go back to the host.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grader import train
from grader.augment import split_train_val
from grader.harness.runner import Report, StageFailure
from grader.harness.stages import build_fresh, import_factory, pick_device


def run_training(job: dict[str, Any], report: Report) -> None:
    device = pick_device(job["device"])
    report.done("start", device=str(device), torch_version=torch.__version__)
    try:
        recipe = train.Recipe.from_dict(job["recipe"])
    except ValueError as exc:
        raise StageFailure("recipe", str(exc)) from exc
    factory = import_factory(Path(job["submission"]), job["model"], job.get("notebook"))
    report.done("import")
    torch.manual_seed(recipe.seed)  # the same initial weights on every run of this recipe
    model = build_fresh(factory, job["model"]).to(device)
    report.done("build")
    images = np.load(job["train_images"], allow_pickle=False)  # (N, 32, 32, 3) uint8
    labels = np.load(job["train_labels"], allow_pickle=False)
    picked, held_out = split_train_val(labels, recipe)
    result = _train(model, images, labels, picked, held_out, recipe, device, Path(job["checkpoints"]))
    logits = train.infer(
        model, np.load(job["images"], allow_pickle=False), recipe, device, channels_last=result.channels_last
    )
    buffer = io.BytesIO()
    np.save(buffer, logits.numpy(), allow_pickle=False)
    report.save_logits(buffer.getvalue())
    report.done("inference", training=result.to_dict(), logits_shape=list(logits.shape))


def _train(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    picked: np.ndarray,
    held_out: np.ndarray,
    recipe: train.Recipe,
    device: torch.device,
    checkpoints: Path,
) -> train.TrainResult:
    try:
        return train.train(
            model,
            images[picked],
            labels[picked],
            images[held_out],
            labels[held_out],
            recipe,
            device,
            checkpoints,
            log=print,
        )
    except Exception as exc:  # the student's forward may raise anything while training
        raise StageFailure("training", f"training raised {type(exc).__name__}: {exc}") from exc
