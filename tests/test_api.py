"""The public Python API (``layouttool.__all__``): importable, typed results, documented errors,
and every docstring example runs."""

from __future__ import annotations

import doctest
import importlib
import inspect
import io
import json
import pkgutil
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

import layouttool
from layouttool import errors

SAMPLE = REPO / "testdata" / "sample-docker-save.tar"
SCHEMAS = REPO / "docs" / "json"

#: The README's "Python API" session (README.md between <!-- api:start --> and <!-- api:end -->
#: wins when present, so the README cannot drift; this copy runs until the README has it). It
#: runs in a directory holding the sample tarball as ./app.tar, like the tutorial.
SESSION = '''
>>> import layouttool
>>> res = layouttool.import_docker_save("app.tar", "oci")
>>> [(i.ref, i.action) for i in res.images]
[('layouttool-sample:1.0', 'tagged'), ('layouttool-sample:latest', 'tagged')]
>>> [e.ref for e in layouttool.list_images("oci").images]
['layouttool-sample:1.0', 'layouttool-sample:latest']
>>> info = layouttool.inspect_image("oci:layouttool-sample:1.0")
>>> len(info.layers), info.platform
(2, 'linux/amd64')
>>> conv = layouttool.convert_image("oci:layouttool-sample:1.0", compression="zstd")
>>> sorted({layer.new.media_type for im in conv.images for layer in im.layers})
['application/vnd.oci.image.layer.v1.tar+zstd']
>>> layouttool.unpack_image("oci:layouttool-sample:1.0", "rootfs", rootless=True).entries
8
>>> with open("app.tar", "rb") as f:  # any binary stream, read once
...     layouttool.import_docker_save(f, "oci2").streamed
True
>>> out = layouttool.export_docker_save(["oci:layouttool-sample:1.0"], "app-zstd.tar")
>>> out.images[0].repo_tags
('layouttool-sample:1.0',)
>>> layouttool.untag_image("oci:layouttool-sample:latest").action
'untagged'
>>> gc = layouttool.gc_layout("oci")  # the old manifest and its gzip layers
>>> gc.count
3
>>> layouttool.verify_layout("oci").ok
True
>>> try:
...     layouttool.inspect_image("oci:nope")
... except layouttool.NotFoundError as exc:
...     print(exc.exit_code, exc)
3 oci: no image named 'nope' (refs: layouttool-sample:1.0)
'''


def readme_session() -> str:
    """The README's session when the README has one, else :data:`SESSION`."""
    readme = REPO / "README.md"
    if readme.is_file():
        m = re.search(r"<!-- api:start -->(.*?)<!-- api:end -->", readme.read_text(), re.S)
        if m:
            blocks = re.findall(r"```python\n(.*?)```", m.group(1), re.S)
            if blocks:
                return "\n".join(blocks)
    return SESSION


