"""Work done once: a checkpoint's `nash.json` and `config.json` are read, and its weights hashed,
once per process while the files stay the same; a rewritten, replaced or just-written file is
read again, and every caller gets its own copy."""

from __future__ import annotations

import builtins
import collections
import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import snapshot

from nash_cli import artifact
from nash_cli.artifact import cache
from nash_cli.errors import NashError

MANIFEST = {"stage": "select-layers", "state": "dense", "teacher": "/t5", "lineage": [{"stage": "input"}]}


@pytest.fixture
def settled(monkeypatch):
    """Files count as settled at once (a test cannot age a file's ctime), with nothing kept before."""
    monkeypatch.setattr(cache, "SETTLE_NS", 0)
    cache.forget()
    yield
    cache.forget()


@pytest.fixture
def reads(monkeypatch) -> collections.Counter:
    """Counts `Path.read_text` and `open` calls per file name (the ways nash reads these files)."""
    counts: collections.Counter = collections.Counter()
    read_text, real_open = Path.read_text, builtins.open

    def counting_read_text(self, *args, **kwargs):
        counts[self.name] += 1
        return read_text(self, *args, **kwargs)

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            counts[os.path.basename(os.fspath(file))] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting_read_text)
    monkeypatch.setattr(builtins, "open", counting_open)
    return counts


def checkpoint_dir(root: Path, weights: bytes = b"weights") -> Path:
    """A directory with what these reads need: nash.json, config.json and a weights file (never loaded)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "nash.json").write_text(json.dumps(MANIFEST))
    (root / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    (root / "model.safetensors").write_bytes(weights)
    return root


def rewrite(path: Path, text: str, *, mtime_ns: int | None = None) -> None:
    path.write_text(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_manifest_is_read_once(settled, reads, tmp_path):
    source = checkpoint_dir(tmp_path / "ckpt")
    assert [artifact.read_manifest(source) for _ in range(3)] == [MANIFEST] * 3
    artifact.read_manifest(tmp_path / "ckpt" / ".." / "ckpt")  # another spelling of the same file
    assert reads["nash.json"] == 1


def test_config_json_is_read_once_by_every_check_that_asks(settled, reads, tmp_path):
    source = checkpoint_dir(tmp_path / "ckpt")
    first = artifact.read_config_dict(source)
    artifact.refuse_code(source)  # reads config.json's auto_map
    assert artifact.read_config_dict(source) == first == {"model_type": "t5", "d_model": 8}
    assert reads["config.json"] == 1


def test_the_weights_are_hashed_once(settled, reads, tmp_path):
    source = checkpoint_dir(tmp_path / "ckpt", weights=b"abc" * 1000)
    assert artifact.weights_sha256(source) == artifact.weights_sha256(source) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert reads["model.safetensors"] == 1


def test_a_manifest_for_a_new_checkpoint_reads_the_parent_once(settled, reads, tmp_path):
    source = checkpoint_dir(tmp_path / "ckpt")
    manifest = artifact.build_manifest(
        source=source, stage="compact", arguments={}, state="compact", layer_map=None, extra=None
    )
    assert manifest["parent"]["stage"] == "select-layers" and manifest["teacher"] == "/t5"
    assert manifest["parent"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert reads["nash.json"] == 1 and reads["model.safetensors"] == 1


def test_callers_get_their_own_copy(settled, tmp_path):
    source = checkpoint_dir(tmp_path / "ckpt")
    for read in (artifact.read_manifest, artifact.read_config_dict):
        document = read(source)
        document.clear()
        assert read(source)
    artifact.read_manifest(source)["lineage"].append({"stage": "mine"})
    assert artifact.read_manifest(source) == MANIFEST


def test_a_rewritten_file_is_read_again(settled, reads, tmp_path):
    source = checkpoint_dir(tmp_path / "ckpt")
    path = source / "nash.json"
    assert artifact.read_manifest(source)["stage"] == "select-layers"
    rewrite(path, json.dumps({**MANIFEST, "stage": "prune-encoder"}))  # another size
    assert artifact.read_manifest(source)["stage"] == "prune-encoder"
    same_size = json.dumps({**MANIFEST, "stage": "prune-decoder"})
    rewrite(path, same_size, mtime_ns=path.stat().st_mtime_ns + 1_000_000)  # same size, another mtime
    assert artifact.read_manifest(source)["stage"] == "prune-decoder"
    assert reads["nash.json"] == 3


def test_a_replaced_file_is_read_again_even_with_the_same_size_and_mtime(settled, tmp_path):
    source = checkpoint_dir(tmp_path / "ckpt")
    path = source / "config.json"
    assert artifact.read_config_dict(source)["model_type"] == "t5"
    stat = path.stat()
    new = source / "config.new"
    rewrite(new, path.read_text().replace('"t5"', '"xx"'), mtime_ns=stat.st_mtime_ns)
    os.replace(new, path)  # as an atomic writer does: a new inode under the old name
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert artifact.read_config_dict(source)["model_type"] == "xx"


def test_rewritten_weights_are_hashed_again(settled, tmp_path):
    source = checkpoint_dir(tmp_path / "ckpt", weights=b"one")
    assert artifact.weights_sha256(source) == hashlib.sha256(b"one").hexdigest()
    (source / "model.safetensors").write_bytes(b"two!")
    assert artifact.weights_sha256(source) == hashlib.sha256(b"two!").hexdigest()


def test_a_file_changed_just_now_is_not_kept(reads, tmp_path):
    # Timestamps are coarse: a same-size rewrite within one tick would keep its stat, so a file
    # younger than SETTLE_NS is read every time.
    cache.forget()
    source = checkpoint_dir(tmp_path / "ckpt")
    artifact.read_manifest(source)
    artifact.read_manifest(source)
    assert reads["nash.json"] == 2


def test_errors_are_not_kept(settled, tmp_path):
    source = checkpoint_dir(tmp_path / "ckpt")
    (source / "nash.json").write_text("{not json")
    for _ in range(2):
        with pytest.raises(NashError, match="nash.json is not valid JSON"):
            artifact.read_manifest(source)
    (source / "config.json").write_text("[1, 2]")
    for _ in range(2):
        with pytest.raises(NashError, match="holds a JSON array, not a JSON object"):
            artifact.read_config_dict(source)


def test_a_stage_reads_its_parents_manifest_and_config_once(settled, make_checkpoint, cli, tmp_path, monkeypatch):
    parent = tmp_path / "parent"
    assert cli("select-layers", make_checkpoint("t5"), "-k", "2", "-o", parent).exit_code == 0
    counts: collections.Counter = collections.Counter()
    read_text = Path.read_text

    def counting_read_text(self, *args, **kwargs):
        if self.parent == parent:
            counts[self.name] += 1
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting_read_text)
    before = snapshot(parent)
    result = cli("select-layers", parent, "-k", "1", "-o", tmp_path / "child")
    assert result.exit_code == 0, result.stderr
    assert snapshot(parent) == before
    assert counts["nash.json"] == 1 and counts["config.json"] == 1
    assert json.loads((tmp_path / "child" / "nash.json").read_text())["parent"]["stage"] == "select-layers"
