"""fashion_mnist/mnist: file lookup, downloads from a local HTTP server, checks, the real copy."""

import functools
import hashlib
import http.server
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch

from regulab.data import fashion_mnist, mnist, write_idx
from regulab.data.mnist_files import FASHION_MNIST_MD5, FILES, MNIST_MD5, DownloadError, find_files

SHARED = Path("/work/shared/data")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh home folder, no REGULAB_DATA_DIR, and no proxy between us and 127.0.0.1."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGULAB_DATA_DIR", raising=False)
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)


def fake_set(seed, n_train=12, n_test=5):
    """Random uint8 images and labels 0..9, different for each seed."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_train + n_test, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n_train + n_test,), generator=g, dtype=torch.uint8)
    return {
        "train-images-idx3-ubyte.gz": images[:n_train],
        "train-labels-idx1-ubyte.gz": labels[:n_train],
        "t10k-images-idx3-ubyte.gz": images[n_train:],
        "t10k-labels-idx1-ubyte.gz": labels[n_train:],
    }


def write_set(folder, data, gz=True, only=FILES):
    folder.mkdir(parents=True, exist_ok=True)
    for file in only:
        write_idx(folder / (file if gz else file.removesuffix(".gz")), data[file])
    return folder


def assert_loaded(result, data):
    (x_train, y_train), (x_test, y_test) = result
    assert x_train.dtype == x_test.dtype == torch.uint8
    assert y_train.dtype == y_test.dtype == torch.int64
    assert torch.equal(x_train, data["train-images-idx3-ubyte.gz"])
    assert torch.equal(y_train, data["train-labels-idx1-ubyte.gz"].long())
    assert torch.equal(x_test, data["t10k-images-idx3-ubyte.gz"])
    assert torch.equal(y_test, data["t10k-labels-idx1-ubyte.gz"].long())


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("sub", [True, False], ids=["subfolder", "flat"])
def test_layouts(tmp_path, gz, sub):
    data = fake_set(0)
    write_set(tmp_path / "data" / "fashion-mnist" if sub else tmp_path / "data", data, gz)
    assert_loaded(fashion_mnist(tmp_path / "data", download=False), data)


def test_gz_and_raw_mixed_in_one_folder(tmp_path):
    data = fake_set(0)
    write_set(tmp_path, data, gz=True, only=FILES[:2])
    write_set(tmp_path, data, gz=False, only=FILES[2:])
    assert_loaded(fashion_mnist(str(tmp_path), download=False), data)


def test_root_beats_env_beats_home(tmp_path, monkeypatch):
    root_data, env_data, home_data = fake_set(1), fake_set(2), fake_set(3)
    write_set(tmp_path / "root", root_data)
    write_set(tmp_path / "env" / "fashion-mnist", env_data)
    write_set(tmp_path / "home" / ".cache" / "regulab" / "fashion-mnist", home_data)
    monkeypatch.setenv("REGULAB_DATA_DIR", str(tmp_path / "env"))
    assert_loaded(fashion_mnist(tmp_path / "root", download=False), root_data)
    assert_loaded(fashion_mnist(download=False), env_data)
    monkeypatch.delenv("REGULAB_DATA_DIR")
    assert_loaded(fashion_mnist(download=False), home_data)


def test_an_explicit_incomplete_folder_is_refused_not_replaced(tmp_path, monkeypatch):
    # issue 16: a root lacking the labels trained on $REGULAB_DATA_DIR's files without a word
    write_set(tmp_path / "root", fake_set(1), only=FILES[:3])
    write_set(tmp_path / "env", fake_set(2))
    monkeypatch.setenv("REGULAB_DATA_DIR", str(tmp_path / "env"))
    assert find_files("fashion-mnist", tmp_path / "root") is None
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist(tmp_path / "root", download=False)
    assert str(info.value) == (
        f"Fashion-MNIST not found: {tmp_path / 'root'} lacks t10k-labels-idx1-ubyte[.gz]"
    )
    with pytest.raises(FileNotFoundError, match=r"typo is not a folder$"):
        fashion_mnist(tmp_path / "typo", download=False)


def test_mnist_looks_in_its_own_subfolder(tmp_path):
    fashion_data, mnist_data = fake_set(1), fake_set(2)
    write_set(tmp_path / "fashion-mnist", fashion_data)
    write_set(tmp_path / "mnist", mnist_data)
    assert_loaded(mnist(tmp_path, download=False), mnist_data)
    assert_loaded(fashion_mnist(tmp_path, download=False), fashion_data)


def test_the_subfolder_beats_files_directly_in_the_folder(tmp_path):
    sub_data = fake_set(2)
    write_set(tmp_path, fake_set(1))
    write_set(tmp_path / "fashion-mnist", sub_data)
    assert_loaded(fashion_mnist(tmp_path, download=False), sub_data)


def test_missing_without_download_names_the_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("REGULAB_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_set(tmp_path / "env", fake_set(1), only=FILES[:3])
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist(download=False)
    message = str(info.value)
    for folder in (
        tmp_path / "env",
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "home" / ".cache" / "regulab",
    ):
        assert f"  {folder}  (" in message
    assert f"{tmp_path / 'env'}  (missing t10k-labels-idx1-ubyte[.gz])" in message
    assert "--data-dir" in message and "REGULAB_DATA_DIR" in message


def test_count_mismatch_names_both_files(tmp_path):
    data = fake_set(0)
    data["t10k-labels-idx1-ubyte.gz"] = data["t10k-labels-idx1-ubyte.gz"][:4]
    write_set(tmp_path, data)
    with pytest.raises(ValueError, match=r"has 5 images but .* has 4 labels") as info:
        fashion_mnist(tmp_path, download=False)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in str(info.value)
    assert str(tmp_path / "t10k-labels-idx1-ubyte.gz") in str(info.value)


@pytest.mark.parametrize("bad", [[10], [10, 200]])
def test_labels_out_of_range(tmp_path, bad):
    data = fake_set(0)
    data["train-labels-idx1-ubyte.gz"][3 : 3 + len(bad)] = torch.tensor(bad)
    write_set(tmp_path, data)
    reason = f"train-labels-idx1-ubyte.gz: labels must be 0..9; found {bad}"
    with pytest.raises(ValueError, match=re.escape(reason) + "$"):
        fashion_mnist(tmp_path, download=False)


def test_images_of_the_wrong_shape(tmp_path):
    data = fake_set(0)
    data["train-images-idx3-ubyte.gz"] = data["train-images-idx3-ubyte.gz"][:, :27]
    write_set(tmp_path, data)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: expected uint8 images"):
        fashion_mnist(tmp_path, download=False)


# Downloads, from a server on 127.0.0.1 that serves tmp_path / "www".


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_request(self, code="-", size="-"):
        self.server.requests.append((self.path, int(code)))

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Yield (base URL of tmp_path / "www", list of (path, status) of every request)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(www))
    )
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", httpd.requests
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def serve(tmp_path, monkeypatch, data, folder="good", md5_table=FASHION_MNIST_MD5):
    """Put data's four .gz files in www/folder and make their md5s the expected ones."""
    write_set(tmp_path / "www" / folder, data)
    for file in FILES:
        md5 = hashlib.md5((tmp_path / "www" / folder / file).read_bytes()).hexdigest()
        monkeypatch.setitem(md5_table, file, md5)


