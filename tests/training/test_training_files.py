"""TRAINING_FILES names every picture and text a finished run writes, so exploration can
never write over one (apps/explore.check_beside_training)."""

from __future__ import annotations

from vaekit.training.pictures import TRAINING_FILES


def test_every_output_of_a_finished_run_is_a_training_file(tiny_run):
    outputs = {p.name for p in tiny_run.path.iterdir() if p.suffix in (".png", ".txt", ".smi")}
    assert outputs and outputs <= TRAINING_FILES
