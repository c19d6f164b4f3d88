"""Archives: download (resumable), verify (MD5 / SHA-256), extract (never half-written).

No tensors: files in, folders out. :data:`ARCHIVES` lists the fast.ai (Imagenette, Imagewoof) and
Tiny-ImageNet archives with their published checksums; :func:`prepare_archive` turns one into its
extracted folder (``<root>/imagenette2-320/{train,val}/<wnid>/*.JPEG``), fetching it when allowed.
Offline, the error says which file to put where by hand.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["ARCHIVES", "hash_file", "verify_checksum", "download_archive", "extract_archive", "prepare_archive"]

#: (dataset, size) -> (url, checksum "md5:<hex>" | "sha256:<hex>" | None). Imagenette's MD5s are
#: torchvision's (``torchvision.datasets.Imagenette._ARCHIVES``); Imagewoof's SHA-256s are the ones
#: published with Julia's DLDatasets registry; no checksum is published for the full Imagewoof.
ARCHIVES = {
    ("imagenette", "full"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz",
                             "md5:fe2fc210e6bb7c5664d602c3cd71e612"),
    ("imagenette", "320px"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
                              "md5:3df6f0d01a2c9592104656642f5e78a3"),
    ("imagenette", "160px"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
                              "md5:e793b78cc4c9e9a4ccc0c1155377a412"),
    ("imagewoof", "full"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2.tgz", None),
    ("imagewoof", "320px"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-320.tgz",
                             "sha256:4e4905ed7643120daaf9bf3b2ef7f3a7e8396d9bdaf254a38c6f01f618b4973d"),
    ("imagewoof", "160px"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-160.tgz",
                             "sha256:663c22f69c2802d85e2a67103c017e047096702ffddf9149a14011b7002539bf"),
    ("tiny-imagenet", "64px"): ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                                "md5:90528d7ca1a48142e341f4ef8d21d0de"),
}


def hash_file(path: str | os.PathLike, algo: str) -> str:
    """Hex digest of a whole file by ``hashlib.new(algo)`` (read in 1 MiB chunks)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: str | os.PathLike, checksum: str | None) -> None:
    """Raise ValueError (expected vs got) unless ``path`` matches ``"md5:<hex>"`` / ``"sha256:<hex>"``."""
    if checksum is None:
        return
    algo, _, want = checksum.partition(":")
    if algo not in ("md5", "sha256") or not want:
        raise ValueError(f"checksum must look like 'md5:<hex>' or 'sha256:<hex>', got {checksum!r}")
    got = hash_file(path, algo)
    if got != want.lower():
        raise ValueError(f"{algo} mismatch for {path}: expected {want}, got {got}")


def _fetch(url: str, part: Path, desc: str) -> None:
    """Download ``url`` into ``part``, continuing a partial file with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        resumed = getattr(resp, "status", None) == 206
        if not resumed:
            have = 0
        total = resp.headers.get("Content-Length")
        total = int(total) + have if total else None
        with open(part, "ab" if resumed else "wb") as f, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=desc) as bar:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                f.write(chunk)
                bar.update(len(chunk))


def download_archive(url: str, dest: str | os.PathLike, checksum: str | None = None, *,
                     download: bool = True) -> Path:
    """``dest`` (an archive), verified: kept if present and valid, else fetched from ``url``.

    The download goes to ``dest + '.part'`` and resumes from there if interrupted; only a file whose
    checksum matches is renamed to ``dest``. A mismatch removes the bad file and raises ValueError.
    Offline (or ``download=False``) a FileNotFoundError says where to put the archive by hand.
    """
    dest = Path(dest)
    how = f" ({checksum})" if checksum else ""
    manual = (f"download {url} on a machine with internet access and put it at {dest}{how}; "
              f"it is verified and extracted on the next call")
    if dest.is_file():
        verify_checksum(dest, checksum)
        return dest
    if not download:
        raise FileNotFoundError(f"{dest.name} not found: {manual} (or pass download=True)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _fetch(url, part, desc=dest.name)
    except (urllib.error.URLError, OSError) as err:
        raise FileNotFoundError(f"could not download {url} ({err}); {manual}") from err
    try:
        verify_checksum(part, checksum)
    except ValueError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def extract_archive(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> list[Path]:
    """Extract a .tgz/.tar/.zip into ``dest_dir`` through a temporary folder: each top-level entry
    appears only once complete (``os.replace``). Returns the top-level paths."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z:
                    z.extractall(tmp)
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive) as t:
                    t.extractall(tmp, filter="data")
            else:
                raise ValueError(f"{archive}: expected a .zip or .tar(.gz) archive")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise ValueError(f"{archive}: damaged archive ({type(err).__name__}: {err}); delete it and "
                             f"download it again") from err
        out = []
        for entry in sorted(tmp.iterdir()):
            target = dest_dir / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(entry, target)
            out.append(target)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_archive(name: str, root: Path, size: str, download: bool) -> Path:
    """Folder of an extracted fast.ai / Tiny-ImageNet archive under ``root``; fetched if needed.

    A ``.complete`` marker, written last, says the folder is whole; without it the archive is
    (verified and) extracted again.
    """
    if (name, size) not in ARCHIVES:
        sizes = [s for (n, s) in ARCHIVES if n == name]
        raise ValueError(f"{name}: size must be one of {sizes}, got {size!r}")
    url, checksum = ARCHIVES[(name, size)]
    archive_name = url.rsplit("/", 1)[1]
    folder = root / archive_name.split(".")[0]
    if (folder / ".complete").is_file():
        return folder
    archive = download_archive(url, root / archive_name, checksum, download=download)
    extract_archive(archive, root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{archive} did not contain the expected folder {folder.name}/")
    if name == "tiny-imagenet":
        _refolder_tiny_imagenet_val(folder)
    (folder / ".complete").write_text(archive_name + "\n")
    return folder


def _refolder_tiny_imagenet_val(folder: Path) -> None:
    """Tiny-ImageNet ships ``val/images/*.JPEG`` + ``val_annotations.txt``; move them to ``val/<wnid>/``."""
    val = folder / "val"
    ann = val / "val_annotations.txt"
    if not ann.is_file():
        return
    for line in ann.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        src = val / "images" / parts[0]
        if src.is_file():
            (val / parts[1]).mkdir(exist_ok=True)
            os.replace(src, val / parts[1] / parts[0])
    shutil.rmtree(val / "images", ignore_errors=True)
    os.replace(ann, folder / "val_annotations.txt")
