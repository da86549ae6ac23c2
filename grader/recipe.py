"""Training recipes as rubrics and manifests declare them, validated on the host.

The rubric sets the recipe the grader retrains with and bounds what a student may ask for
in ``submission.yaml`` (``tasks.<id>.recipe``). The validated recipe travels to the sandbox
as a plain dict (``grader.train.Recipe.from_dict`` reads it there).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Recipe(BaseModel):
    """One way to train a model; every field has the engine's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(default=0.05, gt=0, le=10)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(default=5e-4, ge=0, le=1)
    schedule: Literal["none", "step", "multistep", "cosine", "onecycle"] = "cosine"
    step_size: int = Field(default=10, ge=1)
    milestones: list[int] = Field(default_factory=lambda: [50, 75])
    gamma: float = Field(default=0.1, gt=0, le=1)
    warmup_epochs: float = Field(default=0.0, ge=0)
    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=256, ge=1, le=8192)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    crop_padding: int = Field(default=4, ge=0, le=16)
    flip: bool = True
    cutout: int = Field(default=0, ge=0, le=32)
    normalize: bool = True
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
    train_fraction: float = Field(default=1.0, gt=0, le=1)
    val_size: int = Field(default=5000, ge=10)
    seed: int = 0
    budget_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> Recipe:
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self

    def with_changes(self, changes: dict[str, Any]) -> Recipe:
        """A copy with ``changes`` applied and validated again."""
        return Recipe.model_validate({**self.model_dump(), **changes})


class StudentBounds(BaseModel):
    """What a student's declared recipe may change, and how far."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    allowed: list[str] = Field(
        default_factory=lambda: [
            "optimizer",
            "lr",
            "momentum",
            "nesterov",
            "weight_decay",
            "schedule",
            "step_size",
            "milestones",
            "gamma",
            "warmup_epochs",
            "label_smoothing",
            "crop_padding",
            "flip",
            "cutout",
            "normalize",
            "mean",
            "std",
            "batch_size",
        ]
    )
    max_epochs: int = Field(default=30, ge=1)

    def apply(self, base: Recipe, asked: dict[str, Any]) -> Recipe:
        """``base`` with the student's changes; refused keys raise ValueError naming them."""
        refused = sorted(set(asked) - set(self.allowed) - {"epochs"})
        if refused:
            raise ValueError(f"the rubric does not let a submission set {', '.join(refused)}")
        recipe = base.with_changes(asked)
        if recipe.epochs > self.max_epochs:
            raise ValueError(f"epochs {recipe.epochs} is over the rubric's limit of {self.max_epochs}")
        return recipe
