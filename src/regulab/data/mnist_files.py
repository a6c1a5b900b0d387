"""Fashion-MNIST (Xiao et al., arXiv:1708.07747) and MNIST (LeCun et al., 1998).

Each data set is four IDX files. They are looked for in `root` alone when it is given
(never replaced by another folder), else in $REGULAB_DATA_DIR, then ~/.cache/regulab;
in each folder either directly or in a subfolder named after the data set
(`fashion-mnist`, `mnist`), each file gzipped or not. When none has all four, they are
downloaded into <first folder>/<data set>/, checked against their md5 sums before they
are put in place. `checksums` gives the md5 of the files read, for the record.
"""

import contextlib
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch

from regulab.data.idx import read_idx
from regulab.errors import DownloadError

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)

# As torchvision.datasets.MNIST.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

TIMEOUT = 60  # seconds a connection or a read may stall before a mirror counts as failed

_TITLES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}


def fashion_mnist(root=None, *, download: bool = True, mirrors=None):
    """Fashion-MNIST as ((x_train, y_train), (x_test, y_test)).

    x are uint8 tensors of shape (N, 28, 28), pixel values 0..255; y are int64
    tensors of shape (N,), classes 0..9. N is 60000 for train and 10000 for test.
    Files are looked up as the module docstring says; when they are missing and
    download is True they are fetched from `mirrors` (default FASHION_MNIST_MIRRORS,
    tried in order), else FileNotFoundError.
    """
    return _load("fashion-mnist", FASHION_MNIST_MD5, FASHION_MNIST_MIRRORS, root, download, mirrors)


def mnist(root=None, *, download: bool = True, mirrors=None):
    """MNIST as ((x_train, y_train), (x_test, y_test)); see fashion_mnist."""
    return _load("mnist", MNIST_MD5, MNIST_MIRRORS, root, download, mirrors)


def search_folders(name: str, root=None) -> list[Path]:
    """The folders looked in for data set `name`, in order: root alone when it is given."""
    if root is not None:
        bases = [Path(root)]
    else:
        bases = [Path(os.environ["REGULAB_DATA_DIR"])] if os.environ.get("REGULAB_DATA_DIR") else []
        bases.append(Path.home() / ".cache" / "regulab")
    return [folder for base in bases for folder in (base / name, base)]


def missing_in(name: str, root) -> str | None:
    """What an explicit folder lacks for data set `name`, in one line; None if it has all."""
    if not Path(root).is_dir():
        return f"{_TITLES[name]} not found: {root} is not a folder"
    if find_files(name, root) is not None:
        return None
    folder = max(search_folders(name, root), key=lambda f: len(_files_in(f)))  # the fullest
    found = _files_in(folder)
    missing = [f"{file.removesuffix('.gz')}[.gz]" for file in FILES if file not in found]
    where = f"{folder} lacks" if found else f"neither {root} nor {root}/{name} holds"
    return f"{_TITLES[name]} not found: {where} {', '.join(missing)}"


def holds_any(name: str, root) -> bool:
    """Whether root, or its subfolder `name`, holds any of the four files."""
    return any(_files_in(folder) for folder in search_folders(name, root))


def checksums(name: str, root=None) -> dict:
    """{"folder", "md5": {file: md5}} of the files of data set `name` that a load reads."""
    files = find_files(name, root) or {}
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in files.values()}
    folder = next(iter(files.values())).parent.resolve() if files else None
    return {"folder": None if folder is None else str(folder), "md5": md5}


def find_files(name: str, root=None) -> dict[str, Path] | None:
    """The four files of data set `name` from the first folder holding all of them.

    Keys are the names in FILES; a value is the .gz file, or the uncompressed one
    (the name without .gz) when there is no .gz. None when no folder has all four.
    """
    for folder in search_folders(name, root):
        found = _files_in(folder)
        if len(found) == len(FILES):
            return found
    return None


def _files_in(folder: Path) -> dict[str, Path]:
    found = {}
    for file in FILES:
        for candidate in (folder / file, folder / file.removesuffix(".gz")):
            if candidate.is_file():
                found[file] = candidate
                break
    return found


def _load(name, md5s, default_mirrors, root, download, mirrors):
    files = find_files(name, root)
    if files is None and not download:
        message = _not_found_message(name) if root is None else missing_in(name, root)
        raise FileNotFoundError(message)
    if files is None:
        folder = search_folders(name, root)[0]
        _download_missing(name, folder, md5s, default_mirrors if mirrors is None else mirrors)
        files = _files_in(folder)
    train = _pair(files["train-images-idx3-ubyte.gz"], files["train-labels-idx1-ubyte.gz"])
    test = _pair(files["t10k-images-idx3-ubyte.gz"], files["t10k-labels-idx1-ubyte.gz"])
    return train, test


def _pair(images_path: Path, labels_path: Path):
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.dtype != torch.uint8 or x.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28); "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )
    if y.dtype != torch.uint8 or y.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected uint8 labels of shape (N,); "
            f"got {y.dtype} of shape {tuple(y.shape)}"
        )
    if len(x) != len(y):
        raise ValueError(
            f"{images_path} has {len(x)} images but {labels_path} has {len(y)} labels; "
            "they must be the same count"
        )
    if len(y) and int(y.max()) > 9:
        bad = sorted(set(y[y > 9].tolist()))
        raise ValueError(f"{labels_path}: labels must be 0..9; found {bad}")
    return x, y.to(torch.int64)


def _not_found_message(name: str) -> str:
    lines = [f"{_TITLES[name]} not found: no folder holds all four files. Searched:"]
    for folder in search_folders(name):
        if not folder.is_dir():
            lines.append(f"  {folder}  (no such folder)")
            continue
        found = _files_in(folder)
        missing = [f"{file.removesuffix('.gz')}[.gz]" for file in FILES if file not in found]
        lines.append(f"  {folder}  (missing {', '.join(missing)})")
    lines.append(
        "Put the four files (gzipped or not) in one of these folders, or point --data-dir "
        "or REGULAB_DATA_DIR at the folder that holds them, or allow the download."
    )
    return "\n".join(lines)


def _download_missing(name: str, folder: Path, md5s: dict, mirrors) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    present = _files_in(folder)
    for file in FILES:
        if file in present:
            continue
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + file
            try:
                _fetch(url, folder / file, md5s[file])
                break
            except (OSError, ValueError, http.client.HTTPException) as e:
                failures.append(f"  {url}: {_reason(e)}")
        else:
            raise DownloadError(
                f"could not download {_TITLES[name]} file {file}:\n"
                + "\n".join(failures or ["  (no mirrors given)"])
                + f"\nDownload it by hand (md5 {md5s[file]}) and put it in {folder}/, "
                "or point --data-dir or REGULAB_DATA_DIR at a folder holding all four files."
            )


def _reason(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _fetch(url: str, dest: Path, md5: str) -> None:
    """Download url to a temporary file beside dest; check its md5, then move it to dest."""
    request = urllib.request.Request(url, headers={"User-Agent": "regulab"})
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.md5()
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(request, timeout=TIMEOUT) as response,
            _progress(url, response.length) as advance,
        ):
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                advance(len(chunk))
        if digest.hexdigest() != md5:
            raise ValueError(f"wrong md5 {digest.hexdigest()}, expected {md5}; file discarded")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def _progress(url: str, total: int | None):
    """Yield advance(n_bytes); draw a rich progress bar on stderr when it is a terminal."""
    print(f"downloading {url}", file=sys.stderr)
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("download", total=total)
        yield lambda n: bar.advance(task, n)