def test_download(tmp_path, monkeypatch, server):
    url, requests = server
    data = fake_set(4)
    serve(tmp_path, monkeypatch, data)
    assert_loaded(fashion_mnist(tmp_path / "data", mirrors=[url + "good/"]), data)
    target = tmp_path / "data" / "fashion-mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)
    assert len(requests) == 4
    assert_loaded(fashion_mnist(tmp_path / "data", mirrors=[url + "good/"]), data)
    assert len(requests) == 4  # the second call found the files


def test_download_goes_to_env_then_home(tmp_path, monkeypatch, server):
    url, _ = server
    data = fake_set(4)
    serve(tmp_path, monkeypatch, data)
    monkeypatch.setenv("REGULAB_DATA_DIR", str(tmp_path / "env"))
    fashion_mnist(mirrors=[url + "good"])  # a mirror without the trailing slash works too
    assert len(list((tmp_path / "env" / "fashion-mnist").glob("*.gz"))) == 4
    monkeypatch.delenv("REGULAB_DATA_DIR")
    assert_loaded(fashion_mnist(mirrors=[url + "good/"]), data)
    assert len(list((tmp_path / "home" / ".cache" / "regulab" / "fashion-mnist").iterdir())) == 4


def test_mnist_download_uses_its_md5_table_and_folder(tmp_path, monkeypatch, server):
    url, _ = server
    data = fake_set(5)
    serve(tmp_path, monkeypatch, data, md5_table=MNIST_MD5)
    assert_loaded(mnist(tmp_path, mirrors=[url + "good/"]), data)
    assert len(list((tmp_path / "mnist").glob("*.gz"))) == 4
    with pytest.raises(DownloadError, match="wrong md5"):  # not the Fashion-MNIST sums
        fashion_mnist(tmp_path, mirrors=[url + "good/"])