def run_doctest(text: str, name: str) -> doctest.TestResults:
    """Run doctest ``text``; failures are printed (pytest shows them)."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, {}, name, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=sys.stdout.write)
    return runner.summarize(verbose=False)


def schema_errors(command: str, doc: Any) -> list[str]:
    """Problems of ``doc`` against docs/json/<command>.schema.json."""
    from layouttool import schema

    name = f"{command}.schema.json"
    compiler = schema._Compiler({name: json.loads((SCHEMAS / name).read_text())})
    return compiler.node(name, "").errors(doc, "")


# ------------------------------------------------------------------------------ the names
def test_every_public_name_resolves_and_is_documented() -> None:
    assert len(set(layouttool.__all__)) == len(layouttool.__all__)
    assert layouttool.__all__ == sorted(layouttool.__all__)
    for name in layouttool.__all__:
        value = getattr(layouttool, name)
        if name == "__version__":
            assert isinstance(value, str) and re.fullmatch(r"\d+\.\d+\.\d+.*", value)
            continue
        assert inspect.getdoc(value), f"layouttool.{name} has no docstring"
        assert name in dir(layouttool)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = layouttool.nope  # type: ignore[attr-defined]


def test_star_import() -> None:
    ns: dict[str, Any] = {}
    exec("from layouttool import *", ns)
    assert set(layouttool.__all__) <= set(ns)


def test_every_error_class_is_public_and_carries_its_exit_code() -> None:
    classes = [
        c for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.LayoutToolError)
        and c is not errors.InternalError
    ]
    for cls in classes:
        assert getattr(layouttool, cls.__name__) is cls
        assert isinstance(cls.exit_code, int) and cls.exit_code != 0
        assert cls.__doc__
    # the table in the package docstring lists each with its code
    doc = layouttool.__doc__ or ""
    for cls in classes:
        if cls is errors.LayoutToolError:
            continue
        row = next(ln for ln in doc.splitlines() if f":class:`{cls.__name__}`" in ln)
        assert row.split()[1] == str(cls.exit_code), row


def test_operations_take_progress_and_return_their_result_type() -> None:
    ops = {
        "import_docker_save": "ImportResult", "convert_image": "ConvertResult",
        "unpack_image": "UnpackResult", "export_docker_save": "ExportResult",
        "gc_layout": "GcResult", "append_layers": "AppendResult",
        "repack_image": "RepackResult",
    }
    for fn_name, result in ops.items():
        fn = getattr(layouttool, fn_name)
        sig = inspect.signature(fn)
        assert "progress" in sig.parameters, fn_name
        assert sig.parameters["progress"].kind is inspect.Parameter.KEYWORD_ONLY
        assert str(sig.return_annotation) == result, fn_name
    for fn_name, result in {
        "init_layout": "InitResult", "list_images": "ListResult",
        "inspect_image": "InspectResult", "tag_image": "TagResult",
        "untag_image": "TagResult", "verify_layout": "VerifyResult",
        "new_image": "NewResult", "configure_image": "ConfigResult",
    }.items():
        assert str(inspect.signature(getattr(layouttool, fn_name)).return_annotation) == result


def test_import_is_lazy() -> None:
    """``import layouttool`` loads neither the operations nor the codecs (CLI start-up)."""
    code = (
        "import sys, layouttool\n"
        "heavy = [m for m in ('layouttool.ops.convert', 'layouttool.ops.importer', "
        "'layouttool.store', 'zstandard', 'isal', 'tarfile') if m in sys.modules]\n"
        "print(heavy)\n"
        "layouttool.convert_image\n"
        "print('layouttool.ops.convert' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.split("\n")[:2] == ["[]", "True"]


def test_py_typed_is_shipped() -> None:
    assert (Path(layouttool.__file__).parent / "py.typed").is_file()


# ------------------------------------------------------------------------------ a session
def test_readme_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(SAMPLE, tmp_path / "app.tar")
    monkeypatch.chdir(tmp_path)
    result = run_doctest(readme_session(), "README Python API")
    assert result.attempted >= 10
    assert result.failed == 0, capsys.readouterr().out
    assert layouttool.verify_layout(tmp_path / "oci2").ok


def test_results_serialise_to_their_documented_schema(tmp_path: Path) -> None:
    oci = tmp_path / "oci"
    docs = {
        "init": layouttool.init_layout(tmp_path / "empty"),
        "from-docker-save": layouttool.import_docker_save(SAMPLE, oci),
        "ls": layouttool.list_images(oci),
        "inspect": layouttool.inspect_image(f"{oci}:layouttool-sample:1.0"),
        "tag": layouttool.tag_image(f"{oci}:layouttool-sample:1.0", "extra"),
        "untag": layouttool.untag_image(f"{oci}:extra"),
        "convert": layouttool.convert_image(str(oci), compression="none"),
        "unpack": layouttool.unpack_image(f"{oci}:layouttool-sample:1.0", tmp_path / "r",
                                          rootless=True),
        "to-docker-save": layouttool.export_docker_save([f"{oci}:layouttool-sample:1.0"],
                                                        tmp_path / "o.tar"),
        "gc": layouttool.gc_layout(oci, dry_run=True),
        "verify": layouttool.verify_layout(oci),
    }
    for command, result in docs.items():
        assert type(result).__name__ in layouttool.__all__, command
        doc = json.loads(json.dumps(result.to_json()))  # JSON-serialisable as it is
        assert schema_errors(command, doc) == [], command


def test_export_to_a_binary_stream(tmp_path: Path) -> None:
    oci = tmp_path / "oci"
    layouttool.import_docker_save(SAMPLE, oci)
    buf = io.BytesIO()
    res = layouttool.export_docker_save([f"{oci}:layouttool-sample:1.0"], buf)
    assert res.bytes_written == len(buf.getvalue()) > 0
    # and it imports back, from the stream, to the same config
    back = layouttool.import_docker_save(io.BytesIO(buf.getvalue()), tmp_path / "back")
    assert back.images[0].config_digest == layouttool.inspect_image(
        f"{oci}:layouttool-sample:1.0").config_digest
    assert layouttool.verify_layout(tmp_path / "back").ok


class Recorder:
    """A Progress that records what operations report (thread-safe, as the protocol asks)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tasks: list[RecTask] = []
        self.notes: list[str] = []

    def task(self, label: str, total: int | None) -> RecTask:
        t = RecTask(label, total)
        with self.lock:
            self.tasks.append(t)
        return t

    def note(self, message: str) -> None:
        with self.lock:
            self.notes.append(message)


