"""Tests for iprune_tf.workflow.data: file formats, validation errors, ZCA and hinge targets."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from iprune_tf.workflow import data
from iprune_tf.workflow.data import (
    DataError,
    Dataset,
    ZCAWhitening,
    load_cifar10_batches,
    load_dataset,
    load_idx,
    load_idx_dir,
    load_npz,
    to_hinge_targets,
)


def idx_bytes(array):
    """Encode a uint8 array in the IDX format."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_file(path, content, compress=False):
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(content)
    return path


def write_idx_dir(directory, n_train=3, n_test=2, compress=False):
    """Four IDX files with images[i] = i everywhere and labels = i % 3; returns their arrays."""
    ext = ".gz" if compress else ""
    arrays = {
        "x_train": np.arange(n_train, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 5), np.uint8),
        "y_train": np.arange(n_train, dtype=np.uint8) % 3,
        "x_test": np.full((n_test, 4, 5), 255, np.uint8),
        "y_test": np.arange(n_test, dtype=np.uint8) % 3,
    }
    for key, stem in data.IDX_FILES.items():
        write_file(directory / (stem + ext), idx_bytes(arrays[key]), compress)
    return arrays


# --------------------------------------------------------------------------- load_idx


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_reads_exact_array(tmp_path, compress):
    expected = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = write_file(tmp_path / ("x.idx" + (".gz" if compress else "")), idx_bytes(expected), compress)
    loaded = load_idx(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, expected)


def test_load_idx_1d_labels(tmp_path):
    path = write_file(tmp_path / "labels", idx_bytes([7, 0, 9]))
    np.testing.assert_array_equal(load_idx(path), [7, 0, 9])


def test_load_idx_bad_magic(tmp_path):
    path = write_file(tmp_path / "bad-magic", b"\x12\x34" + idx_bytes([1, 2])[2:])
    with pytest.raises(DataError, match=r"bad-magic.*magic"):
        load_idx(path)


def test_load_idx_unsupported_dtype(tmp_path):
    content = bytearray(idx_bytes([1, 2]))
    content[2] = 0x0D  # float
    path = write_file(tmp_path / "floats", bytes(content))
    with pytest.raises(DataError, match=r"floats.*dtype code 0x0d"):
        load_idx(path)


def test_load_idx_truncated_payload(tmp_path):
    path = write_file(tmp_path / "short", idx_bytes(np.zeros((2, 3, 4)))[:-5])
    with pytest.raises(DataError, match=r"short.*truncated.*needs 24 bytes, found 19"):
        load_idx(path)


def test_load_idx_trailing_data(tmp_path):
    path = write_file(tmp_path / "long", idx_bytes([1, 2]) + b"\x00")
    with pytest.raises(DataError, match=r"long.*trailing"):
        load_idx(path)


def test_load_idx_truncated_header(tmp_path):
    path = write_file(tmp_path / "hdr", idx_bytes(np.zeros((2, 3)))[:7])
    with pytest.raises(DataError, match=r"hdr.*truncated IDX header"):
        load_idx(path)


def test_load_idx_truncated_gzip(tmp_path):
    whole = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    path = write_file(tmp_path / "cut.gz", whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut\.gz.*gzip"):
        load_idx(path)


def test_load_idx_corrupt_gzip(tmp_path):
    content = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8))))
    content[-8] ^= 0xFF  # break the CRC32 in the gzip trailer
    path = write_file(tmp_path / "crc.gz", bytes(content))
    with pytest.raises(DataError, match=r"crc\.gz.*gzip"):
        load_idx(path)


def test_load_idx_not_gzip(tmp_path):
    path = write_file(tmp_path / "plain.gz", idx_bytes([1, 2]))
    with pytest.raises(DataError, match=r"plain\.gz.*gzip"):
        load_idx(path)


def test_load_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothing-here.*not found"):
        load_idx(tmp_path / "nothing-here")


