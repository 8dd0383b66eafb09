"""One argument grammar, one table renderer: what every subcommand shares."""

from __future__ import annotations

import pytest

from fine_yolo.args import Command, Option, split_list
from fine_yolo.cli import SUBCOMMANDS, main, run_subcommand
from fine_yolo.errors import FineYoloError, UsageError
from fine_yolo.tables import markdown_table, signed, signed_millions

CMD = Command(
    options={"model": Option("", "the model", required=True), "epochs": Option(3, "epochs"),
             "lr": Option(0.01, "learning rate"), "plots": Option(True, "plots"),
             "mode": Option("a", "mode", choices=("a", "b"))},
    run=lambda args, extra: 0,
    example="fine-yolo x model=m.yaml",
)


def test_values_are_typed_after_their_defaults():
    args, extra = CMD.parse(["model=m.yaml", "epochs=7", "lr=1e-3", "plots=off", "mode=b"])
    assert args == {"model": "m.yaml", "epochs": 7, "lr": 0.001, "plots": False, "mode": "b"} and extra == {}
    assert CMD.parse(["model=m"])[0]["epochs"] == 3  # defaults fill the rest


@pytest.mark.parametrize(("argv", "message"), [
    (["model=m", "epoch=3"], "unknown argument 'epoch' (known: model, epochs, lr, plots, mode)"),
    (["model=m", "epochs=three"], "'epochs=three' must be an integer"),
    (["model=m", "lr=fast"], "'lr=fast' must be a number"),
    (["model=m", "plots=maybe"], "'plots=maybe' must be true or false"),
    (["model=m", "mode=c"], "'mode=c' must be one of a, b"),
    (["model=m", "epochs"], "argument 'epochs' is not key=value"),
    (["epochs=3"], "missing required argument(s): model=..."),
])
def test_bad_arguments_name_themselves(argv, message):
    with pytest.raises(UsageError) as e:
        CMD.parse(argv)
    assert message in str(e.value)


def test_passthrough_keys_are_typed_like_yolo():
    cmd = Command(options={"seeds": Option(3, "seeds")}, run=lambda a, e: 0, example="x", passthrough="yolo train")
    args, extra = cmd.parse(["seeds=2", "lr0=0.02", "cos_lr=True", "name=run"])
    assert args == {"seeds": 2} and extra == {"lr0": 0.02, "cos_lr": True, "name": "run"}


def test_split_list():
    assert split_list("0,1, 2", "device", int) == [0, 1, 2]
    with pytest.raises(UsageError, match="'seeds=1,,2' must be a comma-separated list"):
        split_list("1,,2", "seeds")
    with pytest.raises(UsageError, match="cannot read every item as int"):
        split_list("1,x", "seeds", int)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_answers_help_with_its_keys_and_an_example(name, capsys):
    for token in ("help", "--help", "-h"):
        assert run_subcommand(name, [token]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"fine-yolo {name}: {SUBCOMMANDS[name][1]}")
        assert "keys (key=value):" in out and f"example:\n  fine-yolo {name}" in out


def test_unknown_key_is_exit_2_with_the_known_ones(capsys):
    assert run_subcommand("flops", ["model=yolov8s.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fine-yolo flops: unknown argument 'model' (known: models, imgsz, json)")


def test_main_is_help_parse_run_and_errors_as_exit_codes(capsys):
    """Command.main, shared by the CLI and every ``python -m`` entry point: help, parse, before_run, run, errors."""
    calls: list[str] = []

    def run(args, extra):
        calls.append("run")
        if args["model"] == "missing.pt":
            raise FineYoloError("missing.pt: no such checkpoint")
        return 0

    cmd = Command(options=CMD.options, run=run, example="prog model=m")
    assert cmd.main(["--help"], "prog", "does x") == 0 and calls == []
    assert capsys.readouterr().out.startswith("prog: does x\n")
    assert cmd.main(["model=m", "epochs=x"], "prog", before_run=lambda: calls.append("before")) == 2
    assert calls == [] and capsys.readouterr().err == "prog: argument 'epochs=x' must be an integer\n"
    assert cmd.main(["model=m"], "prog", before_run=lambda: calls.append("before")) == 0
    assert calls == ["before", "run"]
    assert cmd.main(["model=missing.pt"], "prog") == 1
    assert capsys.readouterr().err == "prog: missing.pt: no such checkpoint\n"


def test_top_level_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in SUBCOMMANDS)


def test_markdown_table_and_signed_numbers():
    assert markdown_table(["a", "b|c"], [[1, None], ["x\ny", 2.5]]) == (
        "| a | b\\|c |\n|---|---|\n| 1 | - |\n| x y | 2.5 |")
    with pytest.raises(ValueError, match="table row 0 has 1 cells, the header 2"):
        markdown_table(["a", "b"], [[1]])
    assert signed_millions(-6_720_000) == "-6.72M" and signed_millions(490_000) == "+0.49M"  # never "+-"
    assert signed(-0.0123, ".3f") == "-0.012" and signed(None) is None