class RecTask:
    """One recorded task."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self.count, self.finished = label, total, 0, 0

    def advance(self, n: int) -> None:
        assert n >= 0
        self.count += n

    def done(self) -> None:
        self.finished += 1


def test_progress_is_reported_per_layer(tmp_path: Path) -> None:
    oci = tmp_path / "oci"
    rec = Recorder()
    layouttool.import_docker_save(SAMPLE, oci, progress=rec)
    assert rec.tasks and all(t.finished == 1 for t in rec.tasks)
    assert sum(t.count for t in rec.tasks) > 0
    rec = Recorder()
    res = layouttool.convert_image(str(oci), compression="zstd", progress=rec)
    layer_tasks = [t for t in rec.tasks if t.total is not None and t.count]
    assert len(layer_tasks) >= res.layers_recompressed
    assert all(t.finished == 1 for t in rec.tasks)
    # a task that knows its total never reports more than it
    assert all(t.count <= t.total for t in rec.tasks if t.total is not None)


# ------------------------------------------------------------------------------ the errors
@pytest.fixture
def oci(tmp_path: Path) -> Path:
    """A layout holding the sample image."""
    layouttool.import_docker_save(SAMPLE, tmp_path / "oci")
    return tmp_path / "oci"


def _corrupt_first_layer(oci: Path) -> None:
    info = layouttool.inspect_image(f"{oci}:layouttool-sample:1.0")
    alg, hexpart = info.layers[0]["digest"].split(":")
    path = oci / "blobs" / alg / hexpart
    path.chmod(0o644)
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)


ERRORS: list[tuple[str, Any, type[errors.LayoutToolError]]] = [
    ("missing layout", lambda t, o: layouttool.list_images(t / "nope"), layouttool.NotFoundError),
    ("missing ref", lambda t, o: layouttool.inspect_image(f"{o}:nope"), layouttool.NotFoundError),
    ("missing source", lambda t, o: layouttool.import_docker_save(t / "x.tar", t / "n"),
     layouttool.NotFoundError),
    ("not a tarball", lambda t, o: layouttool.import_docker_save(io.BytesIO(b"x" * 2048),
                                                                 t / "n"),
     layouttool.InvalidInputError),
    ("docker has no zstd", lambda t, o: layouttool.import_docker_save(
        SAMPLE, t / "n", compression="zstd", fmt="docker"), layouttool.UnsupportedError),
    ("bad level", lambda t, o: layouttool.convert_image(str(o), compression="gzip", level=42),
     layouttool.InvalidInputError),
    ("bad ref name", lambda t, o: layouttool.tag_image(f"{o}:layouttool-sample:1.0", "a b"),
     layouttool.InvalidInputError),
    ("dest not empty", lambda t, o: layouttool.unpack_image(f"{o}:layouttool-sample:1.0", o),
     layouttool.ConflictError),
    ("corrupt layer unpack", lambda t, o: (_corrupt_first_layer(o), layouttool.unpack_image(
        f"{o}:layouttool-sample:1.0", t / "r", rootless=True)), layouttool.LayoutToolError),
    ("corrupt layer convert", lambda t, o: (_corrupt_first_layer(o), layouttool.convert_image(
        str(o), compression="zstd")), layouttool.LayoutToolError),
    ("no image to export", lambda t, o: layouttool.export_docker_save([], t / "o.tar"),
     layouttool.InvalidInputError),
]


@pytest.mark.parametrize(("what", "call", "exc"), ERRORS, ids=[e[0] for e in ERRORS])
def test_documented_exceptions(what: str, call: Any, exc: type[errors.LayoutToolError],
                               tmp_path: Path, oci: Path) -> None:
    with pytest.raises(exc) as info:
        call(tmp_path, oci)
    # always one of ours, never a bare OSError/ValueError/KeyError, and the message says where
    assert isinstance(info.value, errors.LayoutToolError)
    assert not isinstance(info.value, errors.InternalError)
    assert str(info.value)


def test_corrupt_layer_is_an_integrity_or_corrupt_stream_error(tmp_path: Path, oci: Path) -> None:
    _corrupt_first_layer(oci)
    with pytest.raises((layouttool.IntegrityError, layouttool.CorruptStreamError)):
        layouttool.unpack_image(f"{oci}:layouttool-sample:1.0", tmp_path / "r", rootless=True)
    res = layouttool.verify_layout(oci)
    assert not res.ok and res.exit_code == 5


# ------------------------------------------------------------------------------ doctests
def test_doctests_of_every_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write here
    attempted = 0
    names = ["layouttool"] + [
        m.name for m in pkgutil.walk_packages(layouttool.__path__, "layouttool.")
        if not m.name.endswith("__main__")  # importing it runs the CLI
    ]
    for name in names:
        module = importlib.import_module(name)
        res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert res.failed == 0, f"{name}: {capsys.readouterr().out}"
        attempted += res.attempted
    assert attempted >= 5


def test_merged_filesystem_and_artifact_results_match_their_schemas(tmp_path: Path) -> None:
    """export_rootfs, flatten_image, diff_images, diff_layers, attach_artifact,
    list_referrers: the library calls give what the commands print with --json."""
    oci = tmp_path / "oci"
    layouttool.import_docker_save(SAMPLE, oci)
    image = f"{oci}:layouttool-sample:1.0"
    note = tmp_path / "note.txt"
    note.write_text("x")
    docs = {
        "export": layouttool.export_rootfs(image, tmp_path / "rootfs.tar"),
        "diff": layouttool.diff_images(image, image),
        "flatten": layouttool.flatten_image(image, tag="flat"),
        "attach": layouttool.attach_artifact(image, [str(note)], artifact_type="text/plain"),
        "referrers": layouttool.list_referrers(image),
    }
    layers = layouttool.diff_layers(image)
    for command, result in [*docs.items(), ("diff", layers)]:
        assert type(result).__name__ in layouttool.__all__, command
        doc = json.loads(json.dumps(result.to_json()))
        assert schema_errors(command, doc) == [], command
    assert docs["diff"].to_json()["changed"] == []