def test_only_missing_files_are_downloaded(tmp_path, monkeypatch, server):
    url, requests = server
    data = fake_set(4)
    serve(tmp_path, monkeypatch, data)
    write_set(tmp_path / "fashion-mnist", data, gz=False, only=FILES[:2])
    assert_loaded(fashion_mnist(tmp_path, mirrors=[url + "good/"]), data)
    assert [path for path, _ in requests] == ["/good/" + file for file in FILES[2:]]


def test_a_404_mirror_is_skipped(tmp_path, monkeypatch, server):
    url, requests = server
    data = fake_set(4)
    serve(tmp_path, monkeypatch, data)
    assert_loaded(fashion_mnist(tmp_path, mirrors=[url + "gone/", url + "good/"]), data)
    assert requests[:2] == [
        ("/gone/train-images-idx3-ubyte.gz", 404),
        ("/good/train-images-idx3-ubyte.gz", 200),
    ]


def test_a_wrong_md5_is_rejected_and_the_next_mirror_used(tmp_path, monkeypatch, server):
    url, requests = server
    data = fake_set(4)
    write_set(tmp_path / "www" / "evil", fake_set(6))
    serve(tmp_path, monkeypatch, data)
    assert_loaded(fashion_mnist(tmp_path, mirrors=[url + "evil/", url + "good/"]), data)
    assert [path for path, _ in requests][:2] == [
        "/evil/train-images-idx3-ubyte.gz",
        "/good/train-images-idx3-ubyte.gz",
    ]
    assert sorted(p.name for p in (tmp_path / "fashion-mnist").iterdir()) == sorted(FILES)


def test_a_wrong_md5_leaves_no_file_behind(tmp_path, monkeypatch, server):
    url, _ = server
    write_set(tmp_path / "www" / "evil", fake_set(6))
    serve(tmp_path, monkeypatch, fake_set(4))
    with pytest.raises(
        DownloadError, match=r"evil/train-images-idx3-ubyte.gz: wrong md5 [0-9a-f]{32}"
    ):
        fashion_mnist(tmp_path, mirrors=[url + "evil/"])
    assert list((tmp_path / "fashion-mnist").iterdir()) == []


def test_every_mirror_failing_lists_each_url(tmp_path, monkeypatch, server):
    url, _ = server
    serve(tmp_path, monkeypatch, fake_set(4))
    shutil.copytree(tmp_path / "www" / "good", tmp_path / "www" / "evil")
    (tmp_path / "www" / "evil" / "train-images-idx3-ubyte.gz").write_bytes(b"not it")
    mirrors = [url + "gone/", url + "evil/", "http://127.0.0.1:1/"]
    with pytest.raises(DownloadError) as info:
        fashion_mnist(tmp_path, mirrors=mirrors)
    message = str(info.value)
    assert isinstance(info.value, OSError)
    assert "could not download Fashion-MNIST file train-images-idx3-ubyte.gz" in message
    assert f"{url}gone/train-images-idx3-ubyte.gz: HTTP 404" in message
    assert f"{url}evil/train-images-idx3-ubyte.gz: wrong md5" in message
    assert "http://127.0.0.1:1/train-images-idx3-ubyte.gz: " in message
    assert f"put it in {tmp_path / 'fashion-mnist'}/" in message
    assert "--data-dir" in message and "REGULAB_DATA_DIR" in message
    assert list((tmp_path / "fashion-mnist").iterdir()) == []


def test_the_shared_copy_of_fashion_mnist():
    if not (SHARED / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"no Fashion-MNIST in {SHARED}")
    (x_train, y_train), (x_test, y_test) = fashion_mnist(root=SHARED, download=False)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == x_test.dtype == torch.uint8
    assert y_train.dtype == y_test.dtype == torch.int64
    assert torch.equal(torch.bincount(y_train), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(y_test), torch.full((10,), 1000))
    assert int(x_train.max()) == 255 and int(x_train.min()) == 0
