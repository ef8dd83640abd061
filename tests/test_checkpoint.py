import dataclasses
import math

import pytest
import torch

from reidmodel.checkpoint import (
    CycleCheckpoint,
    SourceCheckpoint,
    last_cycle,
    load_cycle,
    load_source,
    read_csv,
    save_cycle,
    save_source,
    write_csv,
)

HISTORY = [{"stage": "source", "cycle": 0, "epoch": 1, "loss_total": 5.25, "loss_id": 2.0},
           {"stage": "adapt", "cycle": 1, "epoch": 1, "loss_total": 4.5, "loss_id": 1e-07}]
CYCLES = [{"cycle": 0, "target_mAP": 12.5, "ula_precision": math.nan},
          {"cycle": 1, "target_mAP": 20.0, "ula_precision": 0.75}]


def checkpoint(cycle: int, intermediate: bool = True) -> CycleCheckpoint:
    weights = {"layer.weight": torch.arange(6.0).view(2, 3), "bn.num_batches_tracked": torch.tensor(3)}
    return CycleCheckpoint(
        cycle=cycle, target=weights, target_classes=4,
        intermediate={k: v + 1 for k, v in weights.items()} if intermediate else None,
        intermediate_classes=5 if intermediate else None, history=HISTORY, cycles=CYCLES,
    )


def test_cycle_round_trip_in_the_state_pt_format(tmp_path):
    folder = save_cycle(tmp_path, checkpoint(1), "preset: cpu\n")
    assert folder == tmp_path / "checkpoints" / "cycle_001"
    assert {p.name for p in folder.iterdir()} == {"state.pt", "history.csv", "cycles.csv", "config.yaml"}
    state = torch.load(folder / "state.pt", weights_only=True)  # the format resuming has always read
    assert list(state) == ["cycle", "target", "target_classes", "intermediate", "intermediate_classes",
                           "pseudo_labels", "teacher_steps"]

    loaded = load_cycle(folder)
    assert (loaded.cycle, loaded.target_classes, loaded.intermediate_classes) == (1, 4, 5)
    torch.testing.assert_close(loaded.intermediate, checkpoint(1).intermediate, rtol=0, atol=0)
    assert loaded.history == HISTORY and loaded.cycles[1] == CYCLES[1]
    assert math.isnan(loaded.cycles[0]["ula_precision"]) and loaded.cycles[0]["cycle"] == 0
    assert load_cycle(save_cycle(tmp_path, checkpoint(2, intermediate=False), "")).intermediate is None


def test_pseudo_labels_round_trip_and_an_older_state_pt_loads_without_them(tmp_path):
    """The last ULA's labels ride along for the next cycle's pseudo-label stability; a state.pt written before
    they were saved still resumes (without them)."""
    labels = torch.tensor([0, -1, 1, 1])
    saved = CycleCheckpoint(**{**vars(checkpoint(1)), "pseudo_labels": labels})
    assert torch.equal(load_cycle(save_cycle(tmp_path, saved, "")).pseudo_labels, labels)
    folder = save_cycle(tmp_path, checkpoint(2), "")
    state = torch.load(folder / "state.pt", weights_only=True)
    del state["pseudo_labels"]
    torch.save(state, folder / "state.pt")
    assert load_cycle(folder).pseudo_labels is None


def test_a_state_pt_from_before_the_mean_teacher_resumes_with_its_count_at_zero(tmp_path):
    folder = save_cycle(tmp_path, dataclasses.replace(checkpoint(1), teacher_steps=7), "")
    assert load_cycle(folder).teacher_steps == 7
    state = torch.load(folder / "state.pt", weights_only=True)
    del state["teacher_steps"]
    torch.save(state, folder / "state.pt")
    assert load_cycle(folder).teacher_steps == 0


def test_only_the_newest_cycle_folder_is_kept_and_a_crashed_write_is_ignored(tmp_path):
    save_cycle(tmp_path, checkpoint(0), "")
    save_cycle(tmp_path, checkpoint(1), "")
    crashed = tmp_path / "checkpoints" / "cycle_002.tmp"
    crashed.mkdir()
    assert last_cycle(tmp_path) == tmp_path / "checkpoints" / "cycle_001"
    save_cycle(tmp_path, checkpoint(2), "")
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["cycle_002"]
    assert last_cycle(tmp_path / "elsewhere") is None


def test_csv_text_survives_a_read_and_write(tmp_path):
    path = tmp_path / "rows.csv"
    write_csv(path, [*HISTORY, {"stage": "adapt", "cycle": 2, "epoch": 1, "extra": "x"}])
    text = path.read_text()
    assert text.splitlines()[0] == "stage,cycle,epoch,loss_total,loss_id,extra"
    write_csv(tmp_path / "again.csv", read_csv(path))
    assert (tmp_path / "again.csv").read_text() == text


def test_source_round_trip_checks_the_signature(tmp_path):
    path = tmp_path / "cache" / "source.pt"
    saved = SourceCheckpoint(model={"w": torch.ones(2)}, num_classes=3, signature={"seed": 1}, history=HISTORY[:1],
                             train_seconds=1.5)
    save_source(path, saved)
    loaded = load_source(path, {"seed": 1})
    assert (loaded.num_classes, loaded.history, loaded.train_seconds) == (3, HISTORY[:1], 1.5)
    with pytest.raises(ValueError, match="another pre-training config: delete it or pass the matching one"):
        load_source(path, {"seed": 2})
