"""RunDir's metrics.jsonl: reading records and forgetting epochs to be trained again."""

from ffem_cli.rundir import RunDir


def test_metrics_read_in_order_and_epochs_after_a_fall_back_forgotten(tmp_path):
    run = RunDir(tmp_path / "run")
    for epoch in (1, 2, 3):
        run.append_metrics({"epoch": epoch, "loss": 1.0 / epoch})
    run.append_metrics({"step": 7, "val/accuracy": 0.5})  # a step validation: no epoch
    with open(run.metrics_path, "a", encoding="utf-8") as handle:
        handle.write('{"epoch": 4, "lo')  # cut by a kill
    assert [record.get("epoch") for record in run.read_metrics()] == [1, 2, 3, None]
    run.forget_epochs_after(2)
    assert run.read_metrics() == [
        {"epoch": 1, "loss": 1.0},
        {"epoch": 2, "loss": 0.5},
        {"step": 7, "val/accuracy": 0.5},
    ]
    assert run.metrics_path.read_text(encoding="utf-8").count("\n") == 3
    assert RunDir(tmp_path / "absent").read_metrics() == []
    RunDir(tmp_path / "absent").forget_epochs_after(0)  # nothing to do, nothing created
    assert not (tmp_path / "absent").exists()