# --------------------------------------------------------------------------- load_idx_dir


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_dir(tmp_path, compress):
    raw = write_idx_dir(tmp_path, compress=compress)
    ds = load_idx_dir(tmp_path, name="tiny")
    assert isinstance(ds, Dataset)
    assert (ds.name, ds.num_classes) == ("tiny", 3)
    assert ds.x_train.shape == (3, 4, 5) and ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.x_train[:, 0, 0], [0, 1 / 255, 2 / 255])
    np.testing.assert_array_equal(ds.x_test, 1.0)
    np.testing.assert_array_equal(ds.y_train, raw["y_train"])
    np.testing.assert_array_equal(ds.y_test, raw["y_test"])


def test_load_idx_dir_default_name(tmp_path):
    directory = tmp_path / "my-mnist"
    directory.mkdir()
    write_idx_dir(directory)
    assert load_idx_dir(directory).name == "my-mnist"


def test_load_idx_dir_missing_file_lists_expected_names(tmp_path):
    write_idx_dir(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte") as info:
        load_idx_dir(tmp_path)
    for stem in data.IDX_FILES.values():
        assert stem in str(info.value)


def test_load_idx_dir_count_mismatch(tmp_path):
    write_idx_dir(tmp_path)
    write_file(tmp_path / "train-labels-idx1-ubyte", idx_bytes([0, 1]))
    with pytest.raises(DataError, match=r"3 images but .*train-labels-idx1-ubyte has 2 labels"):
        load_idx_dir(tmp_path)


# --------------------------------------------------------------------------- load_npz


def test_npz_round_trip_scales_uint8(tmp_path):
    x_train = np.array([[[0, 255]], [[51, 102]]], np.uint8)
    x_test = np.array([[[255, 0]]], np.uint8)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=np.array([1, 4], np.uint8),
             x_test=x_test, y_test=np.array([2], np.uint8))
    ds = load_npz(path)
    assert (ds.name, ds.num_classes) == ("mnist", 5)
    np.testing.assert_allclose(ds.x_train, x_train / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds.x_test, [[[1.0, 0.0]]])
    np.testing.assert_array_equal(ds.y_train, [1, 4])
    assert ds.y_train.dtype == np.int64 and ds.x_train.dtype == np.float32


def test_npz_one_hot_and_column_labels(tmp_path):
    path = tmp_path / "onehot.npz"
    np.savez(path, x_train=np.zeros((2, 2, 2), np.float32), y_train=np.eye(4)[[3, 0]],
             x_test=np.ones((1, 2, 2), np.float32), y_test=np.array([[2]]))
    ds = load_npz(path)
    np.testing.assert_array_equal(ds.y_train, [3, 0])
    np.testing.assert_array_equal(ds.y_test, [2])
    assert ds.num_classes == 4  # the one-hot width, not the largest label + 1


def test_npz_missing_keys(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((1, 2, 2), np.uint8), y_train=np.zeros(1, np.uint8))
    with pytest.raises(DataError, match=r"partial\.npz.*missing array\(s\) x_test, y_test"):
        load_npz(path)


def test_npz_rejects_out_of_range_floats_and_bad_one_hot(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.full((1, 2, 2), 3.0), y_train=[0], x_test=np.zeros((1, 2, 2)), y_test=[0])
    with pytest.raises(DataError, match=r"x_train.*\[0\.0, 1\.0\]"):
        load_npz(path)
    np.savez(path, x_train=np.zeros((1, 2, 2)), y_train=[[1, 1]], x_test=np.zeros((1, 2, 2)), y_test=[0])
    with pytest.raises(DataError, match=r"y_train.*one-hot"):
        load_npz(path)


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=r"garbage\.npz"):
        load_npz(path)


# --------------------------------------------------------------------------- CIFAR-10


def cifar_images(n, offset):
    """``n`` images, NCHW, where pixel (c, h, w) of image i is (offset + i + 3c + h + 2w) % 256."""
    i, c, h, w = np.ogrid[:n, :3, :32, :32]
    return ((offset + i + 3 * c + h + 2 * w) % 256).astype(np.uint8)


