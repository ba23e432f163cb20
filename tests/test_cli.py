"""The `tuwen` command root: subcommands from both packages, user errors without tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import build_parser, main


def test_every_documented_command_is_registered() -> None:
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {"embed", "serve", "ingest", "export", "build-engines"} <= commands


def test_a_command_module_that_does_not_import_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    # a missing or broken command module is a bug to see, not a command to leave out quietly
    from service import cli

    monkeypatch.setattr(cli, "SERVICE_COMMANDS", (*cli.SERVICE_COMMANDS, "service.commands.no_such_command"))
    with pytest.raises(ModuleNotFoundError, match=r"service\.commands\.no_such_command"):
        build_parser()


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.pt"
    assert main(["embed", "--checkpoint", str(missing), "--arch", "tiny-vit", "--text", "你好"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


@pytest.mark.slow  # a real ONNX export of a tiny model: ~10 s, more than the rest of this file
def test_unreadable_image_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.bundles import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / "bundle")
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("hello")
    assert main(["embed", "--bundle", str(bundle), "--image", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "image" in err and "Traceback" not in err


def test_bundle_without_manifest_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", "--bundle", str(tmp_path), "--text", "你好"]) == 2
    assert "manifest" in capsys.readouterr().err


def test_ingest_reads_its_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # containers pass the key this way so that it never shows in a process listing
    monkeypatch.setenv("TUWEN_INGEST_KEY", "k-123")
    assert build_parser().parse_args(["ingest", "photos/"]).api_key == "k-123"
    monkeypatch.delenv("TUWEN_INGEST_KEY")
    assert build_parser().parse_args(["ingest", "photos/"]).api_key is None
