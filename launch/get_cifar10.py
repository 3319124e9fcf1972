#!/usr/bin/env python3
"""Download CIFAR-10's binary release, check it, and unpack it where the configs look.

    python3 launch/get_cifar10.py [--dest datasets]

Fetches https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (162 MB), checks its SHA-256
(and the MD5 the CIFAR page publishes), and unpacks the six .bin files and batches.meta.txt into
DEST/cifar-10-batches-bin/, the `data.path` of configs/cifar10/*.yaml. Nothing is left half
done: the archive is downloaded to a temporary file and the folder appears, by a rename, only
once every file is unpacked. Running it again when the folder is complete does nothing.
--url and --sha256/--md5 take a mirror (tests serve a small archive on the loopback address).
Exit status 0 on success, 1 on any failure, with one line saying what failed.
"""
import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # the one https://www.cs.toronto.edu/~kriz/cifar.html lists
FOLDER = "cifar-10-batches-bin"
FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin", "batches.meta.txt"]
RECORD = 1 + 3 * 32 * 32  # one label byte, then the 32x32 image, channel by channel


def complete(folder):
    """Every file there, the .bin files a whole number of non-zero records."""
    for name in FILES:
        path = folder / name
        if not path.is_file():
            return False
        if name.endswith(".bin") and (path.stat().st_size == 0 or path.stat().st_size % RECORD):
            return False
    return True


def download(url, to):
    """Stream `url` into the open file `to`; returns (sha256, md5) of what arrived."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done, shown = 0, -1
        while chunk := response.read(1 << 20):
            to.write(chunk)
            sha.update(chunk)
            md5.update(chunk)
            done += len(chunk)
            if total and (tenth := 10 * done // total) != shown:
                shown = tenth
                print(f"  {done / 1e6:.0f} / {total / 1e6:.0f} MB", flush=True)
    return sha.hexdigest(), md5.hexdigest()


def unpack(archive, dest):
    """The expected members of `archive` into dest/FOLDER, through a temporary folder and a rename."""
    staging = Path(tempfile.mkdtemp(prefix=".cifar-10-", dir=dest))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if len(parts) != 2 or parts[0] != FOLDER or parts[1] not in FILES:
                    continue  # only the release's own files; no path leaves the folder
                if not member.isfile():
                    raise ValueError(f"{member.name} in the archive is not a regular file")
                with tar.extractfile(member) as src, open(staging / parts[1], "wb") as out:
                    shutil.copyfileobj(src, out)
        if not complete(staging):
            missing = [n for n in FILES if not (staging / n).is_file()]
            raise ValueError(f"the archive lacks {', '.join(missing) or 'whole records'} under {FOLDER}/")
        target = dest / FOLDER
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier copy
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", default="datasets", help="where cifar-10-batches-bin/ goes (default: datasets)")
    p.add_argument("--url", default=URL)
    p.add_argument("--sha256", default=SHA256, help="expected SHA-256 of the archive")
    p.add_argument("--md5", default=MD5, help="expected MD5 of the archive ('' to skip)")
    args = p.parse_args()
    dest = Path(args.dest)
    target = dest / FOLDER
    if complete(target):
        print(f"{target} is already there and complete; nothing to do")
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    print(f"downloading {args.url}", flush=True)
    with tempfile.NamedTemporaryFile(prefix=".cifar-10-", suffix=".tar.gz", dir=dest) as archive:
        try:
            sha, md5 = download(args.url, archive)
        except OSError as e:
            sys.exit(f"get_cifar10: cannot download {args.url}: {e}; check the network (or pass --url of a mirror)")
        archive.flush()
        if sha != args.sha256.lower() or (args.md5 and md5 != args.md5.lower()):
            sys.exit(f"get_cifar10: {args.url} has SHA-256 {sha} (MD5 {md5}), not the release's {args.sha256}: "
                     f"the download is damaged or not CIFAR-10's binary release; nothing was unpacked, run again")
        try:
            unpack(archive.name, dest)
        except (OSError, ValueError, tarfile.TarError) as e:
            sys.exit(f"get_cifar10: cannot unpack {args.url}: {e}")
    print(f"CIFAR-10 is in {target} (checksum verified); configs/cifar10/*.yaml read it from there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