def write_cifar_dir(directory, per_batch=2):
    directory.mkdir()
    names = [*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_TEST_BATCH]
    for k, name in enumerate(names):
        batch = {b"data": cifar_images(per_batch, 10 * k).reshape(per_batch, 3072),
                 b"labels": [(k + j) % 10 for j in range(per_batch)]}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f)
    return directory


def test_cifar10_batches_chw_to_hwc(tmp_path):
    ds = load_cifar10_batches(write_cifar_dir(tmp_path / "cifar-10-batches-py"))
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    assert (ds.name, ds.num_classes) == ("cifar10", 10)
    # train image 3 is image 1 of data_batch_2 (offset 10); pixel row 5, column 7, blue (c=2)
    assert ds.x_train[3, 5, 7, 2] == pytest.approx((10 + 1 + 3 * 2 + 5 + 2 * 7) / 255)
    # the flat CHW row stores channel-plane, then row, then column
    row = cifar_images(2, 50).reshape(2, 3072)[1]
    assert ds.x_test[1, 4, 9, 1] == pytest.approx(row[1 * 1024 + 4 * 32 + 9] / 255)
    np.testing.assert_array_equal(ds.y_train, [0, 1, 1, 2, 2, 3, 3, 4, 4, 5])
    np.testing.assert_array_equal(ds.y_test, [5, 6])


def test_cifar10_missing_batch(tmp_path):
    directory = write_cifar_dir(tmp_path / "cifar")
    os.remove(directory / "data_batch_4")
    with pytest.raises(DataError, match=r"missing CIFAR-10 batch file\(s\) data_batch_4"):
        load_cifar10_batches(directory)


def test_cifar10_corrupt_batch(tmp_path):
    directory = write_cifar_dir(tmp_path / "cifar")
    content = (directory / "test_batch").read_bytes()
    (directory / "test_batch").write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match=r"test_batch.*unpickle"):
        load_cifar10_batches(directory)


def test_cifar10_wrong_content(tmp_path):
    directory = write_cifar_dir(tmp_path / "cifar")
    with open(directory / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"data_batch_1.*\(N, 3072\)"):
        load_cifar10_batches(directory)


# --------------------------------------------------------------------------- load_dataset


def test_load_dataset_dispatches_paths_and_limits(tmp_path):
    (tmp_path / "idx").mkdir()
    write_idx_dir(tmp_path / "idx")
    ds = load_dataset(tmp_path / "idx", limit_train=2, limit_test=1)
    assert ds.x_train.shape == (2, 4, 5) and ds.x_test.shape == (1, 4, 5)
    assert ds.num_classes == 3

    cifar = load_dataset(write_cifar_dir(tmp_path / "cifar-10-batches-py"), limit_train=3)
    assert cifar.x_train.shape == (3, 32, 32, 3) and cifar.x_test.shape == (2, 32, 32, 3)

    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((4, 2, 2), np.uint8), y_train=[0, 1, 0, 1],
             x_test=np.zeros((2, 2, 2), np.uint8), y_test=[1, 0])
    assert load_dataset(str(path), limit_test=1).y_test.tolist() == [1]


def test_load_dataset_unknown(tmp_path):
    with pytest.raises(DataError, match=r"neither a known data set"):
        load_dataset(tmp_path / "does-not-exist")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_load_dataset_download_failure_says_what_to_do(monkeypatch, tmp_path, name):
    def offline():
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "absent"))
    monkeypatch.setattr(data, "_keras_loader", lambda _: offline)
    with pytest.raises(DataError, match=r"no network.*pass a local path") as info:
        load_dataset(name)
    assert ("dataset-fashion-mnist" in str(info.value)) == (name == "fashion_mnist")


def test_load_dataset_keras_arrays_are_converted(monkeypatch):
    x = np.full((2, 32, 32, 3), 255, np.uint8)
    y = np.array([[3], [9]], np.uint8)  # keras' cifar10 labels are (N, 1)
    monkeypatch.setattr(data, "_keras_loader", lambda _: lambda: ((x, y), (x[:1], y[:1])))
    ds = load_dataset("cifar10")
    np.testing.assert_array_equal(ds.y_train, [3, 9])
    assert ds.x_train.max() == 1.0 and ds.num_classes == 10


