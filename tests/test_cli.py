"""`blobflow validate` and `blobflow match`, run in-process on real files; failure lines."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from nats.errors import NoServersError
from pymongo.errors import ServerSelectionTimeoutError

from blobflow.cli.commands import failure_line
from blobflow.cli.main import main
from blobflow.errors import (
    EmbeddedServerError,
    ServiceStopping,
    StoreUnavailable,
    StreamSetupError,
)

ROOT = Path(__file__).resolve().parent.parent
BROKEN = Path(__file__).parent / "fixtures" / "broken"
EVENTS = ROOT / "examples" / "events"
BROKEN_FILES = sorted(BROKEN.glob("*/*.yaml"))


def _examples(tmp_path: Path) -> Path:
    root = tmp_path / "definitions"
    for kind in ("schemas", "workflows", "providers"):
        shutil.copytree(ROOT / kind, root / kind)
    return root


def _expected(file: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ").strip()
        for line in file.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


def test_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(ROOT / kind) for kind in ("providers", "workflows", "schemas")]
    assert main(["validate", *paths]) == 0
    assert "valid: 2 schemas, 2 workflows, 2 providers" in capsys.readouterr().err


@pytest.mark.parametrize("broken", BROKEN_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_broken_file_is_reported_with_its_line(
    broken: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _examples(tmp_path)
    target = root / broken.parent.name / broken.name
    shutil.copy(broken, target)

    assert main(["validate", str(root)]) == 1

    printed = capsys.readouterr().out.splitlines()
    expected = _expected(broken)
    assert expected, f"{broken} declares no '# expect:' line"
    for want in expected:
        assert any(line.startswith(f"{target}:{want}") for line in printed), (want, printed)
    assert len(printed) == len(expected), printed


def test_every_problem_of_a_file_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _examples(tmp_path)
    for broken in ("bad_method", "unknown_field"):
        shutil.copy(BROKEN / "workflows" / f"{broken}.yaml", root / "workflows")
    shutil.copy(BROKEN / "providers" / "bad_operator.yaml", root / "providers")

    assert main(["validate", str(root)]) == 1

    assert len(capsys.readouterr().out.splitlines()) == 3


def test_validate_single_kind_folders_and_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "schemas" / "blob_input_schema.yaml")]) == 0
    assert main(["validate", str(ROOT / "schemas")]) == 0


def test_validate_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "/no/such/place"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["validate"])
    assert exited.value.code == 2


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            "chapter_created.json",
            ["10 book-writer book_chapter_expansion", "0 memmie-studio blob_processing_workflow"],
        ),
        ("chapter_updated.json", ["0 memmie-studio blob_processing_workflow"]),
    ],
)
def test_match_prints_bindings_in_execution_order(
    event: str, expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["match", str(EVENTS / event), "--definitions", str(ROOT)]) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_match_json_and_definitions_from_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLOBFLOW_DEFINITIONS", str(ROOT))
    assert main(["match", str(EVENTS / "chapter_created.json"), "--json"]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert rows == [
        {"priority": 10, "provider_id": "book-writer", "workflow_id": "book_chapter_expansion"},
        {"priority": 0, "provider_id": "memmie-studio", "workflow_id": "blob_processing_workflow"},
    ]


def test_match_draft_update_triggers_book_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = orjson.loads((EVENTS / "chapter_updated.json").read_bytes())
    event["metadata"]["status"] = "draft"
    event["content"] = event["previous"]["content"]  # content unchanged
    path = tmp_path / "event.json"
    path.write_bytes(orjson.dumps(event))

    assert main(["match", str(path), "--definitions", str(ROOT)]) == 0
    assert capsys.readouterr().out.splitlines() == ["10 book-writer book_chapter_expansion"]


def test_match_provider_ids_limit_the_providers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = orjson.loads((EVENTS / "chapter_created.json").read_bytes())
    event["provider_ids"] = ["memmie-studio"]
    path = tmp_path / "event.json"
    path.write_bytes(orjson.dumps(event))

    assert main(["match", str(path), "--definitions", str(ROOT)]) == 0
    assert capsys.readouterr().out.splitlines() == ["0 memmie-studio blob_processing_workflow"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"blob_id": "b", "user_id": "u", "event": "onCreate"}', "event_id is required"),
        (b'{"event_id": "e", "blob_id": "b", "user_id": "u"}', "event is required"),
    ],
)
def test_match_rejects_bad_events(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "event.json"
    path.write_bytes(content)
    assert main(["match", str(path), "--definitions", str(ROOT)]) == 1
    assert message in capsys.readouterr().err


def test_match_with_invalid_definitions_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _examples(tmp_path)
    shutil.copy(BROKEN / "providers" / "bad_operator.yaml", root / "providers")
    assert main(["match", str(EVENTS / "chapter_created.json"), "--definitions", str(root)]) == 1
    assert "unknown operator 'equals'" in capsys.readouterr().err


def test_failure_line_names_expected_failures_in_one_line() -> None:
    selection = ServerSelectionTimeoutError(
        "h:1: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: 20000.0ms)"
        ", Timeout: 10.0s, Topology Description: <TopologyDescription ...>"
    )
    mongodb_url = "mongodb://user:pw@h:1/db"
    assert failure_line(selection, mongodb_url=mongodb_url) == (
        "cannot reach MongoDB at mongodb://***@h:1/db: h:1: [Errno 111] Connection refused"
    )
    unavailable = StoreUnavailable("ServerSelectionTimeoutError: h:1: ...")
    unavailable.__cause__ = selection
    assert failure_line(unavailable, mongodb_url=mongodb_url) == (
        failure_line(selection, mongodb_url=mongodb_url)
    )
    assert failure_line(NoServersError(), nats_url="nats://h:4222") == (
        "cannot connect to NATS at nats://h:4222"
    )
    missing = FileNotFoundError(2, "No such file or directory", "x.json")
    assert failure_line(missing) == "x.json: No such file or directory"
    assert failure_line(StreamSetupError("stream BLOBS differs:\n  subjects")) == (
        "stream BLOBS differs"
    )
    assert failure_line(TimeoutError()) == "timed out"
    failed_start = EmbeddedServerError("nats-server exited with code 1; log l:\nstarting\nfatal\n")
    assert failure_line(failed_start) == "nats-server exited with code 1; log l: fatal"
    group = ExceptionGroup("g", [ConnectionRefusedError("refused"), OSError("down")])
    assert failure_line(group) == "refused (and 1 more)"


def test_failure_line_leaves_bugs_and_signals_to_the_traceback() -> None:
    assert failure_line(KeyError("x")) is None
    assert failure_line(ServiceStopping()) is None
    assert failure_line(ImportError("no module")) is None
    assert failure_line(BrokenPipeError()) is None  # main ends it quietly
    assert failure_line(ExceptionGroup("g", [OSError("down"), KeyError("x")])) is None
