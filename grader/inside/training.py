"""Retraining a submitted model inside the sandbox: the training half of the harness.

The job brings the training images with their labels (the validation split is carved from
them), never the test images. The model is built from the student's code with fresh weights,
trained by ``grader.inside.engine`` under the job's recipe and checkpointed after every epoch
(so a killed job resumes); its final weights are left in the checkpoint folder, where the
host's next job, an ordinary evaluation, reads them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from grader.files import write_atomic
from grader.inside import engine
from grader.inside.augment import split_train_val
from grader.inside.channel import Channel, StageFailure
from grader.inside.layout import device_hint, pick_device
from grader.inside.loading import StudentCode, build_fresh, import_factory
from grader.protocol import FINAL_WEIGHTS, HarnessJob, Progress, Recipe, TrainingJob


def retrain(job: HarnessJob, training: TrainingJob, code: StudentCode, channel: Channel) -> None:
    device = pick_device(job.device)
    channel.started(str(device))
    recipe = training.recipe
    factory = import_factory(job, code)
    channel.done("import")
    torch.manual_seed(recipe.seed)  # the same initial weights on every run of this recipe
    model = build_fresh(factory, job.model, code, job.input_shape, job.num_classes).to(device)
    channel.done("build")
    images = np.load(training.train_images, allow_pickle=False)  # (N, 32, 32, 3) uint8
    labels = np.load(training.train_labels, allow_pickle=False)
    picked, held_out = split_train_val(labels, recipe)
    if training.time_steps:
        _time(model, images[picked], labels[picked], recipe, device, training.time_steps, channel)
        return
    steps = engine.steps_per_epoch(len(picked), recipe)

    def stepped(epoch: int, step: int) -> None:
        channel.progress(
            Progress("training", (epoch - 1) * steps + step, recipe.epochs * steps, epoch, recipe.epochs)
        )

    with _students_training(recipe.batch_size, device):
        result = engine.train(
            model,
            images[picked],
            labels[picked],
            images[held_out],
            labels[held_out],
            recipe,
            device,
            Path(training.checkpoints),
            log=print,
            on_step=stepped,
        )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_atomic(Path(training.checkpoints) / FINAL_WEIGHTS, lambda handle: torch.save(state, handle))
    channel.done("training", training=result)


@contextlib.contextmanager
def _students_training(batch_size: int, device: torch.device) -> Iterator[None]:
    """The student's forward may raise anything while training: it stops the stage "training".
    Running out of the device's memory says how much this job held, so that a TA can tell a
    model too large for the recipe's batch from a GPU that something else was using."""
    try:
        yield
    except StageFailure:
        raise
    except torch.OutOfMemoryError as exc:
        raise StageFailure("training", out_of_memory(batch_size, device)) from exc
    except Exception as exc:
        raise StageFailure(
            "training", f"training raised {type(exc).__name__}: {exc}{device_hint(exc, device)}"
        ) from exc


def out_of_memory(batch_size: int, device: torch.device) -> str:
    """The one-line reason for a training that ran out of ``device``'s memory."""
    held = ""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        peak = torch.cuda.max_memory_reserved(device)
        held = f" (this job held at most {peak / 2**30:.1f} GiB of its {total / 2**30:.1f} GiB)"
    return (
        f"training ran out of {device.type} memory at the recipe's batch size {batch_size}{held}: the model "
        "and one batch's activations must fit; look for a model far larger than the task needs "
        "or tensors kept across batches"
    )


def _time(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    recipe: Recipe,
    device: torch.device,
    steps: int,
    channel: Channel,
) -> None:
    """Only how fast the model trains here, for the host's estimate of a retraining's length."""
    channel.progress(Progress("timing", 0, steps))
    with _students_training(recipe.batch_size, device):
        result = engine.steps_per_second(model, images, labels, recipe, device, steps)
    channel.done("training", training=result)