@pytest.mark.skipif(not os.path.isdir(data.DEBIAN_FASHION_MNIST),
                    reason="apt-get install dataset-fashion-mnist to run")
def test_real_fashion_mnist():
    ds = load_dataset("fashion_mnist")
    assert ds.name == "fashion_mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert set(np.unique(ds.y_test)) == set(range(10))
    assert np.bincount(ds.y_train).tolist() == [6000] * 10


# --------------------------------------------------------------------------- ZCA


@pytest.fixture
def correlated_images():
    """Well-conditioned correlated data (eigenvalues of the covariance in [1, 4]), as 4x4x2 images."""
    rng = np.random.default_rng(0)
    mixing = np.linalg.qr(rng.normal(size=(32, 32)))[0] * rng.uniform(1, 2, size=32)
    train = rng.normal(size=(5000, 32)) @ mixing.T + 3.0
    test = rng.normal(size=(100, 32)) @ mixing.T + 3.0
    return train.reshape(-1, 4, 4, 2), test.reshape(-1, 4, 4, 2)


def test_zca_whitened_training_covariance_is_identity(correlated_images):
    train, _ = correlated_images
    white = ZCAWhitening(eps=1e-6).fit_transform(train)
    assert white.shape == train.shape and white.dtype == np.float32
    flat = white.reshape(len(white), -1).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(flat, rowvar=False, bias=True), np.eye(32), atol=1e-3)


def test_zca_matrix_is_symmetric_and_eps_shrinks(correlated_images):
    train, _ = correlated_images
    exact = ZCAWhitening(eps=1e-6).fit(train)
    np.testing.assert_allclose(exact.matrix, exact.matrix.T, atol=1e-12)
    # a large eps damps every direction, so whitened variance drops below 1
    damped = ZCAWhitening(eps=10.0).fit_transform(train).reshape(len(train), -1)
    assert damped.var(axis=0).max() < 0.5


def test_zca_transforms_test_data_with_training_statistics(correlated_images):
    train, test = correlated_images
    zca = ZCAWhitening().fit(train)
    expected = (test.reshape(len(test), -1) - train.reshape(len(train), -1).mean(axis=0)) @ zca.matrix
    np.testing.assert_allclose(zca.transform(test), expected.reshape(test.shape), rtol=1e-4, atol=1e-4)
    refit = ZCAWhitening().fit(test).transform(test)
    assert not np.allclose(zca.transform(test), refit, atol=1e-2)


def test_zca_save_load_gives_same_transform(tmp_path, correlated_images):
    train, test = correlated_images
    zca = ZCAWhitening(eps=0.05).fit(train)
    zca.save(tmp_path / "zca.npz")
    restored = ZCAWhitening.load(tmp_path / "zca.npz")
    assert restored.eps == 0.05
    np.testing.assert_array_equal(restored.transform(test), zca.transform(test))


def test_zca_errors(tmp_path, correlated_images):
    train, _ = correlated_images
    with pytest.raises(RuntimeError, match="fitted"):
        ZCAWhitening().transform(train)
    with pytest.raises(ValueError, match="fitted on 32"):
        ZCAWhitening().fit(train).transform(np.zeros((2, 5)))
    np.savez(tmp_path / "other.npz", mean=np.zeros(3))
    with pytest.raises(DataError, match=r"other\.npz.*missing array\(s\) matrix, eps"):
        ZCAWhitening.load(tmp_path / "other.npz")


# --------------------------------------------------------------------------- hinge targets


def test_to_hinge_targets():
    targets = to_hinge_targets(np.array([2, 0, 1]), 3)
    assert targets.dtype == np.float32
    np.testing.assert_array_equal(targets, [[-1, -1, 1], [1, -1, -1], [-1, 1, -1]])


def test_to_hinge_targets_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        to_hinge_targets(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="1-D integer"):
        to_hinge_targets(np.array([[0.0, 1.0]]), 2)
